"""A factorized prior's densities as the trellis quantizers need them.

Scalar rounding codes a factorized prior's y with its stored per-channel tables (unit bins
around the median).  The trellis quantizers integrate the density over other intervals,
which depend on their step Δ: they need the CDF at arbitrary points.  The learned CDF is a
small float network whose last bits differ between machines (``docs/exact.md``), so the model
stores it sampled on a fine grid, and the CDF between samples is their linear interpolation,
computed with IEEE additions, multiplications and divisions only: the same bits everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qaft.runtime.errors import FormatError

#: Samples per unit of y: the trellis intervals are about half a unit and wider.
SAMPLES_PER_UNIT = 16
#: Most samples a model may store (channels x grid points).
MAX_SAMPLES = 1 << 22
#: Farthest a grid may reach from the median, in units of y: the trellis tables grow with it
#: (over the step), and a learned density of y spans a few tens of units at most.
MAX_REACH = 256.0


@dataclass(frozen=True)
class ChannelCdf:
    """Channel c's CDF of ``y − median_c`` at ``lower + j · step``, j = 0 … G−1."""

    lower: float
    step: float
    cdf: np.ndarray  # (M, G) float64, non-decreasing along each row, within [0, 1]

    def __post_init__(self) -> None:
        c = self.cdf
        if not (
            c.ndim == 2
            and c.shape[0] >= 1
            and c.shape[1] >= 2
            and c.size <= MAX_SAMPLES
            and math.isfinite(self.lower)
            and math.isfinite(self.step)
            and self.step > 0
            and -MAX_REACH <= self.lower < 0
            and self.lower + self.step * (c.shape[1] - 1) <= MAX_REACH
            and np.all(np.isfinite(c))
            and np.all((c >= 0) & (c <= 1))
            and np.all(np.diff(c, axis=1) >= 0)
        ):
            raise FormatError(
                "channel CDFs must be non-decreasing samples in [0, 1] on a grid around the "
                f"median reaching at most {MAX_REACH:g}"
            )

    @property
    def channels(self) -> int:
        return int(self.cdf.shape[0])

    @property
    def reach(self) -> float:
        """How far from the median the samples go, on either side."""
        return max(-self.lower, self.lower + self.step * (self.cdf.shape[1] - 1))

    def at(self, channel: int, x: np.ndarray) -> np.ndarray:
        """The CDF of ``channel`` at ``x`` (float64, ±inf allowed: 0 and 1): interpolated
        between samples, the end samples beyond them."""
        x = np.asarray(x, np.float64)
        row = self.cdf[channel]
        t = np.clip((x - self.lower) / self.step, 0.0, row.size - 1.0)
        t = np.where(np.isfinite(t), t, 0.0)
        j = np.minimum(np.floor(t).astype(np.int64), row.size - 2)
        out = row[j] + (row[j + 1] - row[j]) * (t - j)
        out = np.where(x == -np.inf, 0.0, out)
        return np.where(x == np.inf, 1.0, out)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "y_channel_cdf": self.cdf,
            "y_channel_cdf_grid": np.array([self.lower, self.step], np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays) -> ChannelCdf:
        grid = np.asarray(arrays["y_channel_cdf_grid"], np.float64)
        if grid.shape != (2,):
            raise FormatError("channel CDF grid must be [lower, step]")
        return cls(float(grid[0]), float(grid[1]), np.asarray(arrays["y_channel_cdf"], np.float64))
