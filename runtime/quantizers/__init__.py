"""Quantizers: how the latent ``y`` becomes integer indices, and how they are coded.

:data:`QUANTIZERS` is the one list of them; everything else (container ids, CLI choices,
fallback settings, tuning grids) is read from its objects.  Each has a one-byte id written
into the container, so the decoder needs nothing but the file: ``sq`` (rounding), ``rdoq``
(entropy-constrained rounding, decoded like ``sq``), ``tcq`` and ``tcq8`` (trellis-coded
quantization with 4 and 8 states).
"""

from __future__ import annotations

from qaft.runtime.errors import ConfigError
from qaft.runtime.quantizers.base import LatentQuantizer, Prior, QuantizerParams
from qaft.runtime.quantizers.scalar import RdoQuantizer, ScalarQuantizer
from qaft.runtime.quantizers.tcq import TrellisQuantizer
from qaft.runtime.quantizers.trellis import VVC4, VVC8


def _registry(*quantizers: LatentQuantizer) -> dict[str, LatentQuantizer]:
    """Name -> quantizer, refusing a repeated name or id (a file names its quantizer by id)."""
    out = {q.name: q for q in quantizers}
    if len(out) != len(quantizers) or len({q.id for q in quantizers}) != len(quantizers):
        raise ConfigError("quantizer names and ids must be unique")
    return out


#: Every quantizer, in the order the CLI offers them; ids are part of the format.
QUANTIZERS: dict[str, LatentQuantizer] = _registry(
    ScalarQuantizer(),
    RdoQuantizer(),
    TrellisQuantizer(VVC4, id=2),
    TrellisQuantizer(VVC8, id=3),
)
QUANTIZER_IDS = {name: q.id for name, q in QUANTIZERS.items()}
QUANTIZER_NAMES = {q.id: name for name, q in QUANTIZERS.items()}

#: How version-2 trellis files are read: with the libm tables they were written with.
_LIBM_TRELLIS = {
    q.id: TrellisQuantizer(q.machine, q.id, exact=False)
    for q in QUANTIZERS.values()
    if isinstance(q, TrellisQuantizer)
}


def quantizer_for_file(quantizer_id: int, version: int) -> LatentQuantizer:
    """The quantizer that decodes a file of container ``version`` naming ``quantizer_id``
    (a known id): the registry's, except for version-2 trellis files (libm tables)."""
    quant = QUANTIZERS[QUANTIZER_NAMES[quantizer_id]]
    if version < quant.format_version:
        return _LIBM_TRELLIS[quantizer_id]
    return quant


#: Without a model's own preference (a stage-1 model), files are coded with this one.
DEFAULT_QUANTIZER = "sq"


def quantizer_for(
    model: str, finetuned_for: str | None, asked: str | None
) -> tuple[str, str | None]:
    """(quantizer to code with, warning or None) for ``model``: what was ``asked``, else
    the quantizer a stage-2 model was finetuned for (its decoder expects those latents),
    else :data:`DEFAULT_QUANTIZER`.  Asking for another than the finetuned one is allowed,
    with a warning: it costs that model's gain."""
    if asked is None:
        return finetuned_for or DEFAULT_QUANTIZER, None
    if finetuned_for and asked != finetuned_for:
        return asked, (
            f"warning: {model} was finetuned for {finetuned_for}; coding with {asked} as asked "
            "loses its gain"
        )
    return asked, None


__all__ = [
    "DEFAULT_QUANTIZER",
    "QUANTIZERS",
    "QUANTIZER_IDS",
    "QUANTIZER_NAMES",
    "LatentQuantizer",
    "Prior",
    "QuantizerParams",
    "quantizer_for",
    "quantizer_for_file",
]
