"""Calibrated residual densities: the fit, the tables they give, and models that carry them
through real files, model files and exported folders."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace

import numpy as np
import pytest
from conftest import run_cli, synthetic_image

from qaft.runtime.entropy import calibration as cal
from qaft.runtime.entropy.tables import SCALE_TABLE, gaussian_tables
from qaft.runtime.quantizers import trellis as T


def _std_gaussian_tables(scales):
    """Independent plain-Gaussian unit-bin tables (the pre-calibration definition)."""
    rows = []
    for s in scales:
        r = int(math.ceil(6.1 * s))
        k = np.arange(-r, r + 1, dtype=np.float64)
        cdf = np.vectorize(lambda x: math.erfc(-x / math.sqrt(2.0)) / 2.0)
        rows.append(cdf((k + 0.5) / s) - cdf((k - 0.5) / s))
    return rows


def test_identity_is_the_plain_gaussian_bit_for_bit():
    scales = SCALE_TABLE[::9]
    plain = gaussian_tables(scales)
    ident = gaussian_tables(scales, cal.Calibration.identity(len(scales)))
    assert np.array_equal(plain.pmfs, ident.pmfs)
    for t, ref in enumerate(_std_gaussian_tables(scales)):
        assert np.array_equal(plain.row(t)[:-1], ref)
    a = T.tcq_tables(scales, 0.6)
    b = T.tcq_tables(scales, 0.6, cal.Calibration.identity(len(scales)))
    assert np.array_equal(a.pmfs, b.pmfs)


def test_fit_recovers_the_density_that_made_the_indices():
    rng = np.random.default_rng(0)
    scales = SCALE_TABLE
    hist = [{} for _ in scales]
    truth = {20: (0.8, 0.0), 30: (1.2, 1.0), 36: (0.9, 0.5)}
    for lev, (a, w) in truth.items():
        s = scales[lev]
        n = 40_000
        lap = rng.random(n) < w
        x = np.where(lap, rng.laplace(0, a * s / math.sqrt(2), n), rng.normal(0, a * s, n))
        cal.accumulate(hist, np.rint(x), np.full(n, lev))
    fitted = cal.fit(hist, scales)
    for lev, (a, w) in truth.items():
        assert fitted.scale[lev] == pytest.approx(a, rel=0.05)
        assert fitted.laplace[lev] == pytest.approx(w, abs=0.15)
    # unobserved levels borrow the nearest observed fit
    assert fitted.scale[0] == fitted.scale[20] and fitted.scale[63] == fitted.scale[36]
    # and the fit never costs bits on the data it was fitted to
    ident = cal.Calibration.identity(len(scales))
    assert cal.histogram_bits(hist, scales, fitted) < cal.histogram_bits(hist, scales, ident)


def test_calibrated_tables_are_distributions_and_reach_further():
    scales = SCALE_TABLE[20:40:4]
    wide = cal.Calibration(np.full(len(scales), 1.5), np.full(len(scales), 0.5))
    for tset in (gaussian_tables(scales, wide), T.tcq_tables(scales, 0.65, wide)):
        sums = tset.pmfs.sum(axis=1)
        assert np.allclose(sums, 1.0, atol=1e-6)
    assert gaussian_tables(scales, wide).lengths[0] > gaussian_tables(scales).lengths[0]


def test_bad_calibration_arrays_are_refused():
    with pytest.raises(ValueError):
        cal.Calibration.from_array(np.ones((4, 3)))
    with pytest.raises(ValueError):
        cal.Calibration(np.array([1.0, -1.0]), np.zeros(2))
    with pytest.raises(ValueError):
        cal.Calibration(np.ones(2), np.array([0.0, 1.5]))
    with pytest.raises(ValueError):
        cal.Calibration(np.array([1.0, np.nan]), np.zeros(2))
    with pytest.raises(ValueError):
        cal.Calibration(np.array([1.0, 1e-30]), np.zeros(2))


def test_a_crafted_calibration_makes_the_folder_refused(calibrated, tmp_path):
    """A tables.npz whose calibration is degenerate or of the wrong length is refused when
    the folder opens (one line from qaft-run), never used to build tables."""
    from qaft.export.onnx_export import export_model
    from qaft.runtime.model_dir import TABLES, ModelDirError, open_model_dir
    from qaft.training.checkpoint import load_model

    export_model(load_model(calibrated), tmp_path / "m", fp16=False)
    arrays = dict(np.load(tmp_path / "m" / TABLES))
    for bad in (arrays["y_calibration"][:5], np.full_like(arrays["y_calibration"], -1.0)):
        np.savez(tmp_path / "m" / TABLES, **{**arrays, "y_calibration": bad})
        with pytest.raises(ModelDirError, match="unreadable tables"):
            open_model_dir(tmp_path / "m", verify=False)


@pytest.fixture(scope="module")
def calibrated(tiny_model_file, image_dir, tmp_path_factory):
    """A copy of the tiny model with a calibration fitted and stored by the CLI."""
    path = tmp_path_factory.mktemp("calibrated") / "tiny.pt"
    shutil.copy(tiny_model_file, path)
    r = run_cli("qaft", "calibrate", "--ckpt", str(path), "--data", str(image_dir), "--write")
    assert r.returncode == 0, r.stderr
    assert "stored in" in r.stdout and "kB ->" in r.stdout
    return path


def test_calibrated_model_file_round_trips_every_quantizer(calibrated, tiny_model_file):
    from qaft.runtime import codec as C
    from qaft.training.backend import codec_from_loaded
    from qaft.training.checkpoint import load_model

    loaded = load_model(calibrated)
    plain = load_model(tiny_model_file)
    assert loaded.tables.calibration is not None and not loaded.tables.calibration.is_identity()
    assert loaded.meta.calibration["images"] == 3
    assert loaded.fingerprint != plain.fingerprint  # streams are tied to the tables
    # the networks are untouched: only the coding tables changed
    for k, v in plain.model.state_dict().items():
        assert np.array_equal(v.numpy(), loaded.model.state_dict()[k].numpy())
    codec = codec_from_loaded(loaded)
    image = synthetic_image(72, 88, 3)
    for q in ("sq", "rdoq", "tcq", "tcq8"):
        enc = C.encode(codec, image, q, reconstruct=True)
        dec = C.decode(codec, enc.data)
        assert np.array_equal(dec.y_indices, enc.y_indices)
        assert np.array_equal(dec.image, enc.reconstruction)


def test_calibration_survives_export_and_reset(calibrated, tmp_path):
    from qaft.export.onnx_export import export_model
    from qaft.runtime import codec as C
    from qaft.runtime.backends.onnx import onnx_codec
    from qaft.runtime.model_dir import open_model_dir
    from qaft.training.backend import codec_from_loaded
    from qaft.training.checkpoint import load_model

    loaded = load_model(calibrated)
    export_model(loaded, tmp_path / "m", synthetic_image(64, 64, 1), fp16=False)
    md = open_model_dir(tmp_path / "m")
    assert md.model.fingerprint == loaded.fingerprint
    assert np.array_equal(
        md.model.tables.calibration.to_array(), loaded.tables.calibration.to_array()
    )
    # a file written by the PyTorch side decodes on the exported runtime, trellis included
    image = synthetic_image(64, 80, 5)
    enc = C.encode(codec_from_loaded(loaded), image, "tcq")
    dec = C.decode(onnx_codec(md, threads=1), enc.data, synthesize=False)
    assert np.array_equal(dec.y_indices, enc.y_indices)

    copy = tmp_path / "reset.pt"
    shutil.copy(calibrated, copy)
    r = run_cli("qaft", "calibrate", "--ckpt", str(copy), "--data", ".", "--reset")
    assert r.returncode == 0, r.stderr
    reset = load_model(copy)
    assert reset.tables.calibration is None and "calibration" not in reset.meta.to_dict()


def test_calibrate_cli_errors_are_one_line(tmp_path, image_dir):
    r = run_cli("qaft", "calibrate", "--ckpt", str(tmp_path / "none.pt"), "--data", str(image_dir))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_delta_file_keeps_its_tables_when_its_base_is_recalibrated(
    tiny_model_file, image_dir, tmp_path
):
    """A stage-2 file stored as a delta of its base must not change when the base does."""
    import torch

    from qaft.training.calibrate import fit_model, store
    from qaft.training.checkpoint import load_model, save_model

    base = tmp_path / "base.pt"
    shutil.copy(tiny_model_file, base)
    child = load_model(base)
    with torch.no_grad():
        for p in child.model.h_s.parameters():
            p.mul_(1.01)
    delta = tmp_path / "delta.pt"
    save_model(delta, child.model, replace(child.meta, stage=2), base=base)
    before = load_model(delta).fingerprint
    store(base, fit_model(base, sorted(image_dir.iterdir())).calibration, {"images": 3})
    assert load_model(base).tables.calibration is not None
    after = load_model(delta)
    assert after.tables.calibration is None and after.fingerprint == before


def test_crafted_scale_levels_are_refused_and_plain_exports_stay_version_2(
    tiny_model_file, tmp_path
):
    import json

    from qaft.export.onnx_export import export_model
    from qaft.runtime.model_dir import TABLES, ModelDirError, open_model_dir
    from qaft.training.checkpoint import load_model

    export_model(load_model(tiny_model_file), tmp_path / "m", fp16=False)
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["version"] == 2
    arrays = dict(np.load(tmp_path / "m" / TABLES))
    for bad in (np.full_like(arrays["scale_levels"], np.inf), arrays["scale_levels"][::-1]):
        np.savez(tmp_path / "m" / TABLES, **{**arrays, "scale_levels": bad})
        with pytest.raises(ModelDirError, match="unreadable tables"):
            open_model_dir(tmp_path / "m", verify=False)
