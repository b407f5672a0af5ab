"""Scalar quantizers: ``sq`` (rounding) and ``rdoq`` (each index chosen alone by D + λR).

Both code index ``k`` of latent ``y`` with mean μ under the Gaussian table of the latent's
scale level and reconstruct ``k + μ``; a decoder cannot tell them apart.
"""

from __future__ import annotations

import numpy as np

from qaft.runtime.entropy import coder
from qaft.runtime.errors import QaftError
from qaft.runtime.model_tables import ModelTables
from qaft.runtime.quantizers.base import QuantizerParams
from qaft.runtime.quantizers.trellis import bits_lookup, index_bits


def reconstruct(indices: np.ndarray, means: np.ndarray) -> np.ndarray:
    """The decoder's latent: indices shifted back by the mean (float32)."""
    return (indices.astype(np.float32) + means).astype(np.float32)


def _sections(code: coder.CodedArray) -> list[bytes]:
    return [code.stream, code.escapes_bytes()]


def _decode_sections(sections: list[bytes], levels: np.ndarray, tables: ModelTables):
    if len(sections) != 2 or len(sections[1]) % 4:
        raise coder.DecodeError("malformed y sections")
    return coder.decode(sections[0], np.frombuffer(sections[1], "<i4"), levels, tables.y_tables)


class ScalarQuantizer:
    """Index ``round(y − μ)`` (half to even)."""

    name, id, uses_step = "sq", 0, False

    def indices(
        self,
        y: np.ndarray,
        means: np.ndarray,
        levels: np.ndarray,
        tables: ModelTables,
        params: QuantizerParams,
        weights: np.ndarray | None,
    ) -> np.ndarray:
        return np.rint(y - means).astype(np.int32)

    def quantize(
        self,
        y,
        means,
        levels,
        tables: ModelTables,
        params: QuantizerParams,
        weights: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices, ŷ): what the encoder writes and what the decoder will rebuild."""
        idx = self.indices(y, means, levels, tables, params, weights)
        return idx, reconstruct(idx, means)

    def floor_bits(self, tables: ModelTables, step: float) -> float:
        """Fewest bits any one latent can cost, whatever its level."""
        return float(
            tables.cached("y_min_bits", lambda: coder.min_bits_per_table(tables.y_tables)).min()
        )

    def min_bits(self, levels: np.ndarray, tables: ModelTables, step: float) -> float:
        """Fewest bits a y section can hold the indices of latents of ``levels`` in."""
        bits = tables.cached("y_min_bits", lambda: coder.min_bits_per_table(tables.y_tables))
        return float(coder.level_counts(levels, len(bits)) @ bits)

    def code(self, indices, levels, tables: ModelTables, step: float) -> list[bytes]:
        """The y sections of a file holding ``indices``."""
        return _sections(coder.encode(indices, levels, tables.y_tables))

    def decode(self, sections, means, levels, tables: ModelTables, step: float):
        idx = _decode_sections(sections, levels, tables)
        return idx, reconstruct(idx, means)


class RdoQuantizer(ScalarQuantizer):
    """Each index minimizes w·(y − μ − k)² + λ·bits(k) over k ∈ {⌊y − μ⌋, ⌈y − μ⌉, 0}."""

    name, id = "rdoq", 1

    def indices(
        self,
        y,
        means,
        levels,
        tables: ModelTables,
        params: QuantizerParams,
        weights: np.ndarray | None,
    ):
        if params.lmbda < 0:
            raise QaftError("rdoq needs a non-negative λ")
        r = (y - means).astype(np.float64)
        k = np.stack([np.floor(r), np.floor(r) + 1, np.zeros_like(r)]).astype(np.int64)
        bits = tables.cached("y_bits", lambda: bits_lookup(tables.y_tables))
        w = 1.0 if weights is None else np.broadcast_to(weights, r.shape)
        cost = w * (r - k) ** 2 + params.lmbda * index_bits(k, levels, tables.y_tables, bits)
        best = np.argmin(cost, axis=0)
        return np.take_along_axis(k, best[None], 0)[0].astype(np.int32)
