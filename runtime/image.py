"""Reading and writing images at the runtime's boundary (uint8 RGB arrays)."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from qaft.runtime.errors import QaftError
from qaft.runtime.limits import MAX_PIXELS, limit_text, size_ok

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


#: Largest image accepted (pixels), checked from the header before anything is decoded.
#: 16384 x 16384 fits exactly (coded here with 14.9 GiB peak: docs/performance.md).
MAX_IMAGE_PIXELS = MAX_PIXELS

# Pillow refuses images over twice its own MAX_IMAGE_PIXELS as decompression bombs while
# opening them, before our size check can run; it is raised only around our own open().
_PILLOW_LIMIT = threading.Lock()

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
#: Floating-point samples have no agreed 8-bit mapping (HDR, linear light, any range):
#: refused rather than clipped to black and white.
_FLOAT_MODES = ("F",)
#: PNG text key under which decoded images name the stream they came from (SHA-256), so a
#: later run can tell its own up-to-date output from a stale one or from a user's file.
SOURCE_KEY = "qaft-source"


class ImageError(QaftError, ValueError):
    """An input that is not a readable image."""


def _open(path: str | Path) -> Image.Image:
    with _PILLOW_LIMIT:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
        try:
            with warnings.catch_warnings():
                # Over the limit is refused by load_rgb itself, with a clearer message.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def load_rgb(path: str | Path | BinaryIO, name: str | None = None) -> np.ndarray:
    """Reads an image (a path, or a binary file object such as standard input's bytes; its
    ``name`` in messages) as (H, W, 3) uint8 RGB, by these rules:

    * EXIF orientation is applied, so the result is upright (the file keeps no EXIF).
    * Alpha is dropped: colour values are kept as stored, not blended with a background.
    * Grayscale and palette images become RGB; CMYK is converted by Pillow's formula.
    * 16-bit samples keep their top 8 bits (``v >> 8``), as Pillow does for 16-bit RGB.
    * Floating-point images (TIFF mode ``F``) are refused.
    * Images over :data:`MAX_IMAGE_PIXELS` once padded to multiples of 64 are refused from
      the header, before decoding.
    """
    label = name or path
    try:
        with _open(path) as im:
            w, h = im.size
            if not size_ok(h, w):
                raise ImageError(f"{label}: {w}x{h} is larger than the {limit_text()}")
            return rgb_array(im, label)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError(f"{label}: not enough memory to decode this image") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many types on bad files
        # the name said once (Pillow's messages repeat the path, or a file object's repr)
        why = str(exc).replace(f" '{path}'", "").replace(f" {path!r}", "") or type(exc).__name__
        raise ImageError(f"{label}: not a readable image ({why})") from None


#: Pixels of an image converted to RGB at once by :func:`rgb_array` (bytes at 4 a pixel).
_STRIP_BYTES = 1 << 24


def rgb_array(im: Image.Image, label: str | Path = "image") -> np.ndarray:
    """A Pillow image as (H, W, 3) uint8 RGB by :func:`load_rgb`'s rules (EXIF orientation
    applied, alpha dropped, 16-bit samples' top 8 bits, floating-point samples refused);
    ``label`` names it in messages."""
    if im.mode in _FLOAT_MODES:
        raise ImageError(
            f"{label}: floating-point samples (mode {im.mode}) are not read; "
            "convert the image to 8 or 16 bits first"
        )
    # in place: otherwise Pillow returns a copy of the whole image even when it is upright
    ImageOps.exif_transpose(im, in_place=True)
    if im.mode in _SIXTEEN_BIT:
        gray = np.clip(np.asarray(im).astype(np.int64) >> 8, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    # strip by strip into one array: converting and exporting the whole image at once
    # held three more copies of it (16384 x 16384: 3 GiB)
    w, h = im.size
    out = np.empty((h, w, 3), np.uint8)
    step = max(1, _STRIP_BYTES // (4 * w))
    for r0 in range(0, h, step):
        r1 = min(h, r0 + step)
        try:
            strip = im.crop((0, r0, w, r1)).convert("RGB")
        except ValueError as exc:  # a mode Pillow has no conversion for (La, premultiplied)
            raise ImageError(f"{label}: mode {im.mode} cannot be read as RGB ({exc})") from None
        out[r0:r1] = np.asarray(strip, dtype=np.uint8)
    return out


#: zlib level of the PNGs qaft writes.  Pillow's default, 6, took 212 ms of a 543 ms Kodak
#: decode on the 2-core machine; 3 (zlib's fastest strategy, with its best matching) takes
#: 47 ms for 4.5% more bytes, 1 no less time for 7.8% more (benchmarks/png_level.py): a
#: decoded picture is a working copy, so time wins over a few percent of disk.
PNG_LEVEL = 3


def has_alpha(path: str | Path) -> bool:
    """Whether the image at ``path`` has an alpha channel or a transparent colour, which
    :func:`load_rgb` drops (from its header; False for anything unreadable)."""
    try:
        with _open(path) as im:
            return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    except Exception:  # noqa: BLE001 - the reader itself says what is wrong with the file
        return False


def upright_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of the image at ``path`` as :func:`load_rgb` returns it (EXIF
    orientation applied), from its header alone."""
    try:
        with _open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many types on bad files
        raise ImageError(f"{path}: not a readable image ({exc or type(exc).__name__})") from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def save_png_bytes(image: np.ndarray, source: str | None = None) -> bytes:
    """PNG bytes of (H, W, 3) uint8 (so callers can write them atomically); ``source``
    (the SHA-256 of the stream it was decoded from) is stored as a text chunk."""
    import io

    from PIL import PngImagePlugin

    info = None
    if source is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text(SOURCE_KEY, source)
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(
        buf, format="PNG", pnginfo=info, compress_level=PNG_LEVEL
    )
    return buf.getvalue()


def png_source(path: str | Path) -> str | None:
    """The ``source`` a PNG was saved with by :func:`save_png_bytes`, None for any other
    file (not a PNG, unreadable, or a PNG that qaft did not write)."""
    try:
        with Image.open(path, formats=["PNG"]) as im:
            value = im.info.get(SOURCE_KEY)
    except Exception:  # noqa: BLE001 - any file that is not our PNG is simply not ours
        return None
    return value if isinstance(value, str) else None
