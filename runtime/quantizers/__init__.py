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

__all__ = ["QUANTIZERS", "QUANTIZER_IDS", "QUANTIZER_NAMES", "LatentQuantizer", "QuantizerParams"]
