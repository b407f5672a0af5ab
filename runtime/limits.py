"""The sizes the codec accepts, in one place for the image reader, the container and the codec.

The networks see the image padded to a multiple of :data:`PAD_MULTIPLE` (``g_a`` downsamples
by 16 and ``h_a`` by 4 more), and every buffer downstream grows with that padded size, so the
limit counts padded pixels: a 1 x 2^28 strip, 2^28 pixels as stored, would need 64 times
that once padded, and is refused.
"""

from __future__ import annotations

#: g_a downsamples by 16 and h_a by 4 more: inputs are padded to a multiple of this.
PAD_MULTIPLE = 64
#: Largest padded picture (pixels) coded or decoded: 16384 x 16384 exactly.
MAX_PIXELS = 1 << 28


def padded(n: int) -> int:
    """``n`` rounded up to a multiple of :data:`PAD_MULTIPLE`."""
    return -(-n // PAD_MULTIPLE) * PAD_MULTIPLE


def size_ok(height: int, width: int) -> bool:
    """Whether a height x width picture is within the limit (checked before allocating)."""
    return 0 < height and 0 < width and padded(height) * padded(width) <= MAX_PIXELS


def limit_text() -> str:
    return f"{MAX_PIXELS:,}-pixel limit (after padding to multiples of {PAD_MULTIPLE})"
