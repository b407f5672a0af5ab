"""Real round trips: image -> .qaft file on disk -> image, through the PyTorch backend."""

from dataclasses import replace

import numpy as np
import pytest
from conftest import KODAK, synthetic_image

from qaft.runtime import codec as C
from qaft.runtime.codec import ModelMismatchError
from qaft.runtime.container import ContainerError, pack, unpack


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
    other = C.Codec(tiny_codec.networks, replace(tiny_codec.model, fingerprint=b"\x00" * 8))
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


def test_cli_quantizer_choices_are_the_registry():
    """Every --quantizer option offers the registry's quantizers (tuning: those with a grid
    to search), so a quantizer added to QUANTIZERS appears everywhere at once."""
    import click

    from qaft.cli import develop, run
    from qaft.runtime.quantizers import QUANTIZERS

    tunable = [n for n, q in QUANTIZERS.items() if q.grid.tunable]
    assert tunable == ["rdoq", "tcq", "tcq8"]
    seen = 0
    for group in (develop.main, run.main):
        for name, command in group.commands.items():
            for p in command.params:
                if "--quantizer" in p.opts:
                    assert isinstance(p.type, click.Choice), name
                    want = tunable if name == "tune-quantizer" else list(QUANTIZERS)
                    assert list(p.type.choices) == want, name
                    seen += 1
    assert seen >= 4


def test_a_model_without_settings_gets_each_quantizers_fallback():
    from qaft.runtime.model import resolve_params
    from qaft.runtime.quantizers import QUANTIZERS

    for name, q in QUANTIZERS.items():
        assert resolve_params({}, name) == q.fallback
        assert resolve_params({}, name, 0.5, 0.25) == C.QuantizerParams(0.5, 0.25)


@pytest.mark.parametrize("quantizer", ["sq", "rdoq", "tcq", "tcq8"])
def test_banded_file_roundtrip_same_indices_as_one_band(tiny_codec, monkeypatch, quantizer):
    """A latent coded in bands (container version 4) decodes to the encoder's indices and
    pixels, and to the indices of one band: each band's prior is the whole frame's and the
    trellises stay within a band."""
    img = synthetic_image(200, 70)  # 4 rows of ẑ
    whole = C.encode(tiny_codec, img, quantizer)
    monkeypatch.setattr(C, "BAND_LATENTS", 1)  # one row of ẑ a band
    enc = C.encode(tiny_codec, img, quantizer, reconstruct=True)
    header, sections = unpack(enc.data)
    assert (header.version, header.band_rows, len(sections)) == (4, 1, 10)
    assert C.read_header(whole.data).version in (2, 3)
    assert np.array_equal(enc.y_indices, whole.y_indices)
    dec = C.decode(tiny_codec, enc.data)
    assert np.array_equal(dec.y_indices, enc.y_indices)
    assert np.array_equal(dec.image, enc.reconstruction)


def test_band_height_must_match_the_sections(tiny_codec, monkeypatch):
    monkeypatch.setattr(C, "BAND_LATENTS", 1)
    header, sections = unpack(C.encode(tiny_codec, synthetic_image(200, 70)).data)
    with pytest.raises(ContainerError, match="expected 6 sections, found 10"):
        C.decode(tiny_codec, pack(replace(header, band_rows=2), sections))
    with pytest.raises(ContainerError, match="one band"):
        C.decode(tiny_codec, pack(replace(header, band_rows=4), sections[:4]))
