"""Export to a model folder, and the PyTorch-free runtime (`qaft-run`) on it."""

import json
import shutil

import numpy as np
import pytest
from conftest import run_cli, synthetic_image
from PIL import Image

from qaft.runtime import codec as C
from qaft.runtime.backends.onnx import available_backends, onnx_codec
from qaft.runtime.model_dir import ModelDirError, open_model_dir


def test_manifest_lists_every_file_with_its_hash(model_dir, tiny_codec):
    md = open_model_dir(model_dir)
    assert md.model.fingerprint == tiny_codec.model.fingerprint
    assert set(md.manifest.files) == {
        "analysis.onnx",
        "synthesis.onnx",
        "analysis_fp16.onnx",
        "synthesis_fp16.onnx",
        "hyper_synthesis.npz",
        "tables.npz",
    }
    assert md.model.meta.N == 16 and md.model.meta.stage == 1


@pytest.mark.parametrize("quantizer", ["sq", "tcq"])
def test_runtime_round_trip(model_dir, quantizer):
    codec = onnx_codec(open_model_dir(model_dir), "cpu", 1)
    img = synthetic_image(70, 90, 2)
    enc = C.encode(codec, img, quantizer, reconstruct=True)
    dec = C.decode(codec, enc.data)
    np.testing.assert_array_equal(dec.y_indices, enc.y_indices)
    np.testing.assert_array_equal(dec.image, enc.reconstruction)


def test_runtime_and_pytorch_networks_agree(model_dir, tiny_codec):
    ort_codec = onnx_codec(open_model_dir(model_dir), "cpu", 1)
    x = C.network_input(synthetic_image(64, 64, 5))
    for a, b in zip(ort_codec.networks.analysis(x), tiny_codec.networks.analysis(x)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "damage, needle",
    [
        ("corrupt", "does not match the manifest"),
        ("missing", "missing from the model folder"),
        ("newer", "newer than this qaft"),
        ("no-manifest", "manifest.json: missing"),
    ],
)
def test_damaged_model_folders_give_one_clear_error(model_dir, tmp_path, damage, needle):
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    if damage == "corrupt":
        with (bad / "synthesis.onnx").open("r+b") as f:
            f.seek(100)
            f.write(b"\x00\x01\x02")
    elif damage == "missing":
        (bad / "tables.npz").unlink()
    elif damage == "newer":
        m = json.loads((bad / "manifest.json").read_text())
        m["version"] = 99
        (bad / "manifest.json").write_text(json.dumps(m))
    else:
        (bad / "manifest.json").unlink()
    with pytest.raises(ModelDirError, match=needle):
        open_model_dir(bad)
    r = run_cli("qaft-run", "compress", str(bad), "--model", str(bad), "--out", str(tmp_path))
    assert r.returncode == 1 and "Traceback" not in r.stderr


def test_cli_compress_decompress_info(model_dir, tmp_path):
    src = tmp_path / "in" / "sub"
    src.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(synthetic_image(50 + i, 70, i)).save(src / f"p{i}.png")
    packed, unpacked = tmp_path / "packed", tmp_path / "unpacked"
    r = run_cli(
        "qaft-run",
        "compress",
        str(tmp_path / "in"),
        "--recursive",
        "--model",
        str(model_dir),
        "--out",
        str(packed),
        "--quantizer",
        "tcq",
        "--threads",
        "1",
    )
    assert r.returncode == 0, r.stderr
    files = sorted(packed.rglob("*.qaft"))
    assert [f.relative_to(packed).as_posix() for f in files] == ["sub/p0.qaft", "sub/p1.qaft"]
    again = run_cli(
        "qaft-run",
        "compress",
        str(tmp_path / "in"),
        "--recursive",
        "--model",
        str(model_dir),
        "--out",
        str(packed),
        "--quantizer",
        "tcq",
    )
    assert "skipped 2 up to date" in again.stdout
    r = run_cli("qaft-run", "info", str(files[0]), "--json")
    assert json.loads(r.stdout)[0]["quantizer"] == "tcq"
    r = run_cli("qaft-run", "info", str(packed), "--recursive")
    assert r.returncode == 0 and r.stdout.count(", tcq step ") == 2
    r = run_cli(
        "qaft-run",
        "decompress",
        str(packed),
        "--recursive",
        "--model",
        str(model_dir),
        "--out",
        str(unpacked),
    )
    assert r.returncode == 0, r.stderr
    out = np.asarray(Image.open(unpacked / "sub" / "p1.png"))
    assert out.shape == (51, 70, 3)
    assert not list(tmp_path.rglob("*.part*"))


def test_cpu_backend_always_available_and_unknown_ones_refused():
    from qaft.runtime.backends.onnx import BackendError, resolve_backend

    assert "cpu" in available_backends()
    with pytest.raises(BackendError):
        resolve_backend("quantum")


def test_bench_compares_two_models(model_dir, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(model_dir, twin)
    out = tmp_path / "bench.json"
    r = run_cli(
        "qaft-run",
        "bench",
        "--model",
        str(model_dir),
        "--baseline",
        str(twin),
        "--max-images",
        "1",
        "--repeat",
        "1",
        "--threads",
        "1",
        "--json",
        str(out),
        "--images",
        str(_img_dir(tmp_path)),
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["identical_graphs"] is True and res["ratio"] > 0
    assert set(res["medians_s"]["model"]) >= {
        "encode.analysis",
        "encode.quantization",
        "decode.synthesis",
        "encode+decode",
    }


def _img_dir(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir(exist_ok=True)
    Image.fromarray(synthetic_image(64, 96, 1)).save(d / "a.png")
    return d


def test_eval_through_the_runtime_writes_compressai_json(model_dir, tmp_path):
    out = tmp_path / "r.json"
    r = run_cli(
        "qaft-run",
        "eval",
        "--model",
        str(model_dir),
        "--data",
        str(_img_dir(tmp_path)),
        "--quantizer",
        "tcq",
        "--json",
        str(out),
        "--threads",
        "1",
    )
    assert r.returncode == 0, r.stderr
    blob = json.loads(out.read_text())
    assert blob["results"]["bpp"][0] > 0 and blob["results"]["ms-ssim"] == [None]


def test_batch_goes_on_past_bad_images(model_dir, tmp_path):
    src = tmp_path / "mixed"
    src.mkdir()
    Image.fromarray(synthetic_image(40, 60, 1)).save(src / "good.png")
    (src / "empty.png").write_bytes(b"")
    (src / "fake.jpg").write_bytes(b"this is not a jpeg")
    r = run_cli(
        "qaft-run",
        "compress",
        str(src),
        "--model",
        str(model_dir),
        "--out",
        str(tmp_path / "out"),
        "--threads",
        "1",
    )
    assert r.returncode == 1
    assert (tmp_path / "out" / "good.qaft").is_file()
    assert not (tmp_path / "out" / "empty.qaft").exists()
    assert "empty.png" in r.stderr and "fake.jpg" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("quantizer", ["sq", "tcq"])
def test_files_cross_between_pytorch_and_runtime(model_dir, tiny_codec, quantizer):
    """Both directions; exact only while no scale lands on a level boundary, which the
    exact-entropy-parameter work will guarantee (docs/bitstream.md)."""
    ort_codec = onnx_codec(open_model_dir(model_dir), "cpu", 1)
    img = synthetic_image(64, 96, 11)
    for enc_codec, dec_codec in ((ort_codec, tiny_codec), (tiny_codec, ort_codec)):
        enc = C.encode(enc_codec, img, quantizer)
        dec = C.decode(dec_codec, enc.data)
        np.testing.assert_array_equal(dec.y_indices, enc.y_indices)


def test_jobs_give_the_same_files(model_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(synthetic_image(48, 64 + 8 * i, i)).save(src / f"{i}.png")
    for jobs in ("1", "3"):
        r = run_cli(
            "qaft-run",
            "compress",
            str(src),
            "--model",
            str(model_dir),
            "--out",
            str(tmp_path / jobs),
            "--jobs",
            jobs,
            "--threads",
            "1",
        )
        assert r.returncode == 0, r.stderr
    for i in range(3):
        assert (tmp_path / "1" / f"{i}.qaft").read_bytes() == (
            tmp_path / "3" / f"{i}.qaft"
        ).read_bytes()
