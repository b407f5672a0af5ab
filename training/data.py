"""Training images: decoded once into memory, served as random crops with flips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from qaft.runtime.errors import ConfigError
from qaft.runtime.image import IMAGE_SUFFIXES, load_rgb


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (sorted), or a clear error if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


class CropSampler:
    """Random ``crop x crop`` patches with random horizontal and vertical flips."""

    def __init__(self, folder: str | Path, crop: int, seed: int = 0):
        self.images = [load_rgb(p) for p in list_images(folder)]
        small = [i for i in self.images if min(i.shape[:2]) < crop]
        if small:
            raise ConfigError(f"{len(small)} training images are smaller than the {crop}px crop")
        self.crop = crop
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> torch.Tensor:
        """A float batch (size, 3, crop, crop) in [0, 1]."""
        out = np.empty((size, self.crop, self.crop, 3), dtype=np.uint8)
        for b in range(size):
            img = self.images[self.rng.integers(len(self.images))]
            y = self.rng.integers(img.shape[0] - self.crop + 1)
            x = self.rng.integers(img.shape[1] - self.crop + 1)
            patch = img[y : y + self.crop, x : x + self.crop]
            if self.rng.random() < 0.5:
                patch = patch[:, ::-1]
            if self.rng.random() < 0.5:
                patch = patch[::-1]
            out[b] = patch
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state
