"""Measuring a model's quantizer settings (step Δ and search λ) on training images.

The criterion is the model's own training objective, J = λ·MSE + bpp (MSE on 0-255 pixel
values, which is λ·255²·MSE on [0, 1] as in training) with real file
sizes: the setting that minimizes it moves the model's operating point furthest along the
tangent of its rate-distortion curve.  Tuning reads training images, never the test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qaft.runtime import codec as C
from qaft.runtime import container
from qaft.runtime.codec import Codec
from qaft.runtime.image import load_rgb
from qaft.runtime.quantizers import QUANTIZERS, Prior
from qaft.runtime.quantizers.base import encode_latent
from qaft.runtime.tiling import to_uint8


@dataclass
class Prepared:
    """What the networks give for one image, independent of the quantizer."""

    image: np.ndarray
    y: np.ndarray
    prior: Prior
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
        y, _ = codec.networks.analysis(C.network_input(image))
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
    # The file without its y sections: header, section table, z sections, checksum.
    header = container.Header(0, codec.model.fingerprint, *image.shape[:2])
    fixed = len(container.pack(header, [*C.code_z(codec, lat), b"", b""]))
    return Prepared(image, lat.y, lat.prior, fixed)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return image[top : top + size, left : left + size]


def tune(
    codec: Codec, model_lmbda: float, quantizer: str, images: list[Path], crop: int = 512
) -> dict:
    """Search of (step, λ) over ``quantizer``'s tuning grid; returns the best with its
    figures (under the keys ``step`` and ``lmbda``, as model files store them)."""
    quant = QUANTIZERS[quantizer]
    prepared = [prepare(codec, center_crop(load_rgb(p), crop)) for p in images]
    results = []
    for params in quant.grid:
        bpp, mse = [], []
        for p in prepared:
            lat = encode_latent(quant, p.y, p.prior, params)
            n_bytes = p.fixed_bytes + sum(len(s) for s in lat.sections)
            x_hat = to_uint8(codec.networks.synthesis(lat.y_hat), *p.image.shape[:2])
            h, w = p.image.shape[:2]
            bpp.append(8 * n_bytes / (h * w))
            mse.append(np.mean((x_hat.astype(np.float64) - p.image) ** 2))
        j = model_lmbda * float(np.mean(mse)) + float(np.mean(bpp))
        results.append(
            {
                "step": params.delta,
                "lmbda": params.rdo_lambda,
                "bpp": float(np.mean(bpp)),
                "mse": float(np.mean(mse)),
                "J": j,
            }
        )
    best = min(results, key=lambda r: r["J"])
    return {"best": best, "grid": results}
