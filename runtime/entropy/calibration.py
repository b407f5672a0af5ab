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

Tables stored with a model come from libm's ``erfc`` and ``exp`` (at export, once); tables a
decoder derives use :mod:`~qaft.runtime.entropy.exact_math` (``exact=True``), whose bits do not
depend on the machine's libm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qaft.runtime.entropy import exact_math
from qaft.runtime.errors import FormatError

#: Scale factors and Laplace weights searched per level (a grid: the fit is a few hundred
#: likelihood evaluations on histograms, no optimizer, no randomness).
SCALE_GRID = np.exp(np.linspace(math.log(0.4), math.log(2.0), 41))
WEIGHT_GRID = np.linspace(0.0, 1.0, 11)
#: Scale factors a stored model may carry (wider than the fit's grid; a crafted file beyond
#: them is refused rather than given degenerate tables).
SCALE_LIMITS = (0.1, 10.0)
#: Levels with fewer training indices than this borrow the nearest well-observed level's fit.
MIN_COUNT = 200


def _libm(fn):
    """``fn`` of ``math`` (looked up at each call) on every element of a float64 array."""

    def apply(x: np.ndarray) -> np.ndarray:
        return np.frompyfunc(getattr(math, fn), 1, 1)(x).astype(np.float64)

    return apply


_LIBM = (_libm("erfc"), _libm("exp"))
_EXACT = (exact_math.erfc, exact_math.exp)


@dataclass(frozen=True)
class Calibration:
    """Per-level density parameters: ``scale[l]`` (a) and ``laplace[l]`` (w)."""

    scale: np.ndarray  # (L,) float64
    laplace: np.ndarray  # (L,) float64

    def __post_init__(self) -> None:
        if self.scale.shape != self.laplace.shape or self.scale.ndim != 1:
            raise FormatError("calibration: scale and laplace must be two (L,) arrays")
        lo, hi = SCALE_LIMITS
        if not (
            np.all((self.scale >= lo) & (self.scale <= hi))
            and np.all((self.laplace >= 0) & (self.laplace <= 1))
        ):
            raise FormatError(
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
            raise FormatError(f"calibration: expected an (L, 2) array, got {a.shape}")
        return cls(a[:, 0].copy(), a[:, 1].copy())


def level_cdf(
    x: np.ndarray, scale: float, a: float = 1.0, w: float = 0.0, exact: bool = False
) -> np.ndarray:
    """CDF at ``x`` of the residual density of a level of nominal ``scale`` (float64; ±inf
    allowed).  With ``a = 1, w = 0`` exactly the standard Gaussian CDF of ``x / scale``.

    ``exact``: ``erfc`` and ``exp`` of :mod:`~qaft.runtime.entropy.exact_math` (the same bits
    on every machine) instead of libm's; the arithmetic around them is the same."""
    erfc, exp = _EXACT if exact else _LIBM
    x = np.asarray(x, dtype=np.float64)
    g = erfc(-x / (a * scale) / exact_math.SQRT2) / 2.0
    if w == 0.0:
        return g
    b = a * scale / exact_math.SQRT2
    tail = 0.5 * exp(-np.abs(x) / b)
    lap = np.where(x < 0, tail, 1.0 - tail)
    return (1.0 - w) * g + w * lap


def _bin_bits(counts: np.ndarray, k: np.ndarray, scale: float, a: float, w: float) -> float:
    p = level_cdf(k + 0.5, scale, a, w) - level_cdf(k - 0.5, scale, a, w)
    return float(-(counts * np.log2(np.maximum(p, 2.0**-30))).sum())


def fit(histograms: list[dict[int, int]], scale_table: np.ndarray) -> Calibration:
    """Maximum-likelihood (a, w) per level from unit-bin index counts.

    ``histograms[l]`` maps index ``round(y − μ)`` to how often it occurred at level ``l``.
    Levels seen fewer than :data:`MIN_COUNT` times take the parameters of the nearest level
    that was seen enough (or the identity if none was)."""
    n = len(scale_table)
    if len(histograms) != n:
        raise FormatError("one histogram per scale level expected")
    scale, laplace = np.ones(n), np.zeros(n)
    fitted = []
    for lev, hist in enumerate(histograms):
        total = sum(hist.values())
        if total < MIN_COUNT:
            continue
        k = np.fromiter(hist.keys(), dtype=np.float64)
        c = np.fromiter(hist.values(), dtype=np.float64)
        _, a, w = min(
            (_bin_bits(c, k, float(scale_table[lev]), a, w), a, w)
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


def accumulate(
    histograms: list[dict[int, int]], indices: np.ndarray, scale_ids: np.ndarray
) -> None:
    """Adds the unit-bin indices ``round(y − μ)`` of one image, grouped by scale id."""
    k = np.asarray(indices, dtype=np.int64).reshape(-1)
    lev = np.asarray(scale_ids, dtype=np.int64).reshape(-1)
    pairs, counts = np.unique(np.stack([lev, k]), axis=1, return_counts=True)
    for (lv, kv), c in zip(pairs.T.tolist(), counts.tolist(), strict=True):
        histograms[lv][kv] = histograms[lv].get(kv, 0) + c


def histogram_bits(
    histograms: list[dict[int, int]], scale_table: np.ndarray, calibration: Calibration
) -> float:
    """Code length in bits of the counted unit-bin indices under ``calibration`` (ideal
    code lengths; indices beyond a table's reach are not charged their escape)."""
    total = 0.0
    for lev, hist in enumerate(histograms):
        if hist:
            k = np.fromiter(hist.keys(), dtype=np.float64)
            c = np.fromiter(hist.values(), dtype=np.float64)
            a, w = float(calibration.scale[lev]), float(calibration.laplace[lev])
            total += _bin_bits(c, k, float(scale_table[lev]), a, w)
    return total
