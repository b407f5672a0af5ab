"""Probability tables shared by the encoder and the decoder.

A :class:`TableSet` is a list of discrete distributions over consecutive integers plus one
escape symbol each.  They are computed once (when a model is finalized) and stored with the
model, so that both sides of a channel use bit-identical probabilities: nothing here is
re-derived from floating-point network outputs at decode time except the *choice* of table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qaft.runtime.entropy.calibration import Calibration, level_cdf
from qaft.runtime.errors import FormatError

#: The scale table of the Gaussian conditional, as in CompressAI (64 scales, 0.11 … 256):
#: each latent's predicted scale is rounded up to one of them, its scale id.
SCALE_BOUND = 0.11
SCALE_TABLE = np.exp(np.linspace(math.log(SCALE_BOUND), math.log(256.0), 64))

#: Tables cover ±TAIL_SIGMAS·scale; beyond that an index is escaped (tail mass ~1e-9).
TAIL_SIGMAS = 6.1
# (powers of two built without ``**``, which calls the C library's pow on floats)
ESCAPE_MIN_PROB = 1.0 / (1 << 20)


@dataclass(frozen=True)
class TableSet:
    """Discrete distributions, one row each, for integer values ``offsets[t] + s``.

    Row ``t`` has ``lengths[t]`` valid entries; the last valid entry is the escape symbol,
    used for values outside ``[offsets[t], offsets[t] + lengths[t] - 2]``.
    """

    pmfs: np.ndarray  # (T, L) float64
    lengths: np.ndarray  # (T,) int32, escape included
    offsets: np.ndarray  # (T,) int32

    def __post_init__(self) -> None:
        # Stored tables come from model folders: shapes and values are checked here, once,
        # so that the coder never indexes past a row or codes with a NaN probability.
        if not (
            self.pmfs.ndim == 2
            and self.lengths.ndim == 1
            and self.offsets.ndim == 1
            and len(self.lengths) == len(self.pmfs) == len(self.offsets)
        ):
            raise FormatError("inconsistent table shapes")
        if len(self.pmfs) and not (
            np.all((self.lengths >= 1) & (self.lengths <= self.pmfs.shape[1]))
            and np.all(np.isfinite(self.pmfs))
            and np.all(self.pmfs >= 0)
        ):
            raise FormatError("table lengths outside their rows, or probabilities not finite >= 0")
        valid = np.arange(self.pmfs.shape[1]) < self.lengths[:, None]
        sums = np.where(valid, self.pmfs, 0.0).sum(axis=1)
        # every row is a distribution (escape included) over at least one value and escape
        if len(self.pmfs) and not (np.all(self.lengths >= 2) and np.all(np.abs(sums - 1) < 1e-2)):
            raise FormatError(
                "a table is not a probability distribution (its row does not sum to 1)"
            )

    @property
    def num_tables(self) -> int:
        return int(self.pmfs.shape[0])

    def row(self, t: int) -> np.ndarray:
        """The probabilities of table ``t`` (escape last)."""
        return self.pmfs[t, : self.lengths[t]]

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays for storage in an ``.npz`` or a checkpoint, keys prefixed."""
        return {
            f"{prefix}pmfs": self.pmfs,
            f"{prefix}lengths": self.lengths,
            f"{prefix}offsets": self.offsets,
        }

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> TableSet:
        return cls(
            np.asarray(arrays[f"{prefix}pmfs"], dtype=np.float64),
            np.asarray(arrays[f"{prefix}lengths"], dtype=np.int32),
            np.asarray(arrays[f"{prefix}offsets"], dtype=np.int32),
        )

    @classmethod
    def from_rows(cls, rows: list[np.ndarray], offsets: list[int], exact: bool = False) -> TableSet:
        """Builds a set from per-table probabilities over the in-range values.

        The escape probability of each row is what the row leaves below one, floored at
        ``ESCAPE_MIN_PROB`` so that a rare outlier costs bits, never correctness.  With
        ``exact`` the row's sum is ``math.fsum`` (correctly rounded, so independent of the
        order a NumPy version sums in) rather than ``np.sum``.
        """
        width = max(len(r) for r in rows) + 1
        pmfs = np.zeros((len(rows), width), dtype=np.float64)
        lengths = np.zeros(len(rows), dtype=np.int32)
        for t, r in enumerate(rows):
            r = np.clip(np.asarray(r, dtype=np.float64), 0.0, None)
            pmfs[t, : len(r)] = r
            total = math.fsum(r.tolist()) if exact else r.sum()
            pmfs[t, len(r)] = max(1.0 - total, ESCAPE_MIN_PROB)
            lengths[t] = len(r) + 1
        return cls(pmfs, lengths, np.asarray(offsets, dtype=np.int32))


def tail_reach(scale: float, a: float = 1.0, w: float = 0.0) -> float:
    """How far from zero a level's table reaches: :data:`TAIL_SIGMAS` nominal scales, wider
    for a calibrated density with a wider or heavier-tailed shape (at most twice)."""
    return TAIL_SIGMAS * scale * min(a * (1.0 + w), 2.0)


def gaussian_tables(
    scale_table: np.ndarray = SCALE_TABLE, calibration: Calibration | None = None
) -> TableSet:
    """Tables for the residual density of each scale of ``scale_table`` integrated over unit
    bins: a zero-mean Gaussian of that scale, or its calibrated density."""
    cal = calibration or Calibration.identity(len(scale_table))
    rows, offsets = [], []
    for s, a, w in zip(scale_table, cal.scale, cal.laplace, strict=True):
        r = int(math.ceil(tail_reach(s, a, w)))
        k = np.arange(-r, r + 1, dtype=np.float64)
        rows.append(level_cdf(k + 0.5, s, a, w) - level_cdf(k - 0.5, s, a, w))
        offsets.append(-r)
    return TableSet.from_rows(rows, offsets)


def scale_to_id(scales: np.ndarray, scale_table: np.ndarray = SCALE_TABLE) -> np.ndarray:
    """Scale id of each scale: the index of the smallest entry of ``scale_table`` >= it (the
    last one for anything larger), int32."""
    return np.searchsorted(scale_table[:-1], scales, side="left").astype(np.int32)
