"""Scalar quantization (``sq``): index = round(y - mean), reconstruction = index + mean."""

from __future__ import annotations

import numpy as np


def quantize(y: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Integer indices of ``y`` relative to its predicted mean."""
    return np.rint(y - means).astype(np.int32)


def reconstruct(indices: np.ndarray, means: np.ndarray) -> np.ndarray:
    """The decoder's latent: indices shifted back by the mean (float32)."""
    return (indices.astype(np.float32) + means).astype(np.float32)
