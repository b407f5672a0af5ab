"""Quantizers: how the latent ``y`` becomes integer indices, and how they are coded.

Each quantizer has a one-byte id written into the container, so the decoder needs nothing
but the file: ``sq`` (rounding), ``rdoq`` (entropy-constrained rounding, decoded like
``sq``), ``tcq`` and ``tcq8`` (trellis-coded quantization with 4 and 8 states).
"""

from __future__ import annotations

from qaft.runtime.quantizers.base import LatentQuantizer, QuantizerParams
from qaft.runtime.quantizers.scalar import RdoQuantizer, ScalarQuantizer
from qaft.runtime.quantizers.tcq import TrellisQuantizer
from qaft.runtime.quantizers.trellis import VVC4, VVC8

QUANTIZERS: dict[str, LatentQuantizer] = {
    q.name: q
    for q in (ScalarQuantizer(), RdoQuantizer(), TrellisQuantizer(VVC4), TrellisQuantizer(VVC8))
}
QUANTIZER_IDS = {name: q.id for name, q in QUANTIZERS.items()}
QUANTIZER_NAMES = {q.id: name for name, q in QUANTIZERS.items()}

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
    "QuantizerParams",
    "quantizer_for",
]
