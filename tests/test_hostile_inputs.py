"""Hostile inputs and failures: every case gets a documented result or a one-line error,
no hang, no half-written file, nothing overwritten (docs/commands.md: "On bad input")."""

from __future__ import annotations

import io
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, start_cli, synthetic_image
from PIL import Image

from qaft.runtime import codec as C
from qaft.runtime.backends.onnx import onnx_codec
from qaft.runtime.container import ContainerError
from qaft.runtime.errors import QaftError
from qaft.runtime.image import MAX_IMAGE_PIXELS, ImageError, load_rgb
from qaft.runtime.model_dir import open_model_dir
from qaft.runtime.tools import fuzzing as fuzz_bitstreams


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, depth: int, color: int, rows: bytes | None) -> bytes:
    """A PNG written by hand: 16-bit RGB (Pillow cannot write it) or a header declaring a
    huge size with no pixel data behind it."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    idat = zlib.compress(rows) if rows is not None else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _jpeg_with_orientation(rgb: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def make_hostile_folder(root: Path) -> tuple[dict[str, tuple[int, int]], set[str]]:
    """Writes every kind of input of the issue; returns {good file: (h, w) expected after
    loading} and the names of the files that must be refused."""
    root.mkdir(parents=True, exist_ok=True)
    rgb = synthetic_image(24, 40, 3)
    good: dict[str, tuple[int, int]] = {}

    def save(name, im, **kw):
        im.save(root / name, **kw)
        good[name] = (im.size[1], im.size[0])

    save("gray.png", Image.fromarray(rgb[:, :, 0]))
    save("palette.png", Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE))
    rgba = np.dstack([rgb, np.linspace(0, 255, 40, dtype=np.uint8)[None].repeat(24, 0)])
    save("rgba.png", Image.fromarray(rgba))
    save("cmyk.jpg", Image.fromarray(rgb).convert("CMYK"), quality=95)
    save("one.png", Image.fromarray(rgb[:1, :1]))
    save("odd_7x13.png", Image.fromarray(synthetic_image(13, 7, 4)))
    save("odd_629x794.png", Image.fromarray(synthetic_image(794, 629, 5)))
    rgb16 = (rgb.astype(">u2") * 257 + 3).astype(">u2")
    rows = b"".join(b"\x00" + rgb16[r].tobytes() for r in range(24))
    (root / "rgb16.png").write_bytes(png_bytes(40, 24, 16, 2, rows))
    gray16 = rgb16[:, :, 1]
    rows = b"".join(b"\x00" + gray16[r].tobytes() for r in range(24))
    (root / "gray16.png").write_bytes(png_bytes(40, 24, 16, 0, rows))
    good.update({"rgb16.png": (24, 40), "gray16.png": (24, 40)})
    (root / "rotated.jpg").write_bytes(_jpeg_with_orientation(rgb, 6))  # 90° clockwise
    good["rotated.jpg"] = (40, 24)

    bad = {"empty.png", "text.jpg", "cut.png", "cut.jpg", "huge.png"}
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_text("not an image at all\n")
    full_png = io.BytesIO()
    Image.fromarray(synthetic_image(64, 64, 6)).save(full_png, format="PNG")
    (root / "cut.png").write_bytes(full_png.getvalue()[: len(full_png.getvalue()) // 2])
    full_jpg = io.BytesIO()
    Image.fromarray(synthetic_image(64, 64, 6)).save(full_jpg, format="JPEG")
    (root / "cut.jpg").write_bytes(full_jpg.getvalue()[: len(full_jpg.getvalue()) // 2])
    (root / "huge.png").write_bytes(png_bytes(16385, 16384, 8, 2, None))
    return good, bad


def test_each_kind_of_image_follows_its_documented_rule(tmp_path):
    good, bad = make_hostile_folder(tmp_path)
    for name, (h, w) in good.items():
        img = load_rgb(tmp_path / name)
        assert img.shape == (h, w, 3) and img.dtype == np.uint8, name
    rgb = synthetic_image(24, 40, 3)
    gray = load_rgb(tmp_path / "gray.png")
    assert (gray == rgb[:, :, :1]).all()  # R = G = B = the gray value
    np.testing.assert_array_equal(load_rgb(tmp_path / "rgba.png"), rgb)  # alpha dropped
    np.testing.assert_array_equal(load_rgb(tmp_path / "gray16.png")[:, :, 0], rgb[:, :, 1])
    np.testing.assert_array_equal(load_rgb(tmp_path / "rgb16.png"), rgb)  # top 8 bits
    pal = Image.open(tmp_path / "palette.png")
    np.testing.assert_array_equal(
        load_rgb(tmp_path / "palette.png"), np.asarray(pal.convert("RGB"))
    )
    # upright: the stored (24, 40) picture turned 90° clockwise, within JPEG's error
    turned = np.rot90(rgb, k=-1).astype(int)
    assert np.abs(load_rgb(tmp_path / "rotated.jpg").astype(int) - turned).mean() < 6
    assert np.abs(load_rgb(tmp_path / "cmyk.jpg").astype(int) - rgb).mean() < 6
    for name in bad:
        with pytest.raises(ImageError, match=name):
            load_rgb(tmp_path / name)


def test_oversized_image_is_refused_from_its_header_alone(tmp_path):
    """16385 x 16384 declares 805 MB of pixels; the file holds none. Refused at once."""
    path = tmp_path / "huge.png"
    path.write_bytes(png_bytes(16385, 16384, 8, 2, None))
    t0 = time.perf_counter()
    with pytest.raises(ImageError, match=f"{MAX_IMAGE_PIXELS:,}-pixel limit"):
        load_rgb(path)
    assert time.perf_counter() - t0 < 1.0
    # the limit itself passes the header check (and then fails here on the missing data)
    path.write_bytes(png_bytes(16384, 16384, 8, 2, None))
    with pytest.raises(ImageError, match="not a readable image"):
        load_rgb(path)


def test_batch_over_a_messy_folder(model_dir, tmp_path):
    """Every good file compressed and decoded back at its size; every bad one named once;
    exit status 1; nothing written for the bad ones."""
    good, bad = make_hostile_folder(tmp_path / "in")
    out, back = tmp_path / "out", tmp_path / "back"
    r = run_cli("qaft-run", "compress", str(tmp_path / "in"), "--model", str(model_dir),
                "--out", str(out), "--threads", "1", "--jobs", "2")  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"compressed {len(good)}," in r.stdout and f"failed {len(bad)}" in r.stdout
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert sorted(Path(e.split(": ")[1]).name for e in errors) == sorted(bad)
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(n).stem + ".qaft" for n in good)
    r = run_cli("qaft-run", "decompress", str(out), "--model", str(model_dir), "--out",
                str(back), "--threads", "1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    for name, (h, w) in good.items():
        assert Image.open(back / (Path(name).stem + ".png")).size == (w, h)


@pytest.fixture(scope="module")
def ort_codec(model_dir):
    return onnx_codec(open_model_dir(model_dir), "cpu", 1)


def test_truncation_at_every_length_and_zero_length(ort_codec):
    data = C.encode(ort_codec, synthetic_image(40, 56, 1), "tcq").data
    for n in range(len(data)):
        with pytest.raises(ContainerError):
            C.decode(ort_codec, data[:n])


def test_another_models_file_is_refused(ort_codec, tiny_codec, tmp_path):
    import dataclasses

    other = dataclasses.replace(
        tiny_codec, model=dataclasses.replace(tiny_codec.model, fingerprint=b"12345678")
    )
    data = C.encode(other, synthetic_image(32, 32, 2)).data
    with pytest.raises(C.ModelMismatchError, match="written by model"):
        C.decode(ort_codec, data)


def test_fuzzed_streams_never_crash(ort_codec):
    """A small version of runtime/tools/fuzzing.py (10,000 mutants there)."""
    images = [synthetic_image(40, 56, 1), synthetic_image(64, 64, 2)]
    seeds = fuzz_bitstreams.seed_files(ort_codec, images)
    outcomes, _, crashes, slowest = fuzz_bitstreams.fuzz(ort_codec, seeds, 400, seed=5)
    assert outcomes["crash"] == 0, crashes
    assert outcomes["slow"] == 0 and slowest < 10
    assert outcomes["refused"] > 300


def test_corrupt_file_gives_one_line_and_no_output(model_dir, ort_codec, tmp_path):
    data = bytearray(C.encode(ort_codec, synthetic_image(40, 56, 1)).data)
    data[len(data) // 2] ^= 0x10
    (tmp_path / "bad.qaft").write_bytes(bytes(data))
    (tmp_path / "zero.qaft").write_bytes(b"")
    r = run_cli("qaft-run", "decompress", str(tmp_path / "bad.qaft"), str(tmp_path / "zero.qaft"),
                "--model", str(model_dir), "--out", str(tmp_path / "o"))  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "checksum mismatch" in r.stderr and "too short" in r.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    r = run_cli("qaft-run", "info", str(tmp_path / "bad.qaft"))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1


def test_quantizer_settings_out_of_range_are_one_line_errors(model_dir, image_dir, tmp_path):
    for opt in (["--step", "0"], ["--step", "nan"], ["--q-lmbda", "-1"]):
        r = run_cli("qaft-run", "compress", str(image_dir), "--model", str(model_dir),
                    "--quantizer", "tcq", *opt, "--out", str(tmp_path / "o"))  # fmt: skip
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) <= 2  # the model line, then the error


def test_existing_outputs_are_never_overwritten_without_force(model_dir, image_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "img0.qaft"
    mine.write_bytes(b"the user's own file")
    r = run_cli("qaft-run", "compress", str(image_dir), "--model", str(model_dir),
                "--out", str(out), "--threads", "1")  # fmt: skip
    assert r.returncode == 1 and "compressed 2," in r.stdout and "img0.qaft exists" in r.stderr
    assert mine.read_bytes() == b"the user's own file"
    # --force replaces stale outputs of qaft-run, never a file it did not write
    r = run_cli("qaft-run", "compress", str(image_dir), "--model", str(model_dir),
                "--out", str(out), "--threads", "1", "--force")  # fmt: skip
    assert r.returncode == 1 and mine.read_bytes() == b"the user's own file"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_batch_leaves_only_whole_files_and_resumes(model_dir, tmp_path, sig):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(40):
        Image.fromarray(synthetic_image(192, 256, i)).save(src / f"{i:02d}.png")
    exe = Path(sys.executable).parent / "qaft-run"
    args = [str(exe), "compress", str(src), "--model", str(model_dir), "--out", str(out),
            "--threads", "1", "--jobs", "2"]  # fmt: skip
    proc = start_cli(*args, wait_for=(out, "*.qaft", 3))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    written = sorted(out.glob("*.qaft"))
    assert 3 <= len(written) < 40
    assert sorted(out.iterdir()) == written  # no temporary file left behind
    codec = onnx_codec(open_model_dir(model_dir), "cpu", 1)
    for f in written:  # every file that exists is whole
        C.decode(codec, f.read_bytes())
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and f"skipped {len(written)} up to date" in r.stdout
    assert len(list(out.glob("*.qaft"))) == 40


def test_a_folder_of_generated_images_round_trips_with_two_jobs(model_dir, tmp_path):
    """The CI-sized version of benchmarks/load.py (1,000 images there, memory tracked)."""
    src, out, back = tmp_path / "in", tmp_path / "out", tmp_path / "back"
    src.mkdir()
    for i in range(60):
        Image.fromarray(synthetic_image(32 + i % 5 * 8, 48 + i % 7 * 8, i)).save(src / f"{i}.png")
    # ONNX Runtime's networks: the pixels are compared with its reconstruction below
    r = run_cli("qaft-run", "compress", str(src), "--model", str(model_dir), "--out", str(out),
                "--jobs", "2", "--threads", "1", "--backend", "cpu")  # fmt: skip
    assert r.returncode == 0 and "compressed 60," in r.stdout
    r = run_cli("qaft-run", "decompress", str(out), "--out", str(back), "--jobs", "2",
                "--model", str(model_dir), "--threads", "1", "--backend", "cpu")  # fmt: skip
    assert r.returncode == 0 and "decompressed 60," in r.stdout
    codec = onnx_codec(open_model_dir(model_dir), "cpu", 1)
    for i in (0, 17, 59):  # decoded files equal what the encoder reconstructs
        img = load_rgb(src / f"{i}.png")
        enc = C.encode(codec, img, reconstruct=True)
        np.testing.assert_array_equal(load_rgb(back / f"{i}.png"), enc.reconstruction)


def test_bad_input_never_raises_anything_but_qaft_errors(ort_codec):
    for junk in (b"", b"QAFT", b"\x00" * 64, bytes(range(256)) * 4):
        with pytest.raises(QaftError):
            C.decode(ort_codec, junk)


def test_tiled_transforms_equal_the_whole_frame(ort_codec):
    """Large images run in tiles; with the documented margins the result is the same."""
    from qaft.runtime import tiling

    img = C.pad_image(synthetic_image(200, 328, 8))
    y0, z0 = tiling.analyze(ort_codec.networks.analysis, img)
    y1, z1 = tiling.analyze(ort_codec.networks.analysis, img, tile=128)
    np.testing.assert_allclose(y1, y0, atol=1e-5)
    np.testing.assert_allclose(z1, z0, atol=1e-5)
    y_hat = np.round(y0)
    whole = tiling.synthesize(ort_codec.networks.synthesis, y_hat, 200, 328)
    tiled = tiling.synthesize(ort_codec.networks.synthesis, y_hat, 200, 328, tile=4)
    assert np.abs(whole.astype(int) - tiled).max() <= 1
    narrow = tiling.synthesize(ort_codec.networks.synthesis, y_hat, 200, 328, tile=4, margin=0)
    assert np.abs(whole.astype(int) - narrow).max() > 1  # the margin is what makes it exact


def test_thin_strips_count_by_their_padded_size(tmp_path, ort_codec):
    """1 x 2^28 holds 2^28 pixels but 64 x 2^28 once padded: refused on both sides."""
    path = tmp_path / "strip.png"
    path.write_bytes(png_bytes(1 << 28, 1, 8, 2, None))
    with pytest.raises(ImageError, match="after padding"):
        load_rgb(path)
    from qaft.runtime import container

    data = bytearray(C.encode(ort_codec, synthetic_image(40, 56, 1)).data)
    struct.pack_into("<II", data, 16, 1, 1 << 28)  # height 1, width 2^28
    with pytest.raises(ContainerError, match="out of range"):
        C.decode(ort_codec, fuzz_bitstreams.fix_checksum(bytes(data)))
    with pytest.raises(ValueError):
        container.pack(container.Header(0, b"12345678", 1, 1 << 28), [])


def test_files_with_many_different_steps_keep_the_table_cache_bounded(ort_codec):
    from qaft.runtime.model_tables import MAX_DERIVED
    from qaft.runtime.quantizers import QuantizerParams

    img = synthetic_image(32, 32, 3)
    for i in range(MAX_DERIVED + 8):
        params = QuantizerParams(0.5 + i / 64, 0.1)
        data = C.encode(ort_codec, img, "tcq", params).data
        C.decode(ort_codec, data)
    assert len(ort_codec.model.tables._derived) <= MAX_DERIVED
