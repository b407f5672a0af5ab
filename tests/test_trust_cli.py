"""What `qaft-run` does with users' files and with inputs that cost more than they carry:
nothing a user had is lost, and every input's cost is bounded (docs/robustness.md)."""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import start_cli, synthetic_image
from PIL import Image

from qaft.cli import outputs
from qaft.cli.run import main
from qaft.runtime import codec as C
from qaft.runtime import container
from qaft.runtime.backends.onnx import onnx_codec
from qaft.runtime.container import ContainerError
from qaft.runtime.image import ImageError, load_rgb
from qaft.runtime.model_dir import open_model_dir


def run(*args: str):
    """qaft-run in this process (the command itself runs on a worker thread, as in use)."""
    return CliRunner().invoke(main, [str(a) for a in args])


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


@pytest.fixture()
def photos(tmp_path) -> Path:
    d = tmp_path / "photos"
    d.mkdir()
    for i, (h, w) in enumerate([(40, 56), (32, 32), (24, 40)]):
        Image.fromarray(synthetic_image(h, w, i)).save(d / f"p{i}.png")
    return d


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def ort_codec(model_dir):
    return onnx_codec(open_model_dir(model_dir), "cpu", 1)


# 3: decoded images never overwrite originals ------------------------------------------------


def test_decompress_into_the_photos_folder_never_replaces_a_photo(model_dir, photos, tmp_path):
    packed = tmp_path / "packed"
    assert run("compress", photos, "--model", model_dir, "--out", packed).exit_code == 0
    before = snapshot(photos)
    for extra in ([], ["--force"]):
        r = run("decompress", packed, "--model", model_dir, "--out", photos, *extra)
        assert r.exit_code == 1 and "not written by qaft-run" in r.stderr
        assert len(errors(r)) == 3
        assert snapshot(photos) == before


def test_streams_beside_their_pngs_decode_without_touching_them(model_dir, photos):
    """`compress photos --out photos` then `decompress photos --out photos`: each p.qaft
    would become p.png, which is the photo it came from."""
    assert run("compress", photos, "--model", model_dir, "--out", photos).exit_code == 0
    before = snapshot(photos)
    r = run("decompress", photos, "--model", model_dir, "--out", photos, "--force")
    assert r.exit_code == 1 and snapshot(photos) == before


def demo_is_refused(model_dir, photos: Path, out: Path, why: str) -> None:
    """`demo --out OUT` stops with ``why`` and leaves OUT as it was."""
    before = snapshot(out)
    r = run("demo", "--data", photos, "--model", model_dir, "--out", out)
    assert r.exit_code == 1 and why in r.stderr
    assert snapshot(out) == before


def test_demo_never_writes_into_its_input_folder(model_dir, photos):
    demo_is_refused(model_dir, photos, photos, "images' own folder")


def test_demo_replaces_its_own_files_and_no_one_elses(model_dir, photos, tmp_path):
    out = tmp_path / "demo"
    assert run("demo", "--data", photos, "--model", model_dir, "--out", out).exit_code == 0
    assert run("demo", "--data", photos, "--model", model_dir, "--out", out).exit_code == 0
    (out / "p1.png").write_bytes(b"a user's picture")
    r = run("demo", "--data", photos, "--model", model_dir, "--out", out)
    assert r.exit_code == 1 and "not written by qaft-run" in r.stderr
    assert (out / "p1.png").read_bytes() == b"a user's picture"


@pytest.mark.parametrize("layout", ["two folders", "case"])
def test_two_inputs_for_one_output_stop_before_anything_is_written(
    model_dir, ort_codec, tmp_path, layout
):
    data = C.encode(ort_codec, synthetic_image(32, 32, 1)).data
    if layout == "two folders":
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        inputs = [tmp_path / "a" / "x.qaft", tmp_path / "b" / "x.qaft"]
    else:
        inputs = [tmp_path / "x.qaft", tmp_path / "x.QAFT"]
    for p in inputs:
        p.write_bytes(data)
    out = tmp_path / "out"
    (tmp_path / "y.qaft").write_bytes(data)
    r = run("decompress", *inputs, tmp_path / "y.qaft", "--model", model_dir, "--out", out)
    assert r.exit_code == 1 and len(errors(r)) == 2
    assert all("would all be written to" in e for e in errors(r))
    assert [p.name for p in out.iterdir()] == ["y.png"]


# 4: skipping by content, not by name ---------------------------------------------------------


def test_outputs_of_another_model_or_step_are_stale_not_skipped(
    model_dir, tiny_model_file, photos, tmp_path
):
    out = tmp_path / "packed"
    assert run("compress", photos, "--model", model_dir, "--out", out).exit_code == 0
    first = snapshot(out)
    r = run("compress", photos, "--model", model_dir, "--out", out)
    assert r.exit_code == 0 and "compressed 0, skipped 3 up to date" in r.stdout
    # other settings: named as stale, left alone without --force
    r = run("compress", photos, "--model", model_dir, "--out", out, "--quantizer", "tcq")
    assert r.exit_code == 1 and r.stderr.count("is stale") == 3
    assert snapshot(out) == first
    r = run("compress", photos, "--model", model_dir, "--out", out, "--quantizer", "tcq", "--force")
    assert r.exit_code == 0 and "compressed 3" in r.stdout
    assert all(container.unpack(b)[0].quantizer_id == 2 for b in snapshot(out).values())
    # a changed input makes its output stale
    time.sleep(0.01)
    Image.fromarray(synthetic_image(48, 48, 9)).save(photos / "p0.png")
    os.utime(photos / "p0.png", (time.time() + 5, time.time() + 5))
    r = run("compress", photos, "--model", model_dir, "--out", out, "--quantizer", "tcq")
    assert r.exit_code == 1 and "p0.qaft is stale" in r.stderr and "skipped 2" in r.stdout


def test_a_users_file_with_the_output_name_is_never_replaced(model_dir, photos, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "p0.qaft").write_bytes(b"the user's own file")
    for extra in ([], ["--force"]):
        r = run("compress", photos, "--model", model_dir, "--out", out, *extra)
        assert r.exit_code == 1 and "p0.qaft exists and was not written" in r.stderr
        assert (out / "p0.qaft").read_bytes() == b"the user's own file"
        assert (out / "p1.qaft").read_bytes()[:4] == b"QAFT"


def test_a_file_that_appears_after_the_scan_is_not_overwritten(tmp_path):
    dest = tmp_path / "x.qaft"
    dest.write_bytes(b"arrived meanwhile")
    with pytest.raises(FileExistsError):
        outputs.write(dest, b"QAFT new", replace=False)
    assert dest.read_bytes() == b"arrived meanwhile"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.qaft"]  # no temporary left
    outputs.write(dest, b"QAFT new", replace=True)
    assert dest.read_bytes() == b"QAFT new"


# 5: temporary files are unpredictable and never followed ----------------------------------


def test_planted_symlinks_are_never_followed(model_dir, photos, tmp_path):
    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_bytes(b"outside --out")
    for name in ["p0.qaft", *(f".p{i}.qaft.part{pid}" for i in range(3) for pid in range(9))]:
        (out / name).symlink_to(victim)
    r = run("compress", photos, "--model", model_dir, "--out", out, "--force")
    assert r.exit_code == 1 and "p0.qaft exists and was not written" in r.stderr
    assert victim.read_bytes() == b"outside --out"
    assert (out / "p0.qaft").is_symlink() and (out / "p1.qaft").read_bytes()[:4] == b"QAFT"
    dest = out / "new.qaft"
    dest.symlink_to(victim)
    with pytest.raises(FileExistsError):
        outputs.write(dest, b"QAFT", replace=False)
    assert victim.read_bytes() == b"outside --out"


# 6: one file's write error is that file's failure ------------------------------------------


def test_a_write_error_names_its_file_and_the_batch_goes_on(model_dir, photos, tmp_path):
    long = photos / ("n" * 240 + ".png")
    (photos / "p0.png").rename(long)
    out = tmp_path / "out"
    (out / "p1.qaft").mkdir(parents=True)  # a folder where an output goes
    r = run("compress", photos, "--model", model_dir, "--out", out)
    assert r.exit_code == 1 and "compressed 2," in r.stdout, r.output
    assert any("p1.png" in e and "p1.qaft" in e for e in errors(r))
    assert (out / (long.stem + ".qaft")).read_bytes()[:4] == b"QAFT"  # 245-byte name: fine


def test_a_full_disk_stops_the_batch_with_a_summary(model_dir, photos, tmp_path, monkeypatch):
    real, calls = outputs.write, []

    def full(dest, data, replace=False):
        calls.append(dest)
        if len(calls) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(dest))
        real(dest, data, replace)

    monkeypatch.setattr(outputs, "write", full)
    out = tmp_path / "out"
    r = run("compress", photos, "--model", model_dir, "--out", out)
    assert r.exit_code == 1 and "compressed 1," in r.stdout and len(calls) == 2
    assert "No space left" in r.stderr and "failed 1, not attempted 1" in r.stdout
    assert [p.name for p in out.iterdir()] == ["p0.qaft"]


# 7: the decoder's work is bounded by the data present --------------------------------------


def _forged(fp: bytes, h: int, w: int, sections: list[bytes], qid: int = 0) -> bytes:
    head = container.HEADER_STRUCT.pack(b"QAFT", container.FORMAT_VERSION, qid, 0, fp, h, w, 1.0, 4)
    body = head + struct.pack("<4I", *map(len, sections)) + b"".join(sections)
    return body + struct.pack("<I", __import__("zlib").crc32(body))


def test_a_49_byte_file_cannot_claim_16384_squared(ort_codec):
    data = _forged(ort_codec.model.fingerprint, 16384, 16384, [b""] * 4)
    assert len(data) == 49
    t0 = time.perf_counter()
    with pytest.raises(ContainerError, match="empty"):
        C.decode(ort_codec, data)
    assert time.perf_counter() - t0 < 1


@pytest.mark.parametrize("size", [(1024, 1024), (16384, 16384), (64, 1 << 22)])
def test_sections_that_cannot_carry_the_declared_size_are_refused(ort_codec, size):
    real = C.encode(ort_codec, synthetic_image(40, 56, 1)).data
    _, sections = container.unpack(real)
    t0 = time.perf_counter()
    with pytest.raises(ContainerError, match="cannot hold"):
        C.decode(ort_codec, _forged(ort_codec.model.fingerprint, *size, sections))
    assert time.perf_counter() - t0 < 1
    with pytest.raises(ContainerError, match="y section is empty"):
        C.decode(ort_codec, _forged(ort_codec.model.fingerprint, 40, 56, [*sections[:2], b"", b""]))


@pytest.fixture(scope="module")
def q0_codec():
    from qaft.runtime.zoo import model_path

    return onnx_codec(open_model_dir(model_path("q0")), "cpu", 1)


@pytest.mark.parametrize("quantizer", ["sq", "rdoq", "tcq", "tcq8"])
def test_a_y_section_too_short_for_its_latents_is_refused(q0_codec, quantizer):
    """A real z section (any size can be had for a few bytes per 64x64 block) under a y
    section of one word: the trellis decoder would read on past its data.  (A trained
    model: the random tiny one predicts scales so small that any y section is enough.)"""
    real = C.encode(q0_codec, np.zeros((256, 384, 3), np.uint8), quantizer).data
    header, sections = container.unpack(real)
    forged = container.pack(header, [*sections[:2], b"\0\0\0\0", b""])
    with pytest.raises(ContainerError, match="the y section .* cannot hold"):
        C.decode(q0_codec, forged)


def test_real_files_of_flat_and_busy_images_pass_the_bound(ort_codec, q0_codec):
    """The bound is a lower limit on what a range coder writes: real files, even of the
    cheapest pictures there are, stay above it."""
    for img in (
        np.zeros((300, 500, 3), np.uint8),
        np.full((128, 128, 3), 255, np.uint8),
        synthetic_image(200, 136, 4),
    ):
        for q in ("sq", "rdoq", "tcq", "tcq8"):
            for codec in (ort_codec, q0_codec):
                dec = C.decode(codec, C.encode(codec, img, q).data)
                assert dec.image.shape == img.shape


def test_an_image_that_needs_more_memory_than_there_is_is_refused(monkeypatch):
    from qaft.runtime import limits

    monkeypatch.setattr(limits, "available_memory", lambda: 2 << 30)
    limits.check_memory(8192, 8192, "encode")  # banded: about 0.8 GiB, fits
    with pytest.raises(C.QaftError, match=r"16384x16384 image needs about 3\.2 GiB to encode"):
        limits.check_memory(16384, 16384, "encode")
    limits.check_memory(4096, 4096, "encode-whole")  # about 0.9 GiB: fits
    with pytest.raises(C.QaftError, match=r"8192x8192 image needs about 3\.4 GiB to encode, "):
        limits.check_memory(8192, 8192, "encode-whole")


# 8: resources within bounds -------------------------------------------------------------------


@pytest.mark.parametrize(
    "opt", [["--threads", "100000"], ["--threads", "-1"], ["--jobs", "0"], ["--jobs", "-3"]]
)
def test_thread_and_job_counts_are_validated(photos, tmp_path, opt):
    r = run("compress", photos, "--out", tmp_path / "o", *opt)
    assert r.exit_code == 2 and "Invalid value" in r.output and not (tmp_path / "o").exists()


@pytest.mark.parametrize("opt", [["--repeat", "0"], ["--max-images", "0"]])
def test_bench_counts_are_validated(opt):
    r = run("bench", "--model", "q0", *opt)
    assert r.exit_code == 2 and "Invalid value" in r.output and r.exception.__class__ is SystemExit


def test_decoding_many_foreign_files_keeps_one_codec(model_dir, ort_codec, tmp_path, monkeypatch):
    import qaft.cli.run as run_module

    opened = []
    real = run_module._codec
    monkeypatch.setattr(run_module, "_codec", lambda *a, **k: opened.append(1) or real(*a, **k))
    data = bytearray(C.encode(ort_codec, synthetic_image(32, 32, 1)).data)
    rng = np.random.default_rng(0)
    for i in range(12):
        data[8:16] = rng.bytes(8)
        (tmp_path / f"{i}.qaft").write_bytes(bytes(data[:-4]) + struct.pack(
            "<I", __import__("zlib").crc32(bytes(data[:-4]))))  # fmt: skip
    r = run("decompress", tmp_path, "--model", model_dir, "--out", tmp_path / "o")
    assert r.exit_code == 1 and r.stderr.count("written by model") == 12
    assert len(opened) == 1
    r = run("decompress", tmp_path, "--out", tmp_path / "o")  # no --model: not bundled
    assert r.exit_code == 1 and r.stderr.count("not bundled") == 12 and len(opened) == 1


# 9: interrupts end any command within 2 s -------------------------------------------------


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_sigint_sigterm_and_sighup_end_a_busy_batch_at_once(model_dir, tmp_path, jobs):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(synthetic_image(1024, 1536, 0)).save(src / "0.png")
    for i in range(1, 60):  # one picture under many names: a long batch, cheaply made
        (src / f"{i}.png").symlink_to(src / "0.png")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        out = tmp_path / f"out-{sig}"
        proc = start_cli("qaft-run", "compress", src, "--model", model_dir, "--out", out,
                         "--jobs", jobs, "--threads", "1", "--force",
                         wait_for=(out, "*.qaft", 2))  # fmt: skip
        t0 = time.perf_counter()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        assert time.perf_counter() - t0 < 2, err
        assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
        written = list(out.iterdir())
        assert 2 <= len(written) < 60 and all(p.suffix == ".qaft" for p in written)
        for p in written:
            container.unpack(p.read_bytes())  # whole files only


# 11: odd inputs get one line ------------------------------------------------------------------


def test_info_refuses_devices_and_fifos_at_once(tmp_path):
    fifo = tmp_path / "pipe.qaft"
    os.mkfifo(fifo)
    for target in ("/dev/zero", fifo):
        t0 = time.perf_counter()
        r = run("info", target)
        assert r.exit_code == 1 and "not a regular file" in r.stderr
        assert time.perf_counter() - t0 < 2


def test_reserved_header_bytes_must_be_zero(ort_codec):
    data = bytearray(C.encode(ort_codec, synthetic_image(32, 32, 1)).data)
    struct.pack_into("<H", data, 6, 1)
    data[-4:] = struct.pack("<I", __import__("zlib").crc32(bytes(data[:-4])))
    with pytest.raises(ContainerError, match="reserved"):
        container.unpack(bytes(data))


def test_a_float_tiff_is_refused_not_turned_black(tmp_path):
    path = tmp_path / "hdr.tif"
    Image.fromarray(np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64)).save(path)
    with pytest.raises(ImageError, match="floating-point"):
        load_rgb(path)


# repeated attacks: what a second round found ---------------------------------------------


def test_demo_never_replaces_files_it_did_not_write(model_dir, photos, tmp_path):
    """`compress photos --out arch` then `demo --out arch`: the archive's streams are not
    the demo's, though they are .qaft files of qaft-run."""
    arch = tmp_path / "arch"
    assert run("compress", photos, "--model", model_dir, "--out", arch).exit_code == 0
    demo_is_refused(model_dir, photos, arch, "not written by qaft-run demo")


def test_json_results_never_replace_inputs_or_other_files(model_dir, photos, tmp_path):
    victim = tmp_path / "notes.txt"
    victim.write_text("mine")
    (tmp_path / "link.json").symlink_to(victim)
    before = snapshot(photos)
    for target in (photos / "p0.png", victim, tmp_path / "link.json"):
        r = run("eval", "--model", model_dir, "--data", photos, "--json", target)
        assert r.exit_code == 1 and len(errors(r)) == 1, r.output
        r = run("bench", "--model", model_dir, "--images", photos, "--max-images", "1", "--repeat",
                "1", "--json", target)  # fmt: skip
        assert r.exit_code == 1 and len(errors(r)) == 1, r.output
    assert snapshot(photos) == before and victim.read_text() == "mine"
    out = tmp_path / "rd.json"
    for _ in range(2):  # its own results file is replaced
        r = run("eval", "--model", model_dir, "--data", photos, "--json", out)
        assert r.exit_code == 0 and json.loads(out.read_text())["results"]["bpp"]


def test_an_input_replaced_by_an_older_picture_makes_its_output_stale(model_dir, photos, tmp_path):
    out = tmp_path / "out"
    assert run("compress", photos, "--model", model_dir, "--out", out).exit_code == 0
    st = os.stat(photos / "p1.png")
    Image.fromarray(synthetic_image(32, 32, 99)).save(photos / "p1.png")  # same size
    os.utime(photos / "p1.png", ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))  # `cp -p`
    r = run("compress", photos, "--model", model_dir, "--out", out)
    assert r.exit_code == 1 and "p1.qaft is stale" in r.stderr and "skipped 2" in r.stdout


def test_outputs_are_readable_as_the_umask_says(model_dir, photos, tmp_path):
    old = os.umask(0o022)
    try:
        assert run("compress", photos, "--model", model_dir, "--out", tmp_path / "o").exit_code == 0
    finally:
        os.umask(old)
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "o").iterdir()} == {0o644}


def test_a_symlinked_subfolder_in_out_is_not_written_through(model_dir, photos, tmp_path):
    (photos / "sub").mkdir()
    (photos / "p0.png").rename(photos / "sub" / "p0.png")
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "sub").symlink_to(elsewhere)
    r = run("compress", photos, "--recursive", "--model", model_dir, "--out", out)
    assert r.exit_code == 1 and "outside" in r.stderr and not list(elsewhere.iterdir())


def test_names_cannot_forge_error_lines_and_a_fifo_fails_alone(model_dir, photos, tmp_path):
    (photos / "p0.png").rename(photos / "a.png\nerror: fine.png: all good.png")
    os.mkfifo(tmp_path / "pipe.png")
    r = run("compress", photos, tmp_path / "pipe.png", "--model", model_dir, "--out",
            tmp_path / "o", "--force")  # fmt: skip
    assert r.exit_code == 1 and "compressed 3," in r.stdout
    assert errors(r) == [f"error: {tmp_path / 'pipe.png'}: not a regular file"]


def test_bench_on_an_empty_folder_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run("bench", "--model", "q0", "--baseline", "q0", "--images", tmp_path / "empty")
    assert r.exit_code == 1 and errors(r) == [f"error: no images to time in {tmp_path / 'empty'}"]


def test_an_os_error_is_path_and_reason_not_pythons_errno_text(tmp_path):
    r = run("bench", "--model", "q0", "--images", tmp_path / "nowhere")
    assert r.exit_code == 1
    assert errors(r) == [f"error: {tmp_path / 'nowhere'}: No such file or directory"]


def test_a_signal_during_start_up_ends_quietly_with_130(tmp_path):
    """From the console script's first line on (the interpreter's own start, under 0.1 s
    here, is before any of qaft's code: a signal there gets Python's default handling)."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(synthetic_image(512, 512, 0)).save(src / "0.png")
    for i in range(1, 30):  # seconds of work: the signal comes while it starts
        (src / f"{i}.png").symlink_to(src / "0.png")
    for sig, delay in ((signal.SIGINT, 0.12), (signal.SIGTERM, 0.2), (signal.SIGINT, 0.3)):
        proc = start_cli("qaft-run", "compress", src, "--model", "q3", "--out", tmp_path / "o")
        time.sleep(delay)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130 and "Traceback" not in err, (sig, delay, err)
        assert not (tmp_path / "o").exists() or all(
            p.suffix == ".qaft" for p in (tmp_path / "o").iterdir()
        )


def test_a_short_y_section_is_refused_before_the_hyper_synthesis_runs(q0_codec):
    """A z section long enough for 8192x8192 (its length is all that is checked before it
    is decoded) and a y section of one word: refused before z is decoded or the
    hyper-synthesis runs, in well under a second."""
    import dataclasses

    def never(z_hat):
        raise AssertionError("the hyper-synthesis ran")

    never.y_channels = q0_codec.model.hyper.y_channels  # what the bound reads of it
    codec = dataclasses.replace(q0_codec, model=dataclasses.replace(q0_codec.model, hyper=never))
    forged = _forged(codec.model.fingerprint, 8192, 8192, [bytes(1 << 20), b"", b"\0" * 4, b""])
    t0 = time.perf_counter()
    with pytest.raises(ContainerError, match="the y section .* cannot hold"):
        C.decode(codec, forged)
    assert time.perf_counter() - t0 < 1


def test_demo_does_not_replace_a_symlink_at_an_output_name(model_dir, photos, tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    target = tmp_path / "real.png"
    target.write_bytes(b"a user's picture")
    (out / "p0.png").symlink_to(target)
    demo_is_refused(model_dir, photos, out, "not written by qaft-run demo")
    assert (out / "p0.png").is_symlink() and target.read_bytes() == b"a user's picture"


def test_a_model_folder_file_that_is_a_symlink_is_refused(tmp_path):
    import shutil

    from qaft.runtime.model_dir import ModelDirError
    from qaft.runtime.zoo import model_path

    folder = tmp_path / "m"
    shutil.copytree(model_path("q0"), folder)
    (folder / "analysis.onnx").unlink()
    (folder / "analysis.onnx").symlink_to(model_path("q0") / "analysis.onnx")
    with pytest.raises(ModelDirError, match="a symlink"):
        open_model_dir(folder)
