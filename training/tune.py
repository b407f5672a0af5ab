"""Measuring a model's quantizer settings (step Δ and search λ) on training images.

The criterion is the model's own training objective, J = λ·MSE + bpp (MSE on 0-255 pixel
values, which is λ·255²·MSE on [0, 1] as in training) with real file
sizes: the setting that minimizes it moves the model's operating point furthest along the
tangent of its rate-distortion curve.  Tuning reads training images, never the test set.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qaft.runtime import codec as C
from qaft.runtime import container
from qaft.runtime.codec import Codec
from qaft.runtime.entropy import coder
from qaft.runtime.image import load_rgb
from qaft.runtime.quantizers import QUANTIZERS, QuantizerParams
from qaft.runtime.quantizers.base import encode_latent
from qaft.runtime.tiling import to_uint8

# With distortion weights in bits per unit squared error, λ = 1 is the model's own trade-off;
# the grid looks around it because the synthesis is only locally linear.
GRIDS = {
    "sq": {"step": [1.0], "lmbda": [0.0]},
    "rdoq": {"step": [1.0], "lmbda": [0.0, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0]},
    "tcq": {"step": [0.5, 0.55, 0.6, 0.65, 0.7, 0.8], "lmbda": [0.1, 0.2, 0.35, 0.5, 0.7, 1.0]},
}
GRIDS["tcq8"] = GRIDS["tcq"]


@dataclass
class Prepared:
    """What the networks give for one image, independent of the quantizer."""

    image: np.ndarray
    y: np.ndarray
    means: np.ndarray
    levels: np.ndarray
    fixed_bytes: int  # header, section table, z sections and checksum


def synthesis_gain(
    codec: Codec, images: list[np.ndarray], delta: float = 0.5, seed: int = 0
) -> np.ndarray:
    """Per latent channel: pixel squared error (0-255, summed over colours) caused by a unit
    squared error of one latent, measured by perturbing each channel with random ±delta
    (random signs make the cross terms average out)."""
    rng = np.random.default_rng(seed)
    total = None
    for image in images:
        y, _ = codec.networks.analysis(C._pad(image))
        base = codec.networks.synthesis(y)
        n_ch, n_pos = y.shape[1], y.shape[2] * y.shape[3]
        gains = np.empty(n_ch)
        for c in range(n_ch):
            pert = y.copy()
            pert[0, c] += delta * rng.choice([-1.0, 1.0], y.shape[2:]).astype(np.float32)
            diff = (codec.networks.synthesis(pert) - base) * 255.0
            gains[c] = float(np.sum(diff.astype(np.float64) ** 2)) / (n_pos * delta**2)
        total = gains if total is None else total + gains
    return total / len(images)


def prepare(codec: Codec, image: np.ndarray) -> Prepared:
    """Runs the networks on ``image`` once; every quantizer setting then reuses the result."""
    lat = C.latents(codec, image)
    z_idx = lat.z_indices
    z_code = coder.encode(z_idx, C._z_table_ids(z_idx.shape), codec.tables.z_tables)
    # The file without its y sections: header, section table, z sections, checksum.
    header = container.Header(0, codec.fingerprint, *image.shape[:2])
    fixed = len(container.pack(header, [z_code.stream, z_code.escapes_bytes(), b"", b""]))
    return Prepared(image, lat.y, lat.means, lat.levels, fixed)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return image[top : top + size, left : left + size]


def tune(
    codec: Codec, model_lmbda: float, quantizer: str, images: list[Path], crop: int = 512
) -> dict:
    """Grid search of (step, λ) for ``quantizer``; returns the best with its figures."""
    quant = QUANTIZERS[quantizer]
    grid = GRIDS[quantizer]
    prepared = [prepare(codec, center_crop(load_rgb(p), crop)) for p in images]
    results = []
    for step, lam in itertools.product(grid["step"], grid["lmbda"]):
        params = QuantizerParams(step, lam)
        bpp, mse = [], []
        for p in prepared:
            lat = encode_latent(
                quant, p.y, p.means, p.levels, codec.tables, params, codec.distortion_weights
            )
            n_bytes = p.fixed_bytes + sum(len(s) for s in lat.sections)
            x_hat = to_uint8(codec.networks.synthesis(lat.y_hat), *p.image.shape[:2])
            h, w = p.image.shape[:2]
            bpp.append(8 * n_bytes / (h * w))
            mse.append(np.mean((x_hat.astype(np.float64) - p.image) ** 2))
        j = model_lmbda * float(np.mean(mse)) + float(np.mean(bpp))
        results.append(
            {
                "step": step,
                "lmbda": lam,
                "bpp": float(np.mean(bpp)),
                "mse": float(np.mean(mse)),
                "J": j,
            }
        )
    best = min(results, key=lambda r: r["J"])
    return {"best": best, "grid": results}
