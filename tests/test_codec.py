"""Real round trips: image -> .qaft file on disk -> image, through the PyTorch backend."""

import numpy as np
import pytest
from conftest import KODAK, synthetic_image

from qaft.runtime import codec as C
from qaft.runtime.codec import ModelMismatchError
from qaft.runtime.container import ContainerError


@pytest.mark.parametrize("shape", [(64, 64), (96, 128), (7, 13), (1, 1), (70, 131)])
def test_roundtrip_file_indices_and_pixels_identical(tiny_codec, tmp_path, shape):
    img = synthetic_image(*shape)
    enc = C.encode(tiny_codec, img, reconstruct=True)
    f = tmp_path / "x.qaft"
    f.write_bytes(enc.data)
    dec = C.decode(tiny_codec, f.read_bytes())
    assert np.array_equal(dec.y_indices, enc.y_indices)
    assert np.array_equal(dec.z_indices, enc.z_indices)
    assert dec.image.shape == img.shape
    assert np.array_equal(dec.image, enc.reconstruction)


def test_file_of_another_model_is_refused(tiny_codec):
    enc = C.encode(tiny_codec, synthetic_image(64, 64))
    other = C.Codec(tiny_codec.networks, tiny_codec.hyper, tiny_codec.tables, b"\x00" * 8)
    with pytest.raises(ModelMismatchError, match="another model|not by this one"):
        C.decode(other, enc.data)


def test_corrupt_file_is_refused(tiny_codec):
    data = bytearray(C.encode(tiny_codec, synthetic_image(64, 64)).data)
    data[len(data) // 2] ^= 0x10
    with pytest.raises(ContainerError):
        C.decode(tiny_codec, bytes(data))


def test_bad_image_arrays_are_refused(tiny_codec):
    from qaft.runtime.errors import QaftError

    with pytest.raises(QaftError):
        C.encode(tiny_codec, np.zeros((8, 8), np.uint8))
    with pytest.raises(QaftError):
        C.encode(tiny_codec, np.zeros((8, 8, 3), np.uint8), quantizer="nope")


@pytest.mark.skipif(not KODAK.is_dir(), reason="../shared/data/kodak is not present")
def test_kodak_image_roundtrip(tiny_codec):
    from qaft.runtime.image import load_rgb

    img = load_rgb(KODAK / "kodim23.png")
    enc = C.encode(tiny_codec, img, reconstruct=True)
    dec = C.decode(tiny_codec, enc.data)
    assert np.array_equal(dec.y_indices, enc.y_indices)
    assert np.array_equal(dec.image, enc.reconstruction)
