"""``exp`` and ``erfc`` that give the same bits on every machine.

libm's ``exp`` and ``erfc`` are not correctly rounded: another C library (or NumPy's own
SIMD loops) may return a different last bit, and a probability table built from them may
then quantize to other integer frequencies in the entropy coder, which decodes garbage.
The tables a decoder derives (the trellis quantizers', for the step in a file's header)
are therefore built with these two functions instead.  They use only IEEE-754 operations
that are correctly rounded (``+ − × ÷``, comparisons, ``rint``, ``abs``, selection, and
integer bit manipulation to form powers of two), applied element by element in a fixed
order: on any machine with IEEE-754 double arithmetic in its default rounding mode (and
without a flush-to-zero mode) they return the same bits.  No reduction (whose summation
order a library may choose) is used.

Accuracy (``tests/test_exact_tables.py`` checks against mpmath): ``exp`` within a few
units in the last place, ``erfc`` within about 1e-13 relative wherever its value is a
normal number.  Coefficients are exact rationals rounded once to float64 by Python's
correctly rounded integer division.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

#: √2, 1/√π and 2/√π, each the float64 nearest to the real number (checked by the tests).
SQRT2 = 1.4142135623730951
INV_SQRT_PI = 0.5641895835477563
TWO_OVER_SQRT_PI = 1.1283791670955126
#: ln 2 split so that ``n * LN2_HI`` is exact for every |n| < 2^20 (its low bits are zero),
#: and 1/ln 2 (any float64 near it works: it only picks the reduction's integer).
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
INV_LN2 = 1.4426950408889634

#: Below this exp returns 0 (e^-700 ≈ 1e-304: results stay normal numbers, no denormals).
EXP_MIN = -700.0
#: Beyond this erfc is 0 (and erfc(−x) is 2): erfc(26) ≈ 6e-296.
ERFC_ZERO = 26.0
#: |x| below which erfc is 1 − erf(x) from erf's Maclaurin series; above, a continued
#: fraction (:data:`CF_TERMS` terms reach 1e-17 relative at this boundary).
SERIES_LIMIT = 1.5
CF_TERMS = 100

# Taylor coefficients of e^r (|r| <= ln2/2: the 14th term is below 1e-17)
_EXP_COEFFS = tuple(float(Fraction(1, math.factorial(n))) for n in range(14))
# erf(x) = 2/√π · x · Σ (−1)^n x^2n / (n! (2n + 1)); at |x| < 1.5 the 40th term is < 1e-30
_ERF_COEFFS = tuple(float(Fraction((-1) ** n, math.factorial(n) * (2 * n + 1))) for n in range(40))
# Veltkamp's splitting constant 2^27 + 1: x·C − (x·C − x) keeps the high 26 bits of x
_SPLIT = 134217729.0


def _horner(x: np.ndarray, coeffs: tuple[float, ...]) -> np.ndarray:
    """Σ coeffs[n] · x^n, highest power first (one multiplication, one addition a step)."""
    acc = np.full_like(x, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = acc * x + c
    return acc


def _pow2(n: np.ndarray) -> np.ndarray:
    """2^n for integers −1022 <= n <= 1023, built from the bits (exact)."""
    return ((n.astype(np.int64) + 1023) << 52).view(np.float64)


def exp(t: np.ndarray) -> np.ndarray:
    """e^t (float64) for t <= 700; 0 below :data:`EXP_MIN`.

    t = n·ln2 + r with |r| <= ln2/2 (Cody and Waite's two-part ln2 keeps r accurate), e^r
    from its Taylor polynomial, times 2^n exactly."""
    t = np.asarray(t, dtype=np.float64)
    low = ~(t >= EXP_MIN)  # -inf included
    tc = np.where(low, 0.0, t)
    n = np.rint(tc * INV_LN2)
    r = (tc - n * LN2_HI) - n * LN2_LO
    out = _horner(r, _EXP_COEFFS) * _pow2(n)
    return np.where(low, 0.0, out)


def _exp_neg_square(x: np.ndarray) -> np.ndarray:
    """e^(−x²) for 0 <= x: x² = h² + l·(x + h) with h the high half of x, so that the large
    part h² is exact and the rounding of x² does not reach the result."""
    c = x * _SPLIT
    h = c - (c - x)
    lo = x - h
    return exp(-(h * h)) * exp(-(lo * (x + h)))


def erfc(x: np.ndarray) -> np.ndarray:
    """The complementary error function (float64); ±inf give 0 and 2.

    |x| < :data:`SERIES_LIMIT`: 1 − erf(x), erf from its Maclaurin series.  Otherwise
    erfc(|x|) = e^(−x²)/√π · 1/(|x| + (1/2)/(|x| + 1/(|x| + (3/2)/(|x| + …)))) (Laplace's
    continued fraction, :data:`CF_TERMS` terms evaluated from the innermost), and
    erfc(x) = 2 − erfc(|x|) for negative x."""
    x = np.clip(np.asarray(x, dtype=np.float64), -ERFC_ZERO, ERFC_ZERO)
    ax = np.abs(x)
    small = ax < SERIES_LIMIT
    xs = np.where(small, x, 0.0)
    near = 1.0 - TWO_OVER_SQRT_PI * xs * _horner(xs * xs, _ERF_COEFFS)
    xl = np.where(small, SERIES_LIMIT, ax)
    frac = xl
    for k in range(CF_TERMS, 0, -1):
        frac = xl + (k * 0.5) / frac
    tail = _exp_neg_square(xl) * INV_SQRT_PI / frac
    tail = np.where(xl >= ERFC_ZERO, 0.0, tail)
    far = np.where(x < 0, 2.0 - tail, tail)
    return np.where(small, near, far)
