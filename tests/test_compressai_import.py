"""Conversion of a checkpoint that CompressAI 1.2.8 itself wrote (tests/fixtures)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from qaft.training.compressai_import import convert, read_compressai_state_dict

FIX = Path(__file__).parent / "fixtures"
CKPT = FIX / "compressai_msh_n8_m12.pth.tar"


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIX / "compressai_msh_n8_m12_ref.npz"))


@pytest.fixture(scope="module")
def model():
    return convert(read_compressai_state_dict(CKPT))


def test_every_tensor_of_the_checkpoint_is_used_or_replaced(model):
    sd = read_compressai_state_dict(CKPT)
    ours = model.state_dict()
    for k, v in sd.items():
        if k.rsplit(".", 1)[-1] in ("_quantized_cdf", "_offset", "_cdf_length"):
            continue
        assert torch.equal(ours[k], v), k


def test_networks_and_likelihoods_match_compressai(model, ref):
    with torch.no_grad():
        x = torch.from_numpy(ref["x"])
        y = model.g_a(x)
        np.testing.assert_allclose(y.numpy(), ref["y"], atol=1e-5)
        z = model.h_a(y)
        np.testing.assert_allclose(z.numpy(), ref["z"], atol=1e-5)
        med = model.entropy_bottleneck.medians()
        np.testing.assert_allclose(med.numpy(), ref["medians"], atol=0)
        z_hat = torch.from_numpy(ref["z_hat"])
        np.testing.assert_allclose(
            model.entropy_bottleneck.likelihood(z_hat).numpy(), ref["z_likelihood"], rtol=1e-4
        )
        scales, means = model.hyper_synthesis(z_hat)
        np.testing.assert_allclose(scales.numpy(), ref["scales"], atol=1e-5)
        np.testing.assert_allclose(means.numpy(), ref["means"], atol=1e-5)
        y_hat = torch.from_numpy(ref["y_hat"])
        lik = model.gaussian_conditional.likelihood(
            y_hat, torch.from_numpy(ref["scales"]), torch.from_numpy(ref["means"])
        )
        np.testing.assert_allclose(
            np.log(lik.numpy()), np.log(np.maximum(ref["y_likelihood"], 1e-9)), atol=1e-3
        )
        np.testing.assert_allclose(model.g_s(y_hat).numpy(), ref["x_hat"], atol=1e-5)
        assert float(model.aux_loss()) == pytest.approx(float(ref["aux_loss"]), rel=1e-5)


def test_tables_follow_the_checkpoint_scale_table(model):
    sd = read_compressai_state_dict(CKPT)
    tables = model.build_tables()
    assert tables.y_tables.num_tables == len(sd["gaussian_conditional.scale_table"])
    assert tables.z_tables.num_tables == 8


def test_cli_import_then_roundtrip(tmp_path):
    from conftest import synthetic_image

    from qaft.runtime import codec as C
    from qaft.training.backend import codec_from_loaded
    from qaft.training.checkpoint import load_model

    out = tmp_path / "imported.pt"
    r = run_cli("qaft", "import-compressai", str(CKPT), "--out", str(out), "--lmbda", "0.0018")
    assert r.returncode == 0, r.stderr
    loaded = load_model(out)
    assert loaded.meta.source == "compressai" and loaded.meta.lmbda == 0.0018
    codec = codec_from_loaded(loaded)
    enc = C.encode(codec, synthetic_image(80, 72), reconstruct=True)
    dec = C.decode(codec, enc.data)
    assert np.array_equal(dec.y_indices, enc.y_indices)
    assert np.array_equal(dec.image, enc.reconstruction)


def test_cli_refuses_a_non_compressai_file(tmp_path):
    bad = tmp_path / "x.pt"
    torch.save({"something": torch.zeros(1)}, bad)
    r = run_cli("qaft", "import-compressai", str(bad), "--out", str(tmp_path / "o.pt"))
    assert r.returncode == 1 and "not a CompressAI" in r.stderr
