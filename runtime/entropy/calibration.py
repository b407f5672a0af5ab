"""Calibrated residual densities: what the latent's residual ``y − μ`` really looks like at
each scale level, fitted after training on the indices of real images.

The hyperprior predicts a Gaussian whose scale is rounded up to one of the fixed levels, and
training only ever saw it through a stand-in for quantization.  On the latents of real
images the residuals of a level are narrower than its nominal scale and heavier-tailed than
a Gaussian.  A per-level mixture

    (1 − w) · N(0, (a·s)²) + w · Laplace(0, a·s/√2)

(same variance for both parts, ``s`` the level's scale) fitted by maximum likelihood on the
unit-bin index counts of training images closes most of that gap.  It is a density, not a
table: the scalar quantizers integrate it over unit bins and the trellis quantizers over
their own decision intervals, at any step.  ``a = 1, w = 0`` is the plain Gaussian, bit for
bit.

Only NumPy and ``math`` (libm) are used, so both sides of a channel compute identical tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Scale factors and Laplace weights searched per level (a grid: the fit is a few hundred
#: likelihood evaluations on histograms, no optimizer, no randomness).
SCALE_GRID = np.exp(np.linspace(math.log(0.4), math.log(2.0), 41))
WEIGHT_GRID = np.linspace(0.0, 1.0, 11)
#: Scale factors a stored model may carry (wider than the fit's grid; a crafted file beyond
#: them is refused rather than given degenerate tables).
SCALE_LIMITS = (0.1, 10.0)
#: Levels with fewer training indices than this borrow the nearest well-observed level's fit.
MIN_COUNT = 200

_erfc = np.frompyfunc(math.erfc, 1, 1)
_exp = np.frompyfunc(math.exp, 1, 1)


@dataclass(frozen=True)
class Calibration:
    """Per-level density parameters: ``scale[l]`` (a) and ``laplace[l]`` (w)."""

    scale: np.ndarray  # (L,) float64
    laplace: np.ndarray  # (L,) float64

    def __post_init__(self) -> None:
        if self.scale.shape != self.laplace.shape or self.scale.ndim != 1:
            raise ValueError("calibration: scale and laplace must be two (L,) arrays")
        lo, hi = SCALE_LIMITS
        if not (
            np.all((self.scale >= lo) & (self.scale <= hi))
            and np.all((self.laplace >= 0) & (self.laplace <= 1))
        ):
            raise ValueError(
                f"calibration: scale factors must lie in [{lo}, {hi}] and weights in [0, 1]"
            )

    @classmethod
    def identity(cls, num_levels: int) -> Calibration:
        """The uncalibrated model: a Gaussian of each level's nominal scale."""
        return cls(np.ones(num_levels), np.zeros(num_levels))

    def is_identity(self) -> bool:
        return bool(np.all(self.scale == 1.0) and np.all(self.laplace == 0.0))

    def to_array(self) -> np.ndarray:
        """(L, 2) float64: the form stored with a model."""
        return np.stack([self.scale, self.laplace], axis=1).astype(np.float64)

    @classmethod
    def from_array(cls, a: np.ndarray) -> Calibration:
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != 2:
            raise ValueError(f"calibration: expected an (L, 2) array, got {a.shape}")
        return cls(a[:, 0].copy(), a[:, 1].copy())


def level_cdf(x: np.ndarray, scale: float, a: float = 1.0, w: float = 0.0) -> np.ndarray:
    """CDF at ``x`` of the residual density of a level of nominal ``scale`` (float64; ±inf
    allowed).  With ``a = 1, w = 0`` exactly the standard Gaussian CDF of ``x / scale``."""
    x = np.asarray(x, dtype=np.float64)
    g = _erfc(-x / (a * scale) / math.sqrt(2.0)).astype(np.float64) / 2.0
    if w == 0.0:
        return g
    b = a * scale / math.sqrt(2.0)
    tail = 0.5 * _exp(-np.abs(x) / b).astype(np.float64)
    lap = np.where(x < 0, tail, 1.0 - tail)
    return (1.0 - w) * g + w * lap


def _bin_bits(counts: np.ndarray, k: np.ndarray, scale: float, a: float, w: float) -> float:
    p = level_cdf(k + 0.5, scale, a, w) - level_cdf(k - 0.5, scale, a, w)
    return float(-(counts * np.log2(np.maximum(p, 2.0**-30))).sum())


def fit(histograms: list[dict[int, int]], levels: np.ndarray) -> Calibration:
    """Maximum-likelihood (a, w) per level from unit-bin index counts.

    ``histograms[l]`` maps index ``round(y − μ)`` to how often it occurred at level ``l``.
    Levels seen fewer than :data:`MIN_COUNT` times take the parameters of the nearest level
    that was seen enough (or the identity if none was)."""
    n = len(levels)
    if len(histograms) != n:
        raise ValueError("one histogram per scale level expected")
    scale, laplace = np.ones(n), np.zeros(n)
    fitted = []
    for lev, hist in enumerate(histograms):
        total = sum(hist.values())
        if total < MIN_COUNT:
            continue
        k = np.fromiter(hist.keys(), dtype=np.float64)
        c = np.fromiter(hist.values(), dtype=np.float64)
        _, a, w = min(
            (_bin_bits(c, k, float(levels[lev]), a, w), a, w)
            for a in SCALE_GRID
            for w in WEIGHT_GRID
        )
        scale[lev], laplace[lev] = a, w
        fitted.append(lev)
    if fitted:
        for lev in range(n):
            if lev not in fitted:
                near = min(fitted, key=lambda f: (abs(f - lev), f))
                scale[lev], laplace[lev] = scale[near], laplace[near]
    return Calibration(scale, laplace)


def accumulate(histograms: list[dict[int, int]], indices: np.ndarray, levels: np.ndarray) -> None:
    """Adds the unit-bin indices ``round(y − μ)`` of one image, grouped by level."""
    k = np.asarray(indices, dtype=np.int64).reshape(-1)
    lev = np.asarray(levels, dtype=np.int64).reshape(-1)
    pairs, counts = np.unique(np.stack([lev, k]), axis=1, return_counts=True)
    for (lv, kv), c in zip(pairs.T.tolist(), counts.tolist(), strict=True):
        histograms[lv][kv] = histograms[lv].get(kv, 0) + c


def histogram_bits(
    histograms: list[dict[int, int]], levels: np.ndarray, calibration: Calibration
) -> float:
    """Code length in bits of the counted unit-bin indices under ``calibration`` (ideal
    code lengths; indices beyond a table's reach are not charged their escape)."""
    total = 0.0
    for lev, hist in enumerate(histograms):
        if hist:
            k = np.fromiter(hist.keys(), dtype=np.float64)
            c = np.fromiter(hist.values(), dtype=np.float64)
            a, w = float(calibration.scale[lev]), float(calibration.laplace[lev])
            total += _bin_bits(c, k, float(levels[lev]), a, w)
    return total
