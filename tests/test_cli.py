"""The ``qaft`` command line, run as a user would (subprocesses)."""

import json

import pytest
from conftest import TRAIN, run_cli, synthetic_image


def test_eval_writes_compressai_json(tiny_model_file, image_dir, tmp_path):
    out = tmp_path / "r.json"
    r = run_cli(
        "qaft", "eval", "--ckpt", str(tiny_model_file), "--data", str(image_dir), "--json", str(out)
    )
    assert r.returncode == 0, r.stderr
    blob = json.loads(out.read_text())
    assert set(blob["results"]) >= {"bpp", "psnr-rgb", "ms-ssim", "encoding_time", "decoding_time"}
    assert len(blob["per_image"][0]) == 3
    assert blob["results"]["bpp"][0] > 0


def test_results_json_reads_back_to_the_same_points(tiny_model_file, image_dir, tmp_path):
    from qaft.runtime.tools.rate_distortion import read_points, write_results

    out = tmp_path / "r.json"
    r = run_cli(
        "qaft", "eval", "--ckpt", str(tiny_model_file), "--data", str(image_dir), "--json", str(out)
    )
    assert r.returncode == 0, r.stderr
    points = read_points(out)
    assert [r.name for r in points[0]["images"]] == ["img0.png", "img1.png", "img2.png"]
    assert points[0]["summary"]["bpp"] == json.loads(out.read_text())["results"]["bpp"][0]
    again = tmp_path / "again.json"
    write_results(again, "x", "y", points)
    a, b = json.loads(out.read_text()), json.loads(again.read_text())
    for key in ("results", "models", "per_image"):
        assert a[key] == b[key]


def test_eval_update_replaces_one_point_and_keeps_the_rest(tiny_model_file, image_dir, tmp_path):
    out = tmp_path / "r.json"
    args = ("qaft", "eval", "--data", str(image_dir), "--json", str(out))
    r = run_cli(*args, "--ckpt", str(tiny_model_file), "--max-images", "1", "--name", "curve")
    assert r.returncode == 0, r.stderr
    first = json.loads(out.read_text())
    r = run_cli(*args, "--ckpt", str(tiny_model_file), "--update")  # the same label, 3 images
    assert r.returncode == 0, r.stderr
    blob = json.loads(out.read_text())
    assert blob["name"] == "curve" and blob["description"] == first["description"]
    assert len(blob["models"]) == 1 and len(blob["per_image"][0]) == 3
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x"}')
    r = run_cli(
        "qaft",
        "eval",
        "--data",
        str(image_dir),
        "--json",
        str(bad),
        "--update",
        "--ckpt",
        str(tiny_model_file),
    )
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    assert bad.read_text() == '{"name": "x"}'


def _curve(path, bpp, psnr):
    path.write_text(json.dumps({"name": path.stem, "results": {"bpp": bpp, "psnr-rgb": psnr}}))
    return str(path)


def test_bdrate_of_a_curve_needing_10_percent_less_rate(tmp_path):
    bpp = [0.1, 0.2, 0.4, 0.8]
    psnr = [27.0, 29.0, 31.5, 34.0]
    a = _curve(tmp_path / "a.json", bpp, psnr)
    t = _curve(tmp_path / "t.json", [b * 0.9 for b in bpp], psnr)
    r = run_cli("qaft", "bdrate", a, t, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["bd_rate"] == pytest.approx(-10.0, abs=0.01)


def test_bdrate_per_point_measures_each_point_against_the_anchor_curve(tmp_path):
    bpp = [0.1, 0.2, 0.4, 0.8]
    psnr = [27.0, 29.0, 31.5, 34.0]
    a = _curve(tmp_path / "a.json", bpp, psnr)
    # one point on a curve needing 10% less rate, one above the anchor's range
    t = _curve(tmp_path / "t.json", [0.2 * 0.9, 1.0], [29.0, 35.0])
    r = run_cli("qaft", "bdrate", a, t, "--json", "--per-point")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["bd_rate"] is None  # two points: no BD-rate
    inside, above = out["per_point"]
    assert inside["rate_difference"] == pytest.approx(-10.0, abs=1e-6)
    assert inside["anchor_bpp"] == pytest.approx(0.2)
    assert above["rate_difference"] is None
    r = run_cli("qaft", "bdrate", a, t, "--per-point")
    assert r.returncode == 0 and "-10.0%" in r.stdout and "outside" in r.stdout


def test_bdrate_sensitivity_moves_one_point_at_a_time(tmp_path):
    a = _curve(tmp_path / "a.json", [0.1, 0.2, 0.4, 0.8, 1.6], [27.0, 29.0, 31.5, 34.0, 36.0])
    # the last point lies just above its neighbour: 10% less rate would put it below
    t = _curve(tmp_path / "t.json", [0.1, 0.2, 0.4, 0.8, 0.82], [27.0, 29.0, 31.5, 34.0, 34.2])
    r = run_cli("qaft", "bdrate", a, t, "--json", "--sensitivity", "10")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    moved = list(out["sensitivity"]["bd_rate"].values())
    assert len(moved) == 5 and moved[-1] is None
    assert all(m < out["bd_rate"] - 0.5 for m in moved[1:4])
    r = run_cli("qaft", "bdrate", a, t, "--sensitivity", "10")
    assert r.returncode == 0 and "no curve" in r.stdout
    one = _curve(tmp_path / "one.json", [0.2], [29.0])
    r = run_cli("qaft", "bdrate", a, one, "--per-point", "--sensitivity", "10")
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "four or more" in r.stderr


def test_bdrate_anchor_models_keeps_only_the_named_points(tmp_path):
    bpp = [0.05, 0.1, 0.2, 0.4, 0.8]
    psnr = [20.0, 27.0, 29.0, 31.5, 34.0]  # the first point is far off the curve
    blob = {
        "name": "zoo",
        "results": {"bpp": bpp, "psnr-rgb": psnr},
        "models": [{"name": f"q{i}"} for i in range(5)],
    }
    a = tmp_path / "a.json"
    a.write_text(json.dumps(blob))
    t = _curve(tmp_path / "t.json", [b * 0.9 for b in bpp[1:]], psnr[1:])
    r = run_cli("qaft", "bdrate", str(a), t, "--json", "--anchor-models", "q1,q2,q3,q4")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["bd_rate"] == pytest.approx(-10.0, abs=0.01)
    r = run_cli("qaft", "bdrate", str(a), t, "--anchor-models", "q1,q9")
    assert r.returncode != 0 and "no points of q9" in r.stderr


def test_models_json_lists_required_fields():
    r = run_cli("qaft", "models", "--json")
    assert r.returncode == 0, r.stderr
    for e in json.loads(r.stdout):
        assert {"name", "quality", "lmbda", "stage", "finetuned_for", "path"} <= set(e)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["eval", "--model", "no-such-model"], "unknown model"),
        (["eval", "--ckpt", "{corrupt}"], "not a readable checkpoint"),
        (["eval", "--ckpt", "{missing}"], "no such model file"),
        (["train", "--data", "{empty}", "--lmbda", "0.01", "--out", "{out}"], "no images"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path, image_dir, args, needle):
    (tmp_path / "corrupt.pt").write_bytes(b"definitely not a zip archive")
    (tmp_path / "empty").mkdir()
    subs = {
        "{corrupt}": str(tmp_path / "corrupt.pt"),
        "{missing}": str(tmp_path / "nope.pt"),
        "{empty}": str(tmp_path / "empty"),
        "{out}": str(tmp_path / "run"),
        "{bad_images}": str(image_dir),
    }
    args = [subs.get(a, a) for a in args]
    if "eval" in args:
        args += ["--data", str(image_dir)]
    r = run_cli("qaft", *args)
    assert r.returncode != 0
    assert needle in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # a run that could not start leaves no folder


def test_a_failed_start_keeps_a_folder_that_was_there(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (tmp_path / "empty").mkdir()
    r = run_cli("qaft", "train", "--data", str(tmp_path / "empty"), "--lmbda", "0.01",
                "--out", str(out))  # fmt: skip
    assert r.returncode != 0 and (out / "notes.txt").read_text() == "mine"
    r = run_cli("qaft", "train", "--data", str(tmp_path / "empty"), "--lmbda", "0.01",
                "--out", str(tmp_path / "empty"))  # fmt: skip
    assert r.returncode != 0 and (tmp_path / "empty").is_dir()  # empty, but there before


def test_unreadable_image_is_one_line_error(tiny_model_file, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    r = run_cli("qaft", "eval", "--ckpt", str(tiny_model_file), "--data", str(tmp_path))
    assert r.returncode == 1
    assert "not a readable image" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(not TRAIN.is_dir(), reason="../shared/data/train is not present")
def test_train_smoke_through_cli(tmp_path):
    r = run_cli(
        "qaft",
        "train",
        "--data",
        str(TRAIN),
        "--lmbda",
        "0.01",
        "--out",
        str(tmp_path / "run"),
        "--N",
        "8",
        "--M",
        "12",
        "--steps",
        "4",
        "--batch",
        "2",
        "--crop",
        "64",
        "--log-every",
        "2",
        "--val-every",
        "0",
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "model.pt").is_file()


def test_tune_quantizer_stores_settings_used_by_eval(tiny_model_file, image_dir, tmp_path):
    import shutil

    from qaft.training.backend import codec_from_loaded
    from qaft.training.checkpoint import load_model

    model = tmp_path / "m.pt"
    shutil.copy(tiny_model_file, model)
    r = run_cli(
        "qaft",
        "tune-quantizer",
        "--ckpt",
        str(model),
        "--quantizer",
        "tcq",
        "--data",
        str(image_dir),
        "--max-images",
        "1",
        "--crop",
        "64",
        "--write",
    )
    assert r.returncode == 0, r.stderr
    loaded = load_model(model)
    assert len(loaded.meta.synthesis_gain) == 24
    tcq = loaded.meta.quantizers["tcq"]
    assert codec_from_loaded(loaded).model.params("tcq").delta == tcq.delta


def test_export_then_runtime_models_listing(tiny_model_file, tmp_path):
    out = tmp_path / "exported"
    r = run_cli("qaft", "export", "--ckpt", str(tiny_model_file), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "manifest.json").is_file() and not list(tmp_path.glob(".exported.*"))
    r = run_cli("qaft-run", "models", "--json")
    assert r.returncode == 0
    for e in json.loads(r.stdout):
        assert {"name", "quality", "lmbda", "stage", "finetuned_for", "path"} <= set(e)


def test_a_command_without_its_extra_says_what_to_install(tmp_path):
    """`pip install .` alone installs `qaft` too: without PyTorch a command says what to
    install, in one line, not a traceback."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None; from qaft.cli.develop import main; "
        f"main(['train', '--data', {str(tmp_path)!r}, '--lmbda', '0.01', '--out', "
        f"{str(tmp_path / 'run')!r}])"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.strip() == (
        'error: this command needs torch, which is not installed: pip install ".[train]" '
        "from a qaft checkout (README, Install)"
    ), r.stderr


def test_target_search_and_demo_honour_precision(tmp_path):
    """--precision reaches every codec a command opens: bf16 on ONNX Runtime is refused by a
    target search and by demo too, in one line."""
    from PIL import Image

    src = tmp_path / "a.png"
    Image.fromarray(synthetic_image(64, 64, 2)).save(src)
    r = run_cli("qaft-run", "compress", str(src), "-o", str(tmp_path / "a.qaft"),
                "--target-bpp", "0.3", "--backend", "cpu", "--precision", "bf16")  # fmt: skip
    assert r.returncode != 0 and "bf16 needs the openvino backend" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "a.qaft").exists()
    r = run_cli("qaft-run", "demo", "--data", str(tmp_path), "--out", str(tmp_path / "d"),
                "--backend", "cpu", "--precision", "bf16")  # fmt: skip
    assert r.returncode != 0 and "bf16 needs the openvino backend" in r.stderr
