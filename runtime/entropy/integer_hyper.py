"""Exact entropy parameters: the hyper-synthesis ``h_s`` in integer arithmetic.

The scale of each latent selects its probability table, so encoder and decoder must compute
it bit for bit alike; a float network run by another backend, precision, thread count or
machine does not (the determinism hazard: ``docs/exact.md``).  Here ``h_s`` runs on integers:

* weights are rounded per output channel to ``w_int = rint(w * 2**e_c)`` with
  ``|w_int| <= 2**15 - 1`` (int16), biases to ``rint(b * 2**(e_c + A))``;
* activations are integers ``a = real * 2**A`` (``A = ACT_BITS``), clipped to ``±2**28``;
* each layer accumulates ``sum(w_int * a) + b_int`` and rescales by ``floor(acc * 2**-e_c)``
  (a power of two: exact); leaky ReLU is ``floor(a * 0.01)`` on negative values, ReLU
  ``max(a, 0)``.

Every value is an integer held in float64, and every partial sum is bounded by
``sum|w_int| * 2**28 + |b_int| < 2**53`` (enforced when the weights are converted), so each
addition is exact in any order: BLAS on any machine, with or without FMA, one thread or many,
returns the same integers.  The only other operations are IEEE multiplications by constants
and ``floor``, which are deterministic.  Means come out of the same path, so the
reconstruction ``ŷ`` is identical everywhere too; only ``g_s`` remains floating point.

This module is the one place that computes entropy parameters: the PyTorch path and every
ONNX Runtime backend call it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from qaft.runtime.errors import FormatError
from qaft.runtime.subpixel import depth_to_space, subpixel_weights

#: Fractional bits of every activation: a = real * 2**ACT_BITS.  (12 bits left errors of
#: up to 0.05 in the means of the zoo's models, 18 bits leave 1e-3: the weights' rounding.)
ACT_BITS = 18
#: Activations (and the input ẑ) are clipped to ±ACT_LIMIT (±1024 in real units; the zoo's
#: largest on Kodak is 44) before each layer.
ACT_LIMIT = float(1 << 28)
#: Weights are int16 after per-channel power-of-two scaling.
WEIGHT_LIMIT = 2**15 - 1
#: Largest integer every partial sum must stay below (float64 holds integers exactly to 2**53).
SUM_LIMIT = float(1 << 53)
#: Negative slope of the leaky ReLUs (PyTorch's default, as the float model trains with).
LEAKY_SLOPE = 0.01
#: What may follow a layer, by the number stored for it (``spec[3]``): nothing, a leaky ReLU
#: (the mean-scale hyperprior) or a ReLU (the scale-only hyperprior, whose last layer too).
ACTIVATIONS = ("none", "leaky", "relu")
#: ẑ is processed in tiles (halo included) whose largest im2col buffer stays near this size:
#: the memory is bounded for any image size and shape.
TILE_BYTES = 768 << 20
#: ẑ rows and columns of context around a tile: an output depends on ẑ rows r-1 … r+2 and
#: likewise columns, and the sums are exact, so a tile equals the whole frame bit for bit.
HALO = 2
#: Largest exponent accepted in a stored model: ldexp by more would reach denormals.
SHIFT_LIMIT = 64


#: ``(a, b) -> a @ b`` on float64 matrices: any GEMM is exact on these operands (NumPy's by
#: default; the codecs pass :class:`qaft.runtime.backends.products.OrtProducts`).
Products = Callable[[np.ndarray, np.ndarray], np.ndarray]


class IntegerHyperError(FormatError):
    """Weights that cannot be made exact within the bounds, or inconsistent stored arrays."""


@dataclass(frozen=True)
class IntegerLayer:
    """One integer convolution (``deconv``: transposed, stride 2) and its rescaling.

    ``weight`` is int16 in PyTorch's layout: (out, in, k, k) for ``conv``, (in, out, k, k)
    for ``deconv``; ``shift`` (out,) are the exponents ``e_c``; ``bias`` (out,) int64.
    """

    kind: str
    weight: np.ndarray
    shift: np.ndarray
    bias: np.ndarray
    stride: int
    padding: int
    activation: str  # one of ACTIVATIONS

    def __post_init__(self) -> None:
        # The float64 weight matrix of the product, made once (a frozen dataclass's cache).
        # A transposed convolution runs as the convolution of its sub-pixel weights (the
        # same products, and zeros) and a depth-to-space: one well-shaped product where
        # every input pixel's k x k contributions, added up afterwards, took a product of
        # 96 columns and 25 strided additions (3.5 + 2.9 ms of q3's 6.4 ms layer).
        w = self.weight.astype(np.float64)
        if self.kind == "deconv":
            w = subpixel_weights(w, self.padding)
        object.__setattr__(self, "_mat", _conv_matrix(w))
        object.__setattr__(self, "_k", w.shape[2])
        object.__setattr__(self, "_b64", self.bias.astype(np.float64).reshape(-1, 1, 1))
        # 2**-e_c by ldexp (exact; exp2 need not be): multiplying by it is an exact
        # power-of-two rescaling, as ldexp is, and a plain broadcast product.
        scale = np.ldexp(1.0, -self.shift.astype(np.int64)).reshape(-1, 1, 1)
        object.__setattr__(self, "_scale", scale)

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[1] if self.kind == "deconv" else self.weight.shape[0])

    def worst_sum(self) -> float:
        """Largest |partial sum| any input within ±ACT_LIMIT can produce."""
        w = np.abs(self.weight.astype(np.float64))
        per_out = w.sum(axis=(0, 2, 3)) if self.kind == "deconv" else w.sum(axis=(1, 2, 3))
        return float((per_out * ACT_LIMIT + np.abs(self.bias.astype(np.float64))).max())

    def __call__(self, a: np.ndarray, matmul: Products = np.matmul) -> np.ndarray:
        """(1, C, H, W) integer-valued float64 -> the next layer's activations."""
        out = _conv_with(a[0], self._mat, self._k, matmul)
        if self.kind == "deconv":
            out = depth_to_space(out)
        out = out + self._b64  # a new array: the products' views are not contiguous
        out *= self._scale  # exact: a power of two, and no value comes near a denormal
        np.floor(out, out=out)
        np.clip(out, -ACT_LIMIT, ACT_LIMIT, out=out)
        if self.activation == "relu":
            np.maximum(out, 0.0, out=out)
        elif self.activation == "leaky":
            # For an integer x: floor(0.01 x) <= x when x >= 0 and >= x when x < 0, so the
            # maximum is the leaky ReLU's floor(0.01 x) on negative values, x elsewhere.
            np.maximum(out, np.floor(out * LEAKY_SLOPE), out=out)
        return out[None]


# Each layer is one matrix product (one BLAS call: on a busy machine every multithreaded
# call may wait for a core, so fewer, larger calls are faster), on float64 integers whose
# sums stay below 2**53: exact in any order, so the regrouping below changes no bit.


def _conv_matrix(w: np.ndarray) -> np.ndarray:
    """(out, in, k, k) -> (out, k*k*in), the taps' order of :func:`_conv_with`."""
    cout, cin, k, _ = w.shape
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(cout, k * k * cin))


def _conv_with(a: np.ndarray, mat: np.ndarray, k: int, matmul: Products = np.matmul) -> np.ndarray:
    """Stride-1 'same' convolution of (C, H, W) by :func:`_conv_matrix`'s ``mat``.

    The input is zero-padded and flattened with rows of ``wp`` values: the pixel (y + i,
    x + j) lies ``i * wp + j`` after (y, x), so each tap's operand is one contiguous slice
    (an im2col of k*k block copies, no gather).  Outputs are computed on the padded width
    and the extra columns dropped."""
    cin, h, wd = a.shape
    pad = k // 2
    wp = wd + 2 * pad
    n = h * wp
    # 2 * pad more at the end: the dropped columns of the last row read past the frame.
    flat = np.zeros((cin, (h + 2 * pad) * wp + 2 * pad))
    framed = flat[:, : (h + 2 * pad) * wp].reshape(cin, h + 2 * pad, wp)
    framed[:, pad : pad + h, pad : pad + wd] = a
    cols = np.empty((k * k, cin, n))
    for i in range(k):
        for j in range(k):
            cols[i * k + j] = flat[:, i * wp + j : i * wp + j + n]
    out = matmul(mat, cols.reshape(k * k * cin, n))
    return out.reshape(-1, h, wp)[:, :, :wd]


def _conv(a: np.ndarray, w: np.ndarray, pad: int) -> np.ndarray:
    """Stride-1 convolution, 'same' padding ((1, C, H, W) -> (1, cout, H, W), no bias)."""
    if w.shape[2] != 2 * pad + 1:
        raise ValueError("only 'same' convolutions (k = 2 pad + 1)")
    return _conv_with(a[0], _conv_matrix(w), w.shape[2])[None]


def _deconv(a: np.ndarray, w: np.ndarray, pad: int) -> np.ndarray:
    """Stride-2 transposed convolution with output padding 1: (1, C, H, W) -> (1, cout,
    2H, 2W), no bias."""
    sub = subpixel_weights(w, pad)
    return depth_to_space(_conv_with(a[0], _conv_matrix(sub), sub.shape[2]))[None]


@dataclass(frozen=True)
class IntegerHyperSynthesis:
    """``ẑ`` -> (scales, means) of ``y``, bit-identical on every machine.

    ``with_means``: the last layer gives scales then means (2M channels); a scale-only
    hyperprior's gives M scales, and its means are zero."""

    layers: tuple[IntegerLayer, ...]
    with_means: bool = True
    #: The GEMM the layers run on (not part of the network: any gives the same bits).
    matmul: Products = field(default=np.matmul, compare=False, repr=False)

    def with_products(self, matmul: Products) -> IntegerHyperSynthesis:
        """The same network, its products run by ``matmul``."""
        return replace(self, matmul=matmul)

    def tile_shape(self, h: int, w: int) -> tuple[int, int]:
        """ẑ rows and columns per tile (halo not counted) for a ẑ of h x w."""
        up = 2 ** sum(L.kind == "deconv" for L in self.layers)
        # products per output pixel of the widest layer: the rows of its im2col buffer
        widest = max(
            L.weight[0].size if L.kind == "conv" else L.weight.shape[0] * L.weight[0, 0].size
            for L in self.layers
        )
        area = max(1, TILE_BYTES // (8 * widest * up * up))  # ẑ pixels per tile, halo included
        th = min(h, max(1, math.isqrt(area) - 2 * HALO))
        tw = min(w, max(1, area // (th + 2 * HALO) - 2 * HALO))
        return th, tw

    @property
    def y_channels(self) -> int:
        """M: the channels of y it gives scales (and means) for."""
        return self.layers[-1].out_channels // (2 if self.with_means else 1)

    def __call__(self, z_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, N, h, w) float32 ẑ -> (scales, means) float32, each (B, M, 4h, 4w).

        ẑ is rounded to ``ACT_BITS`` fractional bits first: its values are integers plus
        the fixed per-channel medians, so nothing of it is lost in practice.  The outputs
        are rounded once from exact values to float32 (IEEE: the same everywhere)."""
        if z_hat.ndim != 4:
            raise FormatError(f"expected ẑ of shape (B, N, h, w), got {z_hat.shape}")
        nb, _, h, w = z_hat.shape
        up = 2 ** sum(L.kind == "deconv" for L in self.layers)
        m = self.y_channels
        scales = np.empty((nb, m, up * h, up * w), np.float32)
        means = (np.empty if self.with_means else np.zeros)((nb, m, up * h, up * w), np.float32)
        th, tw = self.tile_shape(h, w)
        for b in range(nb):
            for r0 in range(0, h, th):
                r1 = min(h, r0 + th)
                s0, s1 = max(0, r0 - HALO), min(h, r1 + HALO)
                for c0 in range(0, w, tw):
                    c1 = min(w, c0 + tw)
                    t0, t1 = max(0, c0 - HALO), min(w, c1 + HALO)
                    z = np.asarray(z_hat[b : b + 1, :, s0:s1, t0:t1], np.float64)
                    a = np.rint(z * float(1 << ACT_BITS))
                    np.clip(a, -ACT_LIMIT, ACT_LIMIT, out=a)
                    for layer in self.layers:
                        a = layer(a, self.matmul)
                    a = a[0, :, up * (r0 - s0) : up * (r1 - s0), up * (c0 - t0) : up * (c1 - t0)]
                    a *= 1.0 / (1 << ACT_BITS)
                    rows, cols = slice(up * r0, up * r1), slice(up * c0, up * c1)
                    scales[b, :, rows, cols] = a[:m]
                    if self.with_means:
                        means[b, :, rows, cols] = a[m:]
        return scales, means

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for an ``.npz`` (no pickles)."""
        out: dict[str, np.ndarray] = {"act_bits": np.array(ACT_BITS)}
        if not self.with_means:  # absent for mean-scale models: their arrays stay as they were
            out["scale_only"] = np.array(1)
        for i, L in enumerate(self.layers):
            out[f"{i}.weight"] = L.weight.astype(np.int16)
            out[f"{i}.shift"] = L.shift.astype(np.int32)
            out[f"{i}.bias"] = L.bias.astype(np.int64)
            act = ACTIVATIONS.index(L.activation)
            out[f"{i}.spec"] = np.array(
                [1 if L.kind == "deconv" else 0, L.stride, L.padding, act], np.int32
            )
        return out

    @classmethod
    def from_arrays(cls, arrays) -> IntegerHyperSynthesis:
        """Inverse of :meth:`to_arrays`; checks the bounds that make it exact."""
        try:
            if int(arrays["act_bits"]) != ACT_BITS:
                raise IntegerHyperError(f"activation bits {int(arrays['act_bits'])} != {ACT_BITS}")
            layers = []
            i = 0
            while f"{i}.weight" in arrays:
                deconv, stride, pad, act = (int(v) for v in arrays[f"{i}.spec"])
                if not 0 <= act < len(ACTIVATIONS):
                    raise IntegerHyperError(f"layer {i}: unknown activation {act}")
                # Read wide and range-checked, never wrapped by a cast.
                weight = np.asarray(arrays[f"{i}.weight"])
                shift = np.asarray(arrays[f"{i}.shift"])
                bias = np.asarray(arrays[f"{i}.bias"])
                for name, arr in (("weight", weight), ("shift", shift), ("bias", bias)):
                    if arr.dtype.kind not in "iu":
                        raise IntegerHyperError(f"layer {i}: {name} is not an integer array")
                if np.abs(weight.astype(np.int64)).max(initial=0) > WEIGHT_LIMIT:
                    raise IntegerHyperError(f"layer {i}: weights outside int16")
                if np.abs(shift.astype(np.int64)).max(initial=0) > SHIFT_LIMIT:
                    raise IntegerHyperError(f"layer {i}: exponents outside ±{SHIFT_LIMIT}")
                layers.append(
                    IntegerLayer(
                        "deconv" if deconv else "conv",
                        weight.astype(np.int16),
                        shift.astype(np.int32),
                        bias.astype(np.int64),
                        stride,
                        pad,
                        ACTIVATIONS[act],
                    )
                )
                i += 1
            scale_only = "scale_only" in arrays and int(arrays["scale_only"]) == 1
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, IntegerHyperError):
                raise
            raise IntegerHyperError(f"unreadable arrays ({exc})") from None
        hyper = cls(tuple(layers), with_means=not scale_only)
        hyper.check()
        return hyper

    def check(self) -> None:
        """Raises :class:`IntegerHyperError` unless every layer's sums stay exact."""
        if not self.layers:
            raise IntegerHyperError("no layers")
        channels = None
        for i, L in enumerate(self.layers):
            if L.weight.ndim != 4 or L.weight.shape[2] != L.weight.shape[3]:
                raise IntegerHyperError(f"layer {i}: weights are not square kernels")
            k = L.weight.shape[2]
            cin = L.weight.shape[0] if L.kind == "deconv" else L.weight.shape[1]
            if channels is not None and cin != channels:
                raise IntegerHyperError(f"layer {i}: {cin} input channels, {channels} given")
            channels = L.out_channels
            if L.shift.shape != (channels,) or L.bias.shape != (channels,):
                raise IntegerHyperError(f"layer {i}: exponents or biases of the wrong shape")
            # What _deconv and _conv implement: stride 2 with output 2H x 2W, stride 1 'same'.
            if L.kind == "deconv" and (L.stride != 2 or k != 2 * L.padding + 1):
                raise IntegerHyperError(f"layer {i}: transposed convolutions must double the size")
            if L.kind == "conv" and (L.stride != 1 or k != 2 * L.padding + 1):
                raise IntegerHyperError(f"layer {i}: convolutions must keep the size")
            if np.abs(L.weight.astype(np.int64)).max(initial=0) > WEIGHT_LIMIT:
                raise IntegerHyperError(f"layer {i}: weights outside ±{WEIGHT_LIMIT}")
            if np.abs(L.shift.astype(np.int64)).max(initial=0) > SHIFT_LIMIT:
                raise IntegerHyperError(f"layer {i}: exponents outside ±{SHIFT_LIMIT}")
            worst = L.worst_sum()
            if not worst < SUM_LIMIT:
                raise IntegerHyperError(f"layer {i}: partial sums up to {worst:.3g} >= 2**53")
        if self.with_means and channels % 2:
            raise IntegerHyperError(f"{channels} output channels cannot be scales and means")


@dataclass(frozen=True)
class FloatLayer:
    """A float layer of ``h_s`` as the model holds it (PyTorch's weight layout)."""

    kind: str  # "conv" | "deconv"
    weight: np.ndarray
    bias: np.ndarray
    stride: int
    padding: int
    activation: str  # one of ACTIVATIONS


def integerize(layers: list[FloatLayer], with_means: bool = True) -> IntegerHyperSynthesis:
    """Converts float weights to the integer path: deterministic (float64 arithmetic on
    float32 values), so the PyTorch side and ``qaft export`` produce identical integers."""
    out = []
    for i, L in enumerate(layers):
        w = np.asarray(L.weight, np.float32).astype(np.float64)
        b = np.asarray(L.bias, np.float32).astype(np.float64)
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise IntegerHyperError(f"layer {i}: weights or biases that are not finite")
        # float32 denormals are flushed here, explicitly, rather than by whatever the
        # CPU's flush-to-zero setting would make of them.
        tiny = float(np.finfo(np.float32).tiny)
        w[np.abs(w) < tiny] = 0.0
        b[np.abs(b) < tiny] = 0.0
        axes = (0, 2, 3) if L.kind == "deconv" else (1, 2, 3)
        shape = (1, -1, 1, 1) if L.kind == "deconv" else (-1, 1, 1, 1)
        # Exponents from frexp (exact), not log2 (whose last bit may differ between
        # libraries): |w| < 2**kw, so |w| * 2**(15 - kw) < 2**15; and |b_int| <= 2**50.
        _, kw = np.frexp(np.abs(w).max(axis=axes))
        _, kb = np.frexp(np.abs(b))
        e_b = np.where(b == 0, SHIFT_LIMIT, 50 - ACT_BITS - kb)
        e = np.minimum(np.minimum(15 - kw, e_b), SHIFT_LIMIT).astype(np.int32)
        w_int = np.rint(np.ldexp(w, e.reshape(shape)))
        # Step a channel's exponent down while rint rounds a weight up to 32768, or while its
        # worst sum, sum|w_int| * ACT_LIMIT + |b_int|, could reach 2**52 (one bit of margin).
        for _ in range(64):
            w_int = np.rint(np.ldexp(w, e.reshape(shape)))
            b_int = np.rint(np.ldexp(b, e + ACT_BITS))
            worst = np.abs(w_int).sum(axis=axes) * ACT_LIMIT + np.abs(b_int)
            over = (np.abs(w_int).max(axis=axes) > WEIGHT_LIMIT) | (worst >= float(1 << 52))
            if not over.any():
                break
            e[over] -= 1
        else:
            raise IntegerHyperError(f"layer {i}: no exponent keeps the sums below 2**52")
        out.append(
            IntegerLayer(
                L.kind,
                w_int.astype(np.int16),
                e,
                b_int.astype(np.int64),
                L.stride,
                L.padding,
                L.activation,
            )
        )
    hyper = IntegerHyperSynthesis(tuple(out), with_means)
    hyper.check()
    return hyper
