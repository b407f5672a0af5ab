"""Conversion of a checkpoint that CompressAI 1.2.8 itself wrote (tests/fixtures)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from qaft.training.compressai_import import (
    COMPRESSAI_CODER_BUFFERS,
    convert,
    read_compressai_state_dict,
)

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


# --- CompressAI's ScaleHyperprior (bmshj2018-hyperprior) -------------------------------------

SH_CKPT = FIX / "compressai_sh_n8_m12.pth.tar"
FP_CKPT = FIX / "compressai_fp_n8_m12.pth.tar"


@pytest.fixture(scope="module")
def sh_ref():
    return dict(np.load(FIX / "compressai_sh_n8_m12_ref.npz"))


@pytest.fixture(scope="module")
def sh_model():
    return convert(read_compressai_state_dict(SH_CKPT))


def test_scale_hyperprior_is_recognised_and_every_tensor_kept(sh_model):
    assert sh_model.config.architecture == "scale-hyperprior"
    ours = sh_model.state_dict()
    for k, v in read_compressai_state_dict(SH_CKPT).items():
        if k.rsplit(".", 1)[-1] not in COMPRESSAI_CODER_BUFFERS:
            assert torch.equal(ours[k], v), k


def test_scale_hyperprior_matches_compressai(sh_model, sh_ref):
    """Networks, likelihoods and the coded latents against what CompressAI computed."""
    m, ref = sh_model, sh_ref
    with torch.no_grad():
        y = m.g_a(torch.from_numpy(ref["x"]))
        np.testing.assert_allclose(y.numpy(), ref["y"], atol=1e-5)
        z = m.hyper_analysis(y)  # h_a of |y|, as CompressAI's forward
        np.testing.assert_allclose(z.numpy(), ref["z"], atol=1e-5)
        np.testing.assert_allclose(m.entropy_bottleneck.medians().numpy(), ref["medians"], atol=0)
        z_hat = torch.from_numpy(ref["z_hat"])
        np.testing.assert_allclose(
            m.entropy_bottleneck.likelihood(z_hat).numpy(), ref["z_likelihood"], rtol=1e-4
        )
        scales, means = m.hyper_synthesis(z_hat)
        np.testing.assert_allclose(scales.numpy(), ref["scales"], atol=1e-5)
        assert not means.any()
        lik = m.gaussian_conditional.likelihood(torch.from_numpy(ref["y_hat"]), scales, means)
        np.testing.assert_allclose(
            np.log(np.maximum(lik.numpy(), 1e-9)),
            np.log(np.maximum(ref["y_likelihood"], 1e-9)),
            atol=1e-3,
        )
        np.testing.assert_allclose(
            m.g_s(torch.from_numpy(ref["y_hat"])).numpy(), ref["x_hat"], atol=1e-5
        )
        assert float(m.aux_loss()) == pytest.approx(float(ref["aux_loss"]), rel=1e-5)
    # the runtime's pipeline (exact integer h_s, sq) codes CompressAI's ŷ = round(y)
    from qaft.training.backend import codec_from_model

    codec = codec_from_model(m)
    lat = codec.model.latents(ref["y"], ref["z"])
    assert np.array_equal(lat.z_hat, ref["z_hat"])
    np.testing.assert_allclose(
        codec.model.hyper(lat.z_hat)[0], ref["scales"], atol=1e-3 * ref["scales"].max()
    )
    assert np.array_equal(np.rint(lat.y - lat.means) + lat.means, ref["y_hat"])


def test_scale_hyperprior_import_finetune_export_run(tmp_path):
    """The whole path for a checkpoint CompressAI wrote: import, stage 2 for sq and tcq
    (a few steps, decoder and hyper-decoder), export, and qaft-run's round trip."""
    from conftest import synthetic_image
    from PIL import Image

    from qaft.runtime import codec as C
    from qaft.training.backend import codec_from_loaded
    from qaft.training.checkpoint import load_model

    train = tmp_path / "train"
    train.mkdir()
    for i in range(2):
        Image.fromarray(synthetic_image(96, 96, 20 + i)).save(train / f"{i}.png")
    image = tmp_path / "img.png"
    Image.fromarray(synthetic_image(80, 72, 3)).save(image)
    imported = tmp_path / "sh.pt"
    r = run_cli(
        "qaft", "import-compressai", str(SH_CKPT), "--out", str(imported), "--lmbda", "0.0067"
    )
    assert r.returncode == 0, r.stderr
    for q in ("sq", "tcq"):
        run = tmp_path / f"ft-{q}"
        r = run_cli(
            "qaft", "finetune", "--ckpt", str(imported), "--data", str(train), "--quantizer", q,
            "--parts", "decoder,hyper-decoder", "--out", str(run), "--steps", "3", "--batch", "2",
            "--crop", "64", "--threads", "1",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        folder = tmp_path / f"exported-{q}"
        r = run_cli(
            "qaft", "export", "--ckpt", str(run / "model.pt"), "--out", str(folder), "--no-fp16"
        )
        assert r.returncode == 0, r.stderr
        assert '"scale-hyperprior"' in (folder / "manifest.json").read_text()
        coded, back = tmp_path / f"{q}.qaft", tmp_path / f"{q}.png"
        for args in (
            ("compress", str(image), "-o", str(coded)),
            ("decompress", str(coded), "-o", str(back)),
        ):
            r = run_cli("qaft-run", *args, "--model", str(folder))
            assert r.returncode == 0, r.stderr
        # the file decodes to the same latents through PyTorch: exact entropy parameters
        codec = codec_from_loaded(load_model(run / "model.pt"))
        dec = C.decode(codec, coded.read_bytes())
        ours = np.asarray(Image.open(back))
        assert ours.shape == (80, 72, 3)
        assert np.abs(ours.astype(int) - dec.image.astype(int)).max() <= 1


def test_factorized_prior_is_refused_in_one_line(tmp_path):
    r = run_cli("qaft", "import-compressai", str(FP_CKPT), "--out", str(tmp_path / "o.pt"))
    assert r.returncode == 1 and "FactorizedPrior" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "o.pt").exists()
