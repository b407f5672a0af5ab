"""Small synthetic images and index digests: what tests, golden streams and benchmarks
use where no photographs are at hand."""

from __future__ import annotations

import hashlib

import numpy as np


def index_digest(a: np.ndarray) -> str:
    """SHA-256 of an index array as int32 (the golden streams record them so)."""
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.int32).tobytes()).hexdigest()


def synthetic_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus texture: compressible like a photo, unlike pure noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 90 * np.sin(xx / (7 + 3 * c) + yy / 11 + c) for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
