"""The ``.qaft`` container: header, length-prefixed sections, CRC-32 trailer.

Layout (little endian; see ``docs/bitstream.md``)::

    magic "QAFT" | version u8 | quantizer u8 | bands u16 | fingerprint 8B |
    height u32 | width u32 | step f32 | n_sections u8 | n_sections x length u32 |
    sections ... | crc32 u32 (of everything before it)
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from dataclasses import dataclass

from qaft.runtime.errors import FormatError, QaftError
from qaft.runtime.limits import limit_text, size_ok

MAGIC = b"QAFT"
#: 2: entropy parameters from the integer hyper-synthesis (exact on every backend).
#: 3: the trellis quantizers' tables derived without libm (the same bits on every machine).
#: tcq/tcq8 files are written as 3 and version-2 ones are read with the libm tables they
#: were written with; sq/rdoq files, decoded alike in both, are still written as 2 so that
#: earlier decoders read them.  Version-1 files chose their tables from a float network
#: and are not read.
#: 4: the latent coded in horizontal bands, one pair of y sections per band, the band
#: height (ẑ rows) in the header's u16 (0, reserved, before); written only for images of
#: more than one band, so that every other file keeps the version it had.
FORMAT_VERSION = 3
EXACT_TABLES_VERSION = 3
BANDED_VERSION = 4
READ_VERSIONS = (2, 3, 4)
#: The fixed part of the header, up to the section count (the layout above).
HEADER_STRUCT = struct.Struct("<4sBBH8sIIfB")
#: Leading bytes of the images a user may hand the decoder by mistake.
_IMAGE_MAGIC = [
    (b"\x89PNG", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"RIFF", "WebP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
    (b"GIF8", "GIF"),
]
#: Largest file read as a stream: 2^28 pixels at 32 bits per pixel, far above any real file
#: (a 16384 x 16384 photograph codes to tens of MB), so that a device or a huge file given
#: by mistake is refused instead of read into memory.
MAX_STREAM_BYTES = 1 << 30


class ContainerError(QaftError):
    """A file that is not an intact ``.qaft`` stream of a supported version."""


@dataclass(frozen=True)
class Header:
    """What a decoder learns before touching the entropy-coded sections."""

    quantizer_id: int
    fingerprint: bytes
    height: int
    width: int
    step: float = 1.0
    version: int = FORMAT_VERSION
    #: ẑ rows per band of a banded file (version 4); 0: one band, the whole latent.
    band_rows: int = 0


def pack(header: Header, sections: list[bytes]) -> bytes:
    """Serializes a header and its sections, appending the checksum."""
    if len(header.fingerprint) != 8:
        raise FormatError("fingerprint must be 8 bytes")
    if (header.band_rows > 0) != (header.version >= BANDED_VERSION):
        raise FormatError("a band height is written in banded files (version 4) only")
    if not size_ok(header.height, header.width):
        raise FormatError(f"unsupported image size {header.width}x{header.height}")
    head = HEADER_STRUCT.pack(
        MAGIC,
        header.version,
        header.quantizer_id,
        header.band_rows,
        header.fingerprint,
        header.height,
        header.width,
        header.step,
        len(sections),
    )
    body = head + struct.pack(f"<{len(sections)}I", *map(len, sections)) + b"".join(sections)
    return body + struct.pack("<I", zlib.crc32(body))


def unpack(data: bytes) -> tuple[Header, list[bytes]]:
    """Parses and verifies a container; any inconsistency raises :class:`ContainerError`."""
    if len(data) < HEADER_STRUCT.size + 4:
        raise ContainerError("file too short to be a .qaft stream")
    magic, version, qid, reserved, fp, h, w, step, n = HEADER_STRUCT.unpack_from(data)
    if magic != MAGIC:
        kind = next((k for m, k in _IMAGE_MAGIC if bytes(data[: len(m)]) == m), None)
        if kind:
            raise ContainerError(
                f"a {kind} image, not a .qaft file: `qaft-run compress` makes one from it"
            )
        raise ContainerError("not a .qaft file (bad magic number)")
    if version not in READ_VERSIONS:
        hint = (
            ": it predates exact entropy parameters; encode the image again"
            if version < READ_VERSIONS[0]
            else ": upgrade qaft"
        )
        readable = " and ".join(map(str, READ_VERSIONS))
        raise ContainerError(
            f"format version {version} is not supported (this qaft reads {readable}){hint}"
        )
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if zlib.crc32(data[:-4]) != crc:
        raise ContainerError("checksum mismatch: the file is corrupt or truncated")
    if version < BANDED_VERSION and reserved:
        raise ContainerError(f"reserved header field is {reserved}, not 0 (corrupt or newer file)")
    if version >= BANDED_VERSION and not reserved:
        raise ContainerError("a banded file with a band height of 0 rows")
    if not size_ok(h, w):
        raise ContainerError(f"declared image size {w}x{h} is out of range ({limit_text()})")
    pos = HEADER_STRUCT.size + 4 * n
    if pos > len(data) - 4:
        raise ContainerError("section table runs past the end of the file")
    lengths = struct.unpack_from(f"<{n}I", data, HEADER_STRUCT.size)
    if pos + sum(lengths) != len(data) - 4:
        raise ContainerError("section lengths do not add up to the file size")
    sections = []
    for length in lengths:
        sections.append(bytes(data[pos : pos + length]))
        pos += length
    return Header(qid, fp, h, w, step, version, reserved), sections


def read_stream(path: str | os.PathLike) -> bytes:
    """The bytes of the ``.qaft`` file at ``path``: a regular file of at most
    :data:`MAX_STREAM_BYTES`, opened without blocking (a FIFO or a device is refused at once,
    never waited on or read without end)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ContainerError(f"{path}: cannot open it ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ContainerError(f"{path}: not a regular file")
        if st.st_size > MAX_STREAM_BYTES:
            raise ContainerError(
                f"{path}: {st.st_size:,} bytes is over the {MAX_STREAM_BYTES:,}-byte limit "
                "of a .qaft file"
            )
        data = f.read(MAX_STREAM_BYTES + 1)
    if len(data) > MAX_STREAM_BYTES:
        raise ContainerError(f"{path}: grew past the {MAX_STREAM_BYTES:,}-byte limit while read")
    return data
