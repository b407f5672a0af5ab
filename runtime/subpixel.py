"""A stride-2 transposed convolution as a convolution and a depth-to-space (sub-pixel).

``ConvTranspose(k, stride 2, padding p, output padding 1)`` writes output row ``2m + r``
(``r`` in {0, 1}) from input rows ``m + t`` through kernel row ``ky = r + p - 2t``; so each of
the four output phases (r, c) is an ordinary convolution of the input with a kernel of the
taps that phase uses, and stacking the phases as ``4 * cout`` output channels
(``4 * o + 2 * r + c``) makes one stride-1 convolution of kernel ``2h + 1``, ``h = (p + 1)
// 2``, followed by ``DepthToSpace(2)`` in "depth first" (CRD, PyTorch's PixelShuffle)
order.  The sums are the same products as the transposed convolution's (a few taps are
zero: 36 where it has 25 for k = 5), in another order.

Where it serves: OpenVINO's bf16 kernels run this form of the synthesis 1.8x faster than
its transposed convolutions (q3, a Kodak image, 2 cores: 36 against 64 ms; ONNX Runtime
gains under 10%, so its graphs are left as exported), and the exact integer
hyper-synthesis computes its transposed convolutions this way (one product each).
"""

from __future__ import annotations

import numpy as np


def lowerable(kernel: int, stride: int, padding: int, output_padding: int) -> bool:
    """Whether :func:`subpixel_weights` reproduces this transposed convolution (qaft's and
    CompressAI's: odd kernel, stride 2, padding k // 2, output padding 1)."""
    return kernel % 2 == 1 and stride == 2 and padding == kernel // 2 and output_padding == 1


def subpixel_weights(w: np.ndarray, padding: int) -> np.ndarray:
    """(cin, cout, k, k) transposed-convolution weights -> (4 cout, cin, K, K) weights of
    the equivalent convolution (padding ``(K - 1) / 2``) before ``DepthToSpace(2)``."""
    cin, cout, k, _ = w.shape
    h = (padding + 1) // 2
    out = np.zeros((cout, 2, 2, cin, 2 * h + 1, 2 * h + 1), w.dtype)
    for r in (0, 1):
        for t in range(-h, h + 1):
            ky = r + padding - 2 * t
            if not 0 <= ky < k:
                continue
            for c in (0, 1):
                for u in range(-h, h + 1):
                    kx = c + padding - 2 * u
                    if 0 <= kx < k:
                        out[:, r, c, :, t + h, u + h] = w[:, :, ky, kx].T
    return out.reshape(4 * cout, cin, 2 * h + 1, 2 * h + 1)


def depth_to_space(x: np.ndarray) -> np.ndarray:
    """(4 C, H, W) -> (C, 2H, 2W), channel ``4 c + 2 r + s`` to pixel ``(2y + r, 2x + s)``
    of channel c (ONNX's DepthToSpace in CRD mode, PyTorch's PixelShuffle(2))."""
    c4, h, w = x.shape
    return x.reshape(c4 // 4, 2, 2, h, w).transpose(0, 3, 1, 4, 2).reshape(c4 // 4, 2 * h, 2 * w)
