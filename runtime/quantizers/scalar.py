"""Scalar quantizers: ``sq`` (rounding) and ``rdoq`` (each index chosen alone by D + λR).

Both code index ``k`` of latent ``y`` with mean μ under the Gaussian table of the latent's
scale id and reconstruct ``k + μ``; a decoder cannot tell them apart.
"""

from __future__ import annotations

import numpy as np

from qaft.runtime.entropy import coder
from qaft.runtime.errors import QaftError
from qaft.runtime.model_tables import ModelTables
from qaft.runtime.quantizers.base import Prior, QuantizerParams, TuningGrid
from qaft.runtime.quantizers.trellis import bits_lookup, index_bits


def reconstruct(indices: np.ndarray, means: np.ndarray) -> np.ndarray:
    """The decoder's latent: indices shifted back by the mean (float32)."""
    return (indices.astype(np.float32) + means).astype(np.float32)


def _sections(code: coder.CodedArray) -> list[bytes]:
    return [code.stream, code.escapes_bytes()]


def _decode_sections(sections: list[bytes], prior: Prior):
    if len(sections) != 2 or len(sections[1]) % 4:
        raise coder.DecodeError("malformed y sections")
    return coder.decode(
        sections[0], np.frombuffer(sections[1], "<i4"), prior.scale_ids, prior.tables.y_tables
    )


class ScalarQuantizer:
    """Index ``round(y − μ)`` (half to even)."""

    name, id, uses_delta = "sq", 0, False
    # Its tables are stored with the model: versions 2 and 3 decode alike, and 2 keeps its
    # files readable by decoders from before version 3.
    format_version = 2
    fallback = QuantizerParams(1.0, 0.0)
    grid = TuningGrid((1.0,), (0.0,))

    def indices(self, y: np.ndarray, prior: Prior, params: QuantizerParams) -> np.ndarray:
        return np.rint(y - prior.means).astype(np.int32)

    def quantize(
        self, y: np.ndarray, prior: Prior, params: QuantizerParams
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices, ŷ): what the encoder writes and what the decoder will rebuild."""
        idx = self.indices(y, prior, params)
        return idx, reconstruct(idx, prior.means)

    def floor_bits(self, tables: ModelTables, delta: float) -> float:
        """Fewest bits any one latent can cost, whatever its scale id."""
        return float(
            tables.cached("y_min_bits", lambda: coder.min_bits_per_table(tables.y_tables)).min()
        )

    def min_bits(self, prior: Prior, delta: float) -> float:
        """Fewest bits a y section can hold the indices of latents of ``prior`` in."""
        tables = prior.tables
        bits = tables.cached("y_min_bits", lambda: coder.min_bits_per_table(tables.y_tables))
        return float(coder.scale_id_counts(prior.scale_ids, len(bits)) @ bits)

    def code(self, indices: np.ndarray, prior: Prior, delta: float) -> list[bytes]:
        """The y sections of a file holding ``indices``."""
        return _sections(coder.encode(indices, prior.scale_ids, prior.tables.y_tables))

    def decode(
        self, sections: list[bytes], prior: Prior, delta: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices, ŷ) from the file's y sections."""
        idx = _decode_sections(sections, prior)
        return idx, reconstruct(idx, prior.means)

    def offsets(self, indices: np.ndarray, delta: float) -> np.ndarray:
        """ŷ − μ of each index: the index itself."""
        return indices.astype(np.float64)

    def decision_intervals(
        self, indices: np.ndarray, delta: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Unit bins around each index: the intervals the tables integrate over."""
        k = indices.astype(np.float64)
        return k - 0.5, k + 0.5


class RdoQuantizer(ScalarQuantizer):
    """Each index minimizes w·(y − μ − k)² + λ·bits(k) over k ∈ {⌊y − μ⌋, ⌈y − μ⌉, 0}."""

    name, id = "rdoq", 1
    fallback = QuantizerParams(1.0, 0.05)
    # With distortion weights in bits per unit squared error, λ = 1 is the model's own
    # trade-off; the grid looks around it because the synthesis is only locally linear.
    grid = TuningGrid((1.0,), (0.0, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0))

    def indices(self, y: np.ndarray, prior: Prior, params: QuantizerParams) -> np.ndarray:
        if params.rdo_lambda < 0:
            raise QaftError("rdoq needs a non-negative λ")
        tables = prior.tables
        r = (y - prior.means).astype(np.float64)
        k = np.stack([np.floor(r), np.floor(r) + 1, np.zeros_like(r)]).astype(np.int64)
        bits = tables.cached("y_bits", lambda: bits_lookup(tables.y_tables))
        w = 1.0 if prior.weights is None else np.broadcast_to(prior.weights, r.shape)
        rate = index_bits(k, prior.scale_ids, tables.y_tables, bits)
        cost = w * (r - k) ** 2 + params.rdo_lambda * rate
        best = np.argmin(cost, axis=0)
        return np.take_along_axis(k, best[None], 0)[0].astype(np.int32)
