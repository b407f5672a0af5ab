"""`qaft-run` as a codec tool: one file in, one file out, pipes, the model's own quantizer,
messages that say what to do (README: "Compress your own photos")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, synthetic_image
from PIL import Image

from qaft.runtime import container
from qaft.runtime.image import load_rgb

EXE = Path(sys.executable).parent / "qaft-run"


@pytest.fixture()
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(synthetic_image(48, 72, 3)).save(path)
    return path


def test_one_file_in_one_named_file_out_and_back(photo, tmp_path):
    packed, back = tmp_path / "photo.qaft", tmp_path / "back.png"
    r = run_cli("qaft-run", "compress", str(photo), "-o", str(packed), "--model", "q0")
    assert r.returncode == 0 and packed.is_file() and packed.read_bytes()[:4] == b"QAFT", r.stderr
    assert "bpp" in r.stderr
    r = run_cli("qaft-run", "decompress", str(packed), "-o", str(back))
    assert r.returncode == 0 and load_rgb(back).shape == (48, 72, 3), r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.png", "photo.png", "photo.qaft"]
    # named again: up to date, kept; another model: refused without --force
    r = run_cli("qaft-run", "compress", str(photo), "-o", str(packed), "--model", "q0")
    assert r.returncode == 0 and "up to date" in r.stderr
    r = run_cli("qaft-run", "compress", str(photo), "-o", str(packed), "--model", "q1")
    assert r.returncode == 1 and "--force replaces it" in r.stderr
    r = run_cli("qaft-run", "compress", str(photo), "-o", str(packed), "--model", "q1", "--force")
    assert r.returncode == 0


def test_pipes_round_trip_the_same_bytes_as_files(photo, tmp_path):
    run_cli("qaft-run", "compress", str(photo), "-o", str(tmp_path / "a.qaft"), "--model", "q0")
    packed = subprocess.run(
        [str(EXE), "compress", "-", "-o", "-", "--model", "q0"],
        input=photo.read_bytes(),
        capture_output=True,
        timeout=120,
    )
    assert packed.returncode == 0 and packed.stdout == (tmp_path / "a.qaft").read_bytes()
    png = subprocess.run(
        [str(EXE), "decompress", "-", "-o", "-"],
        input=packed.stdout,
        capture_output=True,
        timeout=120,
    )
    assert png.returncode == 0 and png.stdout[:4] == b"\x89PNG"
    (tmp_path / "piped.png").write_bytes(png.stdout)
    run_cli("qaft-run", "decompress", str(tmp_path / "a.qaft"), "-o", str(tmp_path / "f.png"))
    np.testing.assert_array_equal(load_rgb(tmp_path / "piped.png"), load_rgb(tmp_path / "f.png"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["compress", "-", "-o", "folder"], "needs -o FILE.qaft or -o -"),
        (["decompress", "-", "-o", "folder"], "needs -o FILE.png or -o -"),
    ],
)
def test_standard_input_needs_a_named_output(args, message):
    r = subprocess.run([str(EXE), *args], input=b"", capture_output=True, timeout=60)
    assert r.returncode == 1 and message in r.stderr.decode()


def test_a_stage_2_model_codes_with_its_own_quantizer(photo, tmp_path):
    r = run_cli("qaft-run", "compress", str(photo), "-o", str(tmp_path / "t.qaft"),
                "--model", "q1-tcq")  # fmt: skip
    assert r.returncode == 0 and "warning" not in r.stderr
    assert container.unpack((tmp_path / "t.qaft").read_bytes())[0].quantizer_id == 2  # tcq
    r = run_cli("qaft-run", "compress", str(photo), "-o", str(tmp_path / "s.qaft"),
                "--model", "q1-tcq", "--quantizer", "sq")  # fmt: skip
    assert r.returncode == 0 and "finetuned for tcq; coding with sq" in r.stderr
    assert container.unpack((tmp_path / "s.qaft").read_bytes())[0].quantizer_id == 0


def test_an_image_given_to_decompress_is_named_and_compress_suggested(photo, tmp_path):
    r = run_cli("qaft-run", "decompress", str(photo), "-o", str(tmp_path / "x.png"))
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"error: {photo}: a PNG image, not a .qaft file: `qaft-run compress` makes one from it"
    )


def test_errors_name_the_file_once(tmp_path, photo):
    (tmp_path / "junk.png").write_text("no image")
    r = run_cli("qaft-run", "compress", str(tmp_path / "junk.png"), str(photo), "--out",
                str(tmp_path / "o"), "--model", "q0")  # fmt: skip
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 1 and len(errors) == 1 and errors[0].count("junk.png") == 1
    (tmp_path / "bad.qaft").write_bytes(b"QAFT" + bytes(60))
    r = run_cli("qaft-run", "info", str(tmp_path / "bad.qaft"))
    assert r.returncode == 1 and r.stderr.startswith(f"error: {tmp_path / 'bad.qaft'}: ")


def test_answers_a_script_can_read(photo, tmp_path):
    r = run_cli("qaft-run", "compress", str(photo.parent), "--out", str(tmp_path / "o"),
                "--model", "q0", "--json")  # fmt: skip
    report = json.loads(r.stdout)
    assert r.returncode == 0 and report["failed"] == [] and len(report["written"]) == 1
    (rec,) = report["written"]
    assert rec["bytes"] == (tmp_path / "o" / "photo.qaft").stat().st_size
    assert rec["bpp"] == pytest.approx(8 * rec["bytes"] / (48 * 72))
    assert report["bytes_in"] == photo.stat().st_size
    r = run_cli("qaft-run", "info", str(tmp_path / "o"), "--json")
    assert json.loads(r.stdout)[0]["bundled_model"] == "q0"
    r = run_cli("qaft-run", "decompress", str(tmp_path / "o"), "--out", str(tmp_path / "b"),
                "-q")  # fmt: skip
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""
    r = run_cli("qaft-run", "models", "--json")
    models = {m["name"]: m for m in json.loads(r.stdout)}
    assert models["q3"]["default"] and not models["q0"]["default"]
    assert (
        0.1 < models["q3"]["kodak"]["bpp"] < 1 and models["q3-tcq"]["kodak"]["quantizer"] == "tcq"
    )
    plain = run_cli("qaft-run", "compress", str(photo.parent), "--out", str(tmp_path / "p"),
                    "--model", "q0")  # fmt: skip
    assert "bytes in" in plain.stdout and "mean" in plain.stdout and "bpp" in plain.stdout
    for tool in ("qaft-run", "qaft"):
        r = run_cli(tool, "--version")
        assert r.returncode == 0 and "version" in r.stdout


def test_quality_picks_the_zoos_rate_and_its_finetuned_model(photo, tmp_path):
    for extra, model in (([], "q2"), (["--quantizer", "tcq"], "q2-tcq")):
        out = tmp_path / f"{model}.qaft"
        r = run_cli("qaft-run", "compress", str(photo), "-o", str(out), "--quality", "2", *extra)
        assert r.returncode == 0, r.stderr
        info = run_cli("qaft-run", "info", str(out), "--json")
        assert json.loads(info.stdout)[0]["bundled_model"] == model
    r = run_cli("qaft-run", "compress", str(photo), "-o", str(tmp_path / "x.qaft"),
                "--quality", "2", "--model", "q3")  # fmt: skip
    assert r.returncode == 1 and "give one of them" in r.stderr


def test_a_target_bpp_is_met_per_image_and_reported(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        Image.fromarray(synthetic_image(128, 192, 10 + i)).save(src / f"{i}.png")
    r = run_cli("qaft-run", "compress", str(src), "--out", str(tmp_path / "o"),
                "--target-bpp", "0.5", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    for rec in report["written"]:
        assert rec["met"] and abs(rec["bpp"] / 0.5 - 1) <= 0.05 and rec["psnr"] > 20
    back = run_cli("qaft-run", "decompress", str(tmp_path / "o"), "--out", str(tmp_path / "b"))
    assert back.returncode == 0 and "decompressed 2," in back.stdout
    # the same command again: its outputs meet the target, so they are up to date
    again = run_cli("qaft-run", "compress", str(src), "--out", str(tmp_path / "o"),
                    "--target-bpp", "0.5")  # fmt: skip
    assert again.returncode == 0 and "skipped 2 up to date" in again.stdout, again.stderr
    # another target: they are stale
    other = run_cli("qaft-run", "compress", str(src), "--out", str(tmp_path / "o"),
                    "--target-bpp", "0.25")  # fmt: skip
    assert other.returncode == 1 and other.stderr.count("is stale") == 2


def test_dropped_alpha_and_skipped_sub_folders_are_said_once(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    rgba = np.dstack([synthetic_image(32, 32, 1), np.full((32, 32), 128, np.uint8)])
    Image.fromarray(rgba).save(src / "a.png")
    Image.fromarray(synthetic_image(32, 32, 2)).save(src / "b.png")
    Image.fromarray(synthetic_image(32, 32, 3)).save(src / "sub" / "c.png")
    r = run_cli("qaft-run", "compress", str(src), "--out", str(tmp_path / "o"), "--model", "q0")
    assert r.returncode == 0 and "compressed 2," in r.stdout
    assert r.stderr.count("sub-folders of") == 1 and "1 of the images had an alpha" in r.stderr


def test_a_model_file_or_a_run_folder_where_a_model_goes_says_what_to_do(photo, tmp_path):
    from qaft.training.zoo import model_path  # the file's path only: no torch needed

    pt = model_path("q0")
    r = run_cli("qaft-run", "compress", str(photo), "--out", str(tmp_path / "o"),
                "--model", str(pt))  # fmt: skip
    assert r.returncode == 1 and "qaft export --ckpt" in r.stderr
    run = tmp_path / "run"
    run.mkdir()
    torch = pytest.importorskip("torch")
    torch.save({"model": {}, "opt": {}, "step": 3}, run / "last.pt")
    r = run_cli("qaft", "eval", "--ckpt", str(run / "last.pt"), "--data", str(tmp_path))
    assert r.returncode == 1 and "qaft snapshot --run" in r.stderr, r.stderr
    r = run_cli("qaft", "eval", "--ckpt", str(run), "--data", str(tmp_path))
    assert r.returncode == 1 and "qaft snapshot --run" in r.stderr, r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ray", "local"], "one file is coded here"),
        (["--step", "0.5"], None),  # a warning, and the file still written
    ],
)
def test_single_file_options_that_do_not_apply_say_so(photo, tmp_path, args, message):
    r = run_cli("qaft-run", "compress", str(photo), "-o", str(tmp_path / "x.qaft"),
                "--model", "q0", *args)  # fmt: skip
    if message:
        assert r.returncode == 1 and message in r.stderr and not (tmp_path / "x.qaft").exists()
    else:
        assert r.returncode == 0 and "--step is for tcq and tcq8" in r.stderr


def test_an_output_named_with_another_suffix_is_refused(photo, tmp_path):
    for cmd, out in (("compress", "out.png"), ("decompress", "out.jpg")):
        src = photo if cmd == "compress" else tmp_path / "a.qaft"
        if cmd == "decompress":
            run_cli("qaft-run", "compress", str(photo), "-o", str(src), "--model", "q0")
        r = run_cli("qaft-run", cmd, str(src), "-o", str(tmp_path / out))
        assert r.returncode == 1 and "writes" in r.stderr and not (tmp_path / out).exists()


def test_standard_output_closed_is_one_line(photo):
    r = subprocess.run(
        f"{EXE} compress {photo} -o - --model q0 >&-", shell=True, capture_output=True, text=True
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr and "error:" in r.stderr


@pytest.mark.parametrize("kind", ["file", "missing"])
def test_a_qaft_data_that_is_no_folder_is_named(photo, tmp_path, kind, monkeypatch):
    """$QAFT_DATA is the default folder of demo, eval and bench: a wrong one says where the
    path came from, in one line."""
    data = photo if kind == "file" else tmp_path / "nowhere"
    what = "not a folder" if kind == "file" else "no such folder"
    monkeypatch.setenv("QAFT_DATA", str(data))
    for args in (["demo", "--out", str(tmp_path / "d")], ["eval", "--model", "q0"],
                 ["bench", "--model", "q0", "--repeat", "1"]):  # fmt: skip
        r = run_cli("qaft-run", *args)
        assert r.returncode == 1 and r.stderr.strip().splitlines() == [
            f"error: $QAFT_DATA={data}: {what} (set it to a folder of images)"
        ], r.stderr


def test_an_existing_non_folder_output_is_refused_before_any_work(photo, tmp_path):
    """-o /dev/null (or any other file of another kind) is no folder to write into."""
    for cmd, src in (("compress", photo), ("decompress", photo)):
        r = run_cli("qaft-run", cmd, str(src), "-o", "/dev/null")
        assert r.returncode == 1 and r.stderr.strip() == (
            f"error: -o /dev/null: not a folder (name a {'.qaft' if cmd == 'compress' else '.png'}"
            " file, a folder or -)"
        ), r.stderr
    (tmp_path / "packed.qaft").write_bytes(b"")
    r = run_cli("qaft-run", "compress", str(tmp_path), "-o", str(tmp_path / "packed.qaft"))
    assert r.returncode == 1 and r.stderr.strip() == (
        f"error: -o {tmp_path / 'packed.qaft'}: not a folder (name a folder for a folder's files)"
    ), r.stderr


def test_a_full_standard_output_is_one_line(photo):
    r = subprocess.run(
        f"{EXE} compress {photo} -o - --model q0 -q > /dev/full", shell=True, capture_output=True,
        text=True,
    )  # fmt: skip
    assert r.returncode == 1 and r.stderr.strip() == (
        "error: -o -: cannot write standard output (No space left on device)"
    )
