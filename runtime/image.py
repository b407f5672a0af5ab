"""Reading and writing images at the runtime's boundary (uint8 RGB arrays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from qaft.runtime.errors import QaftError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


#: Largest image accepted (pixels), checked from the header before anything is decoded.
MAX_IMAGE_PIXELS = 1 << 28


class ImageError(QaftError, ValueError):
    """An input that is not a readable image."""


def load_rgb(path: str | Path) -> np.ndarray:
    """Reads an image as (H, W, 3) uint8 RGB.

    EXIF orientation is applied; alpha is dropped (composited on nothing: the codec
    carries colour only); grayscale and palette images are expanded to RGB.
    """
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ImageError(
                    f"{path}: {w}x{h} is larger than the {MAX_IMAGE_PIXELS:,}-pixel limit"
                )
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                im = im.point(lambda v: v / 256).convert("L")
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except ImageError:
        raise
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
    ) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from None


def save_png(image: np.ndarray, path: str | Path) -> None:
    """Writes (H, W, 3) uint8 as PNG."""
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path, format="PNG")


def save_png_bytes(image: np.ndarray) -> bytes:
    """PNG bytes of (H, W, 3) uint8 (so callers can write them atomically)."""
    import io

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
