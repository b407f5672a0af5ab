"""The .qaft container: layout, checksum and validation."""

import struct

import pytest

from qaft.runtime.container import ContainerError, Header, pack, unpack


def _example() -> bytes:
    return pack(Header(0, b"12345678", 512, 768), [b"zz", b"", b"yyyy", b"\x01\x00\x00\x00"])


def test_pack_unpack_roundtrip():
    header, sections = unpack(_example())
    assert header == Header(0, b"12345678", 512, 768)
    assert sections == [b"zz", b"", b"yyyy", b"\x01\x00\x00\x00"]


def test_header_layout_is_as_documented():
    data = _example()
    assert data[:4] == b"QAFT" and data[4] == 3 and data[5] == 0
    assert data[8:16] == b"12345678"
    assert struct.unpack_from("<II", data, 16) == (512, 768)
    assert struct.unpack_from("<f", data, 24) == (1.0,)
    assert data[28] == 4


@pytest.mark.parametrize("cut", [0, 1, 10, 29, 40, -1])
def test_truncation_is_detected(cut):
    with pytest.raises(ContainerError):
        unpack(_example()[:cut])


def test_every_single_bit_flip_is_detected():
    data = _example()
    for i in range(len(data)):
        for bit in (0, 5):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(ContainerError):
                unpack(bytes(bad))


def test_wrong_magic_and_other_versions():
    data = bytearray(_example())
    data[0:4] = b"PNG!"
    with pytest.raises(ContainerError, match="magic"):
        unpack(bytes(data))
    newer = pack(Header(0, b"12345678", 4, 4, version=5, band_rows=1), [])
    with pytest.raises(ContainerError, match="version 5.*upgrade qaft"):
        unpack(newer)
    # 3 (exact trellis tables) is written, 2 is still read
    for version in (2, 3):
        assert unpack(pack(Header(0, b"12345678", 4, 4, version=version), []))[0].version == version
    # 4: banded, the band height where 2 and 3 have a reserved 0
    banded = unpack(pack(Header(0, b"12345678", 4, 4, version=4, band_rows=7), []))[0]
    assert (banded.version, banded.band_rows) == (4, 7)
    # Version 1 chose its probability tables from a float network: not decodable exactly.
    older = pack(Header(0, b"12345678", 4, 4, version=1), [])
    with pytest.raises(ContainerError, match="version 1.*predates exact entropy parameters"):
        unpack(older)


def test_absurd_dimensions_refused_before_allocation():
    with pytest.raises(ValueError):
        pack(Header(0, b"12345678", 1 << 20, 1 << 20), [])
