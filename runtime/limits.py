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


def size_error(height: int, width: int) -> str:
    """Why :func:`size_ok` refuses a height x width image, for the coder's error message."""
    if height <= 0 or width <= 0:
        return f"a {width}x{height} image is empty: there is nothing to code"
    return f"a {width}x{height} image is over the {limit_text()}"


#: Peak memory per padded pixel, from the whole process's peaks at 16384² (docs/performance.md):
#: 3.2 GiB to compress, 3.5 GiB to decompress.  The quantizer and the entropy coder run band
#: by band (container version 4), so what grows with the image is the image, y and its
#: indices (about 7 bytes a pixel with M = 96); the rest (the model, ONNX Runtime's tile
#: buffers, the hyper-synthesis' tile, one band) is bounded, and counted here as if it grew.
#: "decode-whole": a file of one band, as versions 2 and 3 are (earlier encoders wrote large
#: images so), decoded with whole-latent arrays; "encode-whole": an image of one band (a
#: strip too wide for a band of one row of ẑ to stay small), as measured before bands.  A
#: rate-control search ("search") holds the latents of the models it tries and its trials:
#: about 530 bytes per pixel measured at 1536² and 3072².
BYTES_PER_PIXEL = {
    "encode": 13,
    "decode": 14,
    "encode-whole": 55,
    "decode-whole": 40,
    "search": 550,
}
#: Below this estimate the check is skipped: every machine that runs qaft has that much.
_CHECK_FROM_BYTES = 1 << 30


def memory_needed(height: int, width: int, operation: str) -> int:
    """Estimated peak bytes to ``operation`` (a key of :data:`BYTES_PER_PIXEL`) a height x
    width image."""
    return padded(height) * padded(width) * BYTES_PER_PIXEL[operation]


def available_memory() -> int | None:
    """Bytes this process may still allocate: the smaller of the system's available memory
    and the room left under its cgroup's limit; None where neither can be read."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    for limit_file, used_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(used_file) as f:
                used = int(f.read().strip())
            if limit != "max" and int(limit) < 1 << 60:  # v1 says "no limit" with a huge one
                found.append(int(limit) - used)
        except (OSError, ValueError):
            pass
    return min(found) if found else None


def check_memory(height: int, width: int, operation: str) -> None:
    """Refuses, before allocating, an image whose estimated peak exceeds the memory left."""
    from qaft.runtime.errors import QaftError

    need = memory_needed(height, width, operation)
    if need < _CHECK_FROM_BYTES:
        return
    have = available_memory()
    if have is not None and need > have:
        verb = operation.split("-")[0]  # "encode-whole" is still "to encode"
        raise QaftError(
            f"a {width}x{height} image needs about {need / 2**30:.1f} GiB to {verb}, "
            f"and {max(have, 0) / 2**30:.1f} GiB is available"
        )


#: ONNX Runtime threads per core at most: beyond a few the sessions only contend, and
#: thousands exhaust memory or deadlock in the session constructor.
MAX_THREADS_PER_CORE = 4


def check_threads(threads: int) -> int:
    """``threads`` if it is 0 (the runtime's default) or 1 .. 4 per core, else a QaftError."""
    import numbers
    import os

    from qaft.runtime.errors import QaftError

    # any integer type (NumPy's too), never a bool or a float
    if not isinstance(threads, numbers.Integral) or isinstance(threads, bool):
        raise QaftError(f"threads must be an integer, not {threads!r}")
    threads = int(threads)
    top = MAX_THREADS_PER_CORE * (os.cpu_count() or 1)
    if not 0 <= threads <= top:
        raise QaftError(
            f"threads must be 0 (automatic) or 1 to {top} on this machine, not {threads}"
        )
    return threads
