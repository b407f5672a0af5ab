"""The Python API (`qaft.runtime.load/compress/decompress/info`) and the Pillow plugin
(`qaft.pillow`): the bytes `qaft-run` writes, its one-line errors, concurrent use of one
loaded codec, and the README's Python blocks as written.  No PyTorch needed."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli, synthetic_image
from PIL import Image

import qaft.pillow  # noqa: F401
import qaft.runtime as qr
from qaft.runtime import api, container
from qaft.runtime.errors import QaftError
from qaft.runtime.image import load_rgb


@pytest.fixture()
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(synthetic_image(48, 72, 3)).save(path)
    return path


@pytest.fixture(scope="module")
def q0():
    # The default backend, as qr.decompress's and the Pillow plugin's that the tests compare
    # pixels with (a float synthesis on another backend may differ by a grey level; auto is
    # OpenVINO where it is installed).
    return qr.load("q0")


def qaft_run_compress(src: Path, dest: Path, *options: str) -> bytes:
    r = run_cli("qaft-run", "compress", str(src), "-o", str(dest), "-q", *options)
    assert r.returncode == 0, r.stderr
    return dest.read_bytes()


def test_load_compress_decompress_info(q0, photo):
    rgb = load_rgb(photo)
    data = q0.compress(rgb)
    assert data[:4] == b"QAFT" and q0.name == "q0"
    out = q0.decompress(data)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.array_equal(qr.decompress(data), out)  # the model the header names
    assert np.array_equal(qr.decompress(bytearray(data), model="q0"), out)
    about = qr.info(data)
    h = container.unpack(data)[0]
    assert about == {
        "bytes": len(data),
        "format_version": h.version,
        "width": 72,
        "height": 48,
        "bpp": 8 * len(data) / (48 * 72),
        "quantizer": "sq",
        "step": 1.0,
        "model_fingerprint": h.fingerprint.hex(),
        "bundled_model": "q0",
    }
    assert sorted(qr.__dir__()) == sorted(set(qr.__dir__())) and "load" in dir(qr)


@pytest.mark.parametrize(
    "flags, kwargs",
    [
        (["--model", "q0"], {"model": "q0"}),
        (["--quality", "1", "--quantizer", "tcq"], {"quality": 1, "quantizer": "tcq"}),
        (
            ["--model", "q0", "--quantizer", "tcq", "--step", "0.8"],
            {"model": "q0", "quantizer": "tcq", "step": 0.8},
        ),
        (["--target-bpp", "0.9"], {"target_bpp": 0.9}),
    ],
)
def test_compress_writes_the_bytes_of_qaft_run(photo, tmp_path, flags, kwargs):
    expected = qaft_run_compress(photo, tmp_path / "cli.qaft", *flags)
    assert qr.compress(load_rgb(photo), **kwargs) == expected
    if "model" in kwargs:
        codec = qr.load(kwargs["model"])
        rest = {k: v for k, v in kwargs.items() if k != "model"}
        assert codec.compress(load_rgb(photo), **rest) == expected


def test_decompress_gives_the_pixels_of_qaft_run(q0, photo, tmp_path):
    data = qaft_run_compress(photo, tmp_path / "a.qaft", "--model", "q0")
    r = run_cli("qaft-run", "decompress", str(tmp_path / "a.qaft"), "-o", str(tmp_path / "a.png"))
    assert r.returncode == 0, r.stderr
    assert np.array_equal(qr.decompress(data), load_rgb(tmp_path / "a.png"))


RGB = synthetic_image(32, 40, 1)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: qr.compress(5), "expected an (H, W, 3) uint8 NumPy array, not int"),
        (lambda: qr.compress(RGB / 255.0), "floating-point image (float64)"),
        (lambda: qr.compress(RGB.astype(np.uint16) << 8), "uint16 image: expected uint8"),
        (lambda: qr.compress(RGB[..., 0]), "expected an (H, W, 3) RGB image, got shape"),
        (lambda: qr.compress(RGB, model="q0", quality=1), "model and quality each choose"),
        (lambda: qr.compress(RGB, target_bpp=1, step=0.7), "step and q_lmbda are what a target"),
        (lambda: qr.compress(RGB, target_psnr=-1), "target_psnr must be a positive number"),
        (lambda: qr.compress(RGB, quality="3"), "quality must be an integer"),
        (lambda: qr.compress(RGB, quality=9), "no bundled model of quality 9"),
        (lambda: qr.compress(RGB, model="q0", quantizer="zq"), "unknown quantizer 'zq'"),
        (lambda: qr.compress(RGB, model="q0", step="big"), "step must be a number"),
        (lambda: qr.load("q99"), "unknown model 'q99'"),
        (lambda: qr.load(3), "a model is a bundled model's name or a folder's path, not int"),
        (lambda: qr.load(""), "a model is a bundled model's name or a folder's path, not ''"),
        (lambda: qr.load("q0", backend="gpu"), "unknown backend 'gpu'"),
        (lambda: qr.load("q0", precision="fp8"), "unknown precision 'fp8'"),
        (lambda: qr.load("q0", threads=2.0), "threads must be an integer, not 2.0"),
        (lambda: qr.load("q0", threads=True), "threads must be an integer, not True"),
        (lambda: qr.decompress(5), "expected the bytes of a .qaft file, not int"),
        (lambda: qr.decompress("photo.qaft"), "not a path: read it first"),
        (lambda: qr.decompress(b"\x89PNG\r\n" + bytes(40)), "a PNG image, not a .qaft file"),
        (lambda: qr.info(b"QAFT"), "file too short to be a .qaft stream"),
        (lambda: qr.compress(RGB, target_bpp=float("inf")), "target_bpp must be a positive"),
        (lambda: qr.compress(RGB, target_psnr=float("nan")), "target_psnr must be a positive"),
        (lambda: qr.compress(RGB[:0], model="q0"), "a 40x0 image is empty"),
    ],
)
def test_wrong_arguments_are_one_line_errors(call, message):
    with pytest.raises(QaftError) as exc:
        call()
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_numpy_scalars_are_numbers(q0):
    """A step or target computed with NumPy (np.float32) codes as the same Python float."""
    assert q0.compress(RGB, quantizer="tcq", step=np.float32(0.5)) == q0.compress(
        RGB, quantizer="tcq", step=0.5
    )
    with pytest.raises(QaftError, match="step must be a number, not np.True_"):
        q0.compress(RGB, quantizer="tcq", step=np.bool_(True))


def test_a_model_that_is_not_bundled_is_named_and_refused(q0):
    header, sections = container.unpack(q0.compress(RGB))
    other = container.Header(header.quantizer_id, bytes(8), header.height, header.width)
    data = container.pack(other, sections)
    assert qr.info(data)["bundled_model"] is None
    with pytest.raises(QaftError, match="which is not bundled: pass model="):
        qr.decompress(data)
    with pytest.raises(QaftError, match="not by this one"):
        q0.decompress(data)


def test_a_quantizer_the_model_was_not_finetuned_for_warns():
    with pytest.warns(UserWarning, match="q1-tcq was finetuned for tcq; coding with sq"):
        qr.load("q1-tcq").compress(RGB, quantizer="sq")
    with pytest.warns(UserWarning, match="step is for"):
        qr.load("q0").compress(RGB, quantizer="sq", step=0.5)


def test_threads_may_be_any_integer_type():
    assert qr.load("q0", threads=np.int64(1)).decompress(qr.compress(RGB, model="q0")).shape


def test_threads_share_one_codec():
    """Concurrent calls on a fresh codec (its derived tables built while the threads race
    for them) give what the same calls give one at a time."""
    images = [synthetic_image(32 + 16 * (i % 3), 48, i) for i in range(8)]
    options = [{}, {"quantizer": "tcq"}, {"quantizer": "tcq", "step": 0.5}, {"quantizer": "rdoq"}]
    jobs = [(img, options[i % len(options)]) for i, img in enumerate(images)]
    shared = qr.load("q0", threads=1)
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda job: shared.compress(job[0], **job[1]), jobs))
        decoded = list(pool.map(shared.decompress, together))
    alone = qr.load("q0", threads=1)
    assert together == [alone.compress(img, **opts) for img, opts in jobs]
    assert all(np.array_equal(d, alone.decompress(b)) for d, b in zip(decoded, together))


# --- the Pillow plugin ---------------------------------------------------------------


def test_pillow_opens_from_the_header_and_decodes_at_load(q0, tmp_path, monkeypatch):
    data = q0.compress(RGB)
    path = tmp_path / "x.qaft"
    path.write_bytes(data)

    def refuse(*args, **kwargs):
        raise AssertionError("decoded at open")

    with monkeypatch.context() as m:
        m.setattr(api, "decompress", refuse)
        im = Image.open(path)
        assert (im.format, im.size, im.mode) == ("QAFT", (40, 32), "RGB")
        assert im.info["qaft"]["bundled_model"] == "q0" and im.get_format_mimetype()
    im.load()
    assert np.array_equal(np.asarray(im), q0.decompress(data))
    im.close()
    with Image.open(io.BytesIO(data)) as im2:
        assert np.array_equal(np.asarray(im2.convert("RGB")), q0.decompress(data))


def test_pillow_save_writes_the_bytes_of_qaft_run(photo, tmp_path):
    expected = qaft_run_compress(photo, tmp_path / "cli.qaft", "--quality", "0")
    with Image.open(photo) as im:
        im.save(tmp_path / "pil.qaft", quality=0)
        buf = io.BytesIO()
        im.save(buf, format="QAFT", model="q0", quantizer="sq")
    assert (tmp_path / "pil.qaft").read_bytes() == expected == buf.getvalue()
    with Image.open(tmp_path / "pil.qaft") as back:
        assert np.array_equal(np.asarray(back), qr.decompress(expected))
    # an RGBA image loses its alpha as qaft-run drops it
    rgba = np.dstack([synthetic_image(48, 72, 3), np.full((48, 72), 7, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    expected = qaft_run_compress(tmp_path / "rgba.png", tmp_path / "rgba.qaft", "--model", "q0")
    buf = io.BytesIO()
    Image.open(tmp_path / "rgba.png").save(buf, format="QAFT", model="q0")
    assert buf.getvalue() == expected


def test_pillow_errors_are_qaft_errors_and_os_errors(q0, tmp_path):
    data = q0.compress(RGB)
    with pytest.raises(OSError, match="checksum mismatch") as exc:
        Image.open(io.BytesIO(data[:-1] + bytes([data[-1] ^ 1])))
    assert isinstance(exc.value, QaftError)
    with pytest.raises(OSError, match="no bundled model of quality 85"):
        Image.fromarray(RGB).save(tmp_path / "bad.qaft", quality=85)
    assert not (tmp_path / "bad.qaft").exists()  # Pillow removes what it created


def test_pillow_refuses_a_huge_file_from_its_size_without_reading_it(q0, tmp_path):
    import tracemalloc

    big = tmp_path / "big.qaft"
    with open(big, "wb") as f:  # sparse: a valid header, then over a GiB of nothing
        f.write(q0.compress(RGB)[:64])
        f.truncate(container.MAX_STREAM_BYTES + 1)
    tracemalloc.start()
    with pytest.raises(qaft.pillow.QaftFileError, match="over the 1,073,741,824-byte limit"):
        Image.open(big)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 << 20


def test_pillow_save_of_a_mode_without_rgb_is_a_qaft_error():
    with pytest.raises(qaft.pillow.QaftFileError, match="image: mode La cannot be read as RGB"):
        Image.new("La", (8, 8)).save(io.BytesIO(), format="QAFT")


def test_readme_python_blocks_run_as_written(photo):
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert any("qr.load" in b for b in blocks) and any("qaft.pillow" in b for b in blocks)
    r = subprocess.run(
        [sys.executable, "-c", "\n".join(blocks)],
        cwd=photo.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert (photo.parent / "photo.qaft").read_bytes()[:4] == b"QAFT"


def test_pillow_loads_a_bundled_model_once_for_many_images(q0, tmp_path, monkeypatch):
    import qaft.pillow as plugin

    plugin._bundled.cache_clear()
    calls = []
    real = api.load
    monkeypatch.setattr(api, "load", lambda *a, **k: calls.append(a) or real(*a, **k))
    data = q0.compress(RGB)
    for i in range(3):
        with Image.open(io.BytesIO(data)) as im:
            assert np.array_equal(np.asarray(im), q0.decompress(data))
        Image.fromarray(RGB).save(tmp_path / f"{i}.qaft", model="q0")
        assert (tmp_path / f"{i}.qaft").read_bytes() == data
    assert calls == [("q0",)]
    plugin._bundled.cache_clear()
