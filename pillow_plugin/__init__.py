"""Pillow support for ``.qaft`` files: ``import qaft.pillow`` once, then

::

    from PIL import Image

    im = Image.open("photo.qaft")         # size and mode from the header, nothing decoded
    im.load()                              # decodes (with the bundled model the file names)
    im.save("copy.qaft", quality=3)        # encodes; also model=, quantizer=, step=, ...

Pillow 13 has no entry point by which an installed package registers a format (its
plugins are the modules it lists itself), so the import is what registers it, as with
``pillow_avif`` and ``pillow_jxl``.

Reading: :meth:`Image.open` verifies the stream's header and checksum (reading the file's
bytes, bounded like ``qaft-run``'s) and gives its size and mode (``RGB``);
``im.info["qaft"]`` holds what ``qaft-run info`` says of it.  Decoding happens at
``load()``, by the bundled model the header names, as :func:`qaft.runtime.decompress`
decodes.  Bundled models, once loaded, stay loaded for the process (the last
:data:`CACHED_MODELS` of them): a folder of images pays for the model once, not per image.

Writing: ``im.save(path_or_file, format="QAFT", **options)`` (the format follows from a
``.qaft`` suffix) takes the options of :func:`qaft.runtime.compress`: ``model``,
``quality``, ``target_bpp``, ``target_psnr``, ``quantizer``, ``step``, ``q_lmbda``,
``backend``, ``threads``, ``precision``; other keywords are ignored, as Pillow's own
writers ignore options they do not know.  The image becomes RGB by ``qaft-run``'s rules
(EXIF orientation applied, alpha dropped, 16-bit samples' top 8 bits), so the bytes are
those ``qaft-run compress`` writes for the same image and options.

Failures are :class:`QaftFileError`: a :class:`~qaft.runtime.errors.QaftError` (its
one-line message) that is also an ``OSError``, what Pillow's callers catch.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from PIL import Image, ImageFile

from qaft.runtime.container import MAGIC, MAX_STREAM_BYTES
from qaft.runtime.errors import QaftError

#: Bundled models kept loaded (a zoo has 17; an application uses one or two).
CACHED_MODELS = 4
FORMAT = "QAFT"
EXTENSION = ".qaft"
MIME = "image/x-qaft"
#: The options of ``save`` passed on to :func:`qaft.runtime.compress`.
SAVE_OPTIONS = (
    "model",
    "quality",
    "target_bpp",
    "target_psnr",
    "quantizer",
    "step",
    "q_lmbda",
    "backend",
    "threads",
    "precision",
)


class QaftFileError(QaftError, OSError):
    """A ``.qaft`` file or an image that qaft cannot code (Pillow's callers catch
    ``OSError``)."""


@contextmanager
def _file_errors() -> Iterator[None]:
    """qaft's errors as :class:`QaftFileError` (the same message)."""
    try:
        yield
    except QaftFileError:
        raise
    except QaftError as exc:
        raise QaftFileError(str(exc)) from None


def _read(fp: IO[bytes]) -> bytes:
    try:  # a file's size first: a huge one is refused without reading a GiB of it
        start = fp.tell()
        size = fp.seek(0, os.SEEK_END) - start
        fp.seek(start)
    except (OSError, AttributeError, ValueError):  # not seekable: the bounded read decides
        size = 0
    if size > MAX_STREAM_BYTES:
        raise QaftFileError(f"over the {MAX_STREAM_BYTES:,}-byte limit of a .qaft file")
    data = fp.read(MAX_STREAM_BYTES + 1)
    if len(data) > MAX_STREAM_BYTES:
        raise QaftFileError(f"over the {MAX_STREAM_BYTES:,}-byte limit of a .qaft file")
    return data


@functools.lru_cache(maxsize=CACHED_MODELS)
def _bundled(name: str, backend: str, threads: int, precision: str):
    """A bundled model, loaded once per process and settings.  Only bundled models: a model
    folder given by path may change on disk between two saves."""
    from qaft.runtime.api import load

    return load(name, backend=backend, threads=threads, precision=precision)


def _accept(prefix: bytes) -> bool:
    return prefix[: len(MAGIC)] == MAGIC


class QaftImageFile(ImageFile.ImageFile):
    """A ``.qaft`` file opened by Pillow: the header read at open, decoded at ``load()``."""

    format = FORMAT
    format_description = "qaft learned image codec"

    def _open(self) -> None:
        from qaft.runtime.api import info

        with _file_errors():
            about = info(_read(self.fp))
        self._size = (about["width"], about["height"])
        self._mode = "RGB"
        self.info["qaft"] = about
        self.tile = [ImageFile._Tile(FORMAT, (0, 0, *self._size), 0, None)]


class QaftDecoder(ImageFile.PyDecoder):
    """Decodes the whole stream (read from the file, from its start) into the image."""

    _pulls_fd = True

    def decode(self, buffer: bytes | Image.SupportsArrayInterface) -> tuple[int, int]:
        """Reads the stream and sets the decoded pixels; (-1, 0): done, no error."""
        from qaft.runtime.api import not_bundled
        from qaft.runtime.codec import read_header
        from qaft.runtime.zoo import bundled_name, model_path

        assert self.fd is not None
        with _file_errors():
            data = _read(self.fd)
            fingerprint = read_header(data).fingerprint
            name = bundled_name(fingerprint)
            if name is None:
                raise not_bundled(fingerprint)
            model_path(name)  # a bundled model that is not installed: the line that says so
            rgb = _bundled(name, "auto", 0, "auto").decompress(data)
        self.set_as_raw(rgb.tobytes())
        return -1, 0


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    from qaft.runtime.api import choose_model, compress
    from qaft.runtime.image import rgb_array
    from qaft.runtime.zoo import is_bundled_name

    options = {k: im.encoderinfo[k] for k in SAVE_OPTIONS if k in im.encoderinfo}
    label = filename.decode() if isinstance(filename, bytes) else filename
    with _file_errors():
        image = rgb_array(im, label or "image")
        choice = {k: options.get(k) for k in ("model", "quality", "target_bpp", "target_psnr")}
        spec = choose_model(**choice, quantizer=options.get("quantizer"))
        running = (
            options.get("backend", "auto"),
            options.get("threads", 0),
            options.get("precision", "auto"),
        )
        # only plain settings are cache keys; anything else gets load()'s own error
        plain = all(isinstance(v, str | int) and not isinstance(v, bool) for v in running)
        if isinstance(spec, str) and is_bundled_name(spec) and plain:
            loaded = _bundled(spec, *running)
            coding = {k: options.get(k) for k in ("quantizer", "step", "q_lmbda")}
            data = loaded.compress(image, **coding)
        else:  # a model folder, or a target that chooses per image
            data = compress(image, **options)
    fp.write(data)


def register() -> None:
    """Registers the format with Pillow (done at import; registering again changes
    nothing)."""
    Image.register_open(FORMAT, QaftImageFile, _accept)
    Image.register_decoder(FORMAT, QaftDecoder)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, EXTENSION)
    Image.register_mime(FORMAT, MIME)


register()

__all__ = ["FORMAT", "QaftDecoder", "QaftFileError", "QaftImageFile", "register"]
