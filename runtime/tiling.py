"""Running the convolutional transforms tile by tile, so that memory stays bounded.

The analysis (``g_a`` then ``h_a``) and the synthesis (``g_s``) are fully convolutional, so
each output position depends on a bounded window of the input: its receptive field.  A
tile extended on every side by a margin at least that wide yields, inside the margin,
exactly the values the whole frame would (in exact arithmetic; floating-point sums may
round differently, which moves the reconstruction by far less than one grey level and never
touches the entropy parameters, computed from the whole-frame ``ẑ`` on both sides).

Receptive-field radii of the mean-scale hyperprior (5x5 convolutions of stride 2 in ``g_a``
and ``g_s``; ``h_a`` = 3x3 stride 1, 5x5 stride 2, 5x5 stride 2):

* ``g_s``: an output pixel p depends on latents in [(p - 30)/16, (p + 30)/16], a radius
  below 2 latents: :data:`SYNTHESIS_MARGIN` is 2 latents.
* ``g_a``: a latent depends on 2 + 4 + 8 + 16 = 30 pixels on either side; ``h_a`` adds
  7 latents (112 pixels) for ``z``: 142 pixels, rounded up to the 64-pixel grid of ``z``:
  :data:`ANALYSIS_MARGIN` is 192 pixels.

Images that fit in one tile run whole, so ordinary photographs pay nothing for this.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import numpy as np

#: Synthesis tiles: latents per side, and the margin added on each side (latents).
SYNTHESIS_TILE = 64
SYNTHESIS_MARGIN = 2
#: Analysis tiles: pixels per side (a multiple of 64), and the margin (pixels).  1024: ONNX
#: Runtime's buffers for a 2048-pixel tile (and its arena over the tiles' several shapes)
#: reached 3.4 GiB, for 1024 about 1 GiB, at no cost in time.
ANALYSIS_TILE = 1024
ANALYSIS_MARGIN = 192


def tiled(
    fn: Callable[[np.ndarray], tuple[np.ndarray, ...]],
    height: int,
    width: int,
    crop: Callable[[int, int, int, int], np.ndarray],
    scales: tuple[Fraction, ...],
    tile: int,
    margin: int,
    sinks: Callable[[int, tuple[int, int, int, int], np.ndarray], None],
) -> None:
    """Applies ``fn`` to overlapping tiles of a ``height`` x ``width`` input.

    ``crop(r0, r1, c0, c1)`` returns the input rows r0:r1 and columns c0:c1 (N, C, h, w)
    as ``fn`` takes it; output k of ``fn`` is ``scales[k]`` times the input's size.  For
    each tile and output, ``sinks(k, (r0, r1, c0, c1), values)`` receives the tile's core
    (margin removed) and where it belongs in output k's coordinates.  ``tile`` and
    ``margin`` times every scale must be whole numbers.
    """
    for r0 in range(0, height, tile):
        r1 = min(r0 + tile, height)
        a0, a1 = max(r0 - margin, 0), min(r1 + margin, height)
        for c0 in range(0, width, tile):
            c1 = min(c0 + tile, width)
            b0, b1 = max(c0 - margin, 0), min(c1 + margin, width)
            outs = fn(crop(a0, a1, b0, b1))
            for k, (out, s) in enumerate(zip(outs, scales)):
                core = out[
                    :,
                    :,
                    int((r0 - a0) * s) : int((r1 - a0) * s),
                    int((c0 - b0) * s) : int((c1 - b0) * s),
                ]
                sinks(k, (int(r0 * s), int(r1 * s), int(c0 * s), int(c1 * s)), core)


def to_float(tile_u8: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 -> (1, 3, h, w) float32 in [0, 1]."""
    return (tile_u8.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255.0)).astype(
        np.float32
    )


def analyze(
    analysis: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    padded: np.ndarray,
    tile: int = ANALYSIS_TILE,
    margin: int = ANALYSIS_MARGIN,
) -> tuple[np.ndarray, np.ndarray]:
    """``y``, ``z`` of an (H, W, 3) uint8 image already padded to a multiple of 64, tile
    by tile when it is larger than one tile (only a tile is ever held in float32)."""
    h, w = padded.shape[:2]
    if h <= tile and w <= tile:
        return analysis(to_float(padded))
    out: list[np.ndarray | None] = [None, None]
    scales = (Fraction(1, 16), Fraction(1, 64))

    def sink(k, where, values):
        if out[k] is None:
            out[k] = np.empty(
                (1, values.shape[1], int(h * scales[k]), int(w * scales[k])), np.float32
            )
        r0, r1, c0, c1 = where
        out[k][:, :, r0:r1, c0:c1] = values

    tiled(
        analysis,
        h,
        w,
        lambda r0, r1, c0, c1: to_float(padded[r0:r1, c0:c1]),
        scales,
        tile,
        margin,
        sink,
    )
    return out[0], out[1]


def synthesize(
    synthesis: Callable[[np.ndarray], np.ndarray],
    y_hat: np.ndarray,
    height: int,
    width: int,
    tile: int = SYNTHESIS_TILE,
    margin: int = SYNTHESIS_MARGIN,
) -> np.ndarray:
    """The (height, width, 3) uint8 image of latents ``y_hat`` (1, M, h, w), tile by tile
    when the latent is larger than one tile (only a tile is ever held in float32)."""
    _, _, h, w = y_hat.shape
    if h <= tile and w <= tile:
        return to_uint8(synthesis(y_hat), height, width)
    image = np.empty((height, width, 3), np.uint8)

    def sink(_k, where, values):
        r0, r1, c0, c1 = where
        r1, c1 = min(r1, height), min(c1, width)
        if r0 < r1 and c0 < c1:
            image[r0:r1, c0:c1] = to_uint8(values, r1 - r0, c1 - c0)

    tiled(
        lambda t: (synthesis(t),),
        h,
        w,
        lambda r0, r1, c0, c1: np.ascontiguousarray(y_hat[:, :, r0:r1, c0:c1]),
        (Fraction(16),),
        tile,
        margin,
        sink,
    )
    return image


def to_uint8(x_hat: np.ndarray, height: int, width: int) -> np.ndarray:
    """(1, 3, H', W') in [0, 1] -> top-left (height, width, 3) uint8.

    Non-finite values (only a crafted stream can produce them) become black rather than
    undefined casts.
    """
    img = np.nan_to_num(x_hat[0, :, :height, :width], nan=0.0, posinf=1.0, neginf=0.0)
    img = np.clip(img, 0.0, 1.0) * 255.0
    return np.rint(img).astype(np.uint8).transpose(1, 2, 0).copy()
