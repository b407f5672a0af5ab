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


@pytest.mark.parametrize(
    "ckpt, architecture, quantizers, parts",
    [
        (SH_CKPT, "scale-hyperprior", ("sq", "tcq"), "decoder,hyper-decoder"),
        (FP_CKPT, "factorized-prior", ("sq", "tcq"), "decoder"),
    ],
)
def test_import_finetune_export_run(tmp_path, ckpt, architecture, quantizers, parts):
    """The whole path for a checkpoint CompressAI wrote: import, stage 2 (a few steps) for
    each quantizer the model codes with, export, and qaft-run's round trip."""
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
    imported = tmp_path / "imported.pt"
    r = run_cli("qaft", "import-compressai", str(ckpt), "--out", str(imported), "--lmbda", "0.0067")
    assert r.returncode == 0, r.stderr
    for q in quantizers:
        run = tmp_path / f"ft-{q}"
        r = run_cli(
            "qaft", "finetune", "--ckpt", str(imported), "--data", str(train), "--quantizer", q,
            "--parts", parts, "--out", str(run), "--steps", "3", "--batch", "2",
            "--crop", "64", "--threads", "1",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        folder = tmp_path / f"exported-{q}"
        r = run_cli(
            "qaft", "export", "--ckpt", str(run / "model.pt"), "--out", str(folder), "--no-fp16"
        )
        assert r.returncode == 0, r.stderr
        assert f'"{architecture}"' in (folder / "manifest.json").read_text()
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


# --- CompressAI's FactorizedPrior (bmshj2018-factorized) -------------------------------------


def test_factorized_prior_matches_compressai():
    ref = dict(np.load(FIX / "compressai_fp_n8_m12_ref.npz"))
    m = convert(read_compressai_state_dict(FP_CKPT))
    assert m.config.architecture == "factorized-prior"
    with torch.no_grad():
        y = m.g_a(torch.from_numpy(ref["x"]))
        np.testing.assert_allclose(y.numpy(), ref["y"], atol=1e-5)
        eb = m.entropy_bottleneck
        np.testing.assert_allclose(eb.medians().numpy(), ref["medians"], atol=0)
        y_hat = torch.from_numpy(ref["y_hat"])
        np.testing.assert_allclose(eb.likelihood(y_hat).numpy(), ref["y_likelihood"], rtol=1e-4)
        np.testing.assert_allclose(m.g_s(y_hat).numpy(), ref["x_hat"], atol=1e-5)
        assert float(m.aux_loss()) == pytest.approx(float(ref["aux_loss"]), rel=1e-5)
    from qaft.training.backend import codec_from_model

    # the runtime rounds y around the channel medians, as CompressAI's bottleneck does
    codec = codec_from_model(m)
    lat = codec.model.latents(ref["y"], m.hyper_analysis(torch.from_numpy(ref["y"])).numpy())
    assert lat.z_indices.shape == (1, 0, 1, 1)
    assert np.array_equal(np.rint(lat.y - lat.means) + lat.means, ref["y_hat"])


def test_factorized_prior_refuses_what_it_cannot_do(tmp_path):
    """A hyper-decoder and calibration: one line each, before any work."""
    model = tmp_path / "fp.pt"
    r = run_cli("qaft", "import-compressai", str(FP_CKPT), "--out", str(model), "--lmbda", "0.01")
    assert r.returncode == 0, r.stderr
    data = tmp_path / "train"
    data.mkdir()
    from conftest import synthetic_image
    from PIL import Image

    Image.fromarray(synthetic_image(96, 96, 1)).save(data / "a.png")
    common = ("--data", str(data), "--steps", "1", "--batch", "1", "--crop", "64")
    ft = ("finetune", "--ckpt", str(model), *common)
    cases = [
        ((*ft, "--parts", "decoder,hyper-decoder", "--out", str(tmp_path / "b")), "no hyper-dec"),
        (("calibrate", "--ckpt", str(model), "--data", str(data)), "nothing to calibrate"),
    ]  # fmt: skip
    for args, message in cases:
        r = run_cli("qaft", *args)
        assert r.returncode == 1 and message in r.stderr, r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith("error:")


def test_the_cli_offers_every_architecture():
    from qaft.cli.develop import train
    from qaft.training.models import ARCHITECTURES

    option = next(p for p in train.params if p.name == "architecture")
    assert tuple(option.type.choices) == ARCHITECTURES


def test_factorized_trellis_tables_integrate_the_learned_density():
    """At Δ = 0.5, Q0's reconstructions are the integers and its intervals the unit bins:
    the trellis tables from the sampled CDF must match the rounding tables, which come from
    the learned density itself; and the sampled CDF is the learned one at the samples."""
    from qaft.runtime.quantizers.trellis import channel_tcq_tables

    m = convert(read_compressai_state_dict(FP_CKPT))
    tables = m.build_tables()
    cdf = tables.channel_cdf
    trellis = channel_tcq_tables(cdf, 0.5)
    for c in range(cdf.channels):
        unit = tables.y_tables.row(c)[:-1]  # without the escape
        row = trellis.row(c)[:-1]  # Q0 of channel c
        k0 = tables.y_tables.offsets[c] - trellis.offsets[c]
        assert k0 >= 0
        np.testing.assert_allclose(row[k0 : k0 + len(unit)], unit, atol=2e-3)
    with torch.no_grad():
        x = torch.tensor([cdf.lower + 5 * cdf.step])
        med = m.entropy_bottleneck.medians()[:1].double()
        v = (med + x.double()).float().reshape(1, 1, 1)
        learned = torch.sigmoid(m.entropy_bottleneck._logits_cumulative(v.expand(12, 1, 1), True))
    assert cdf.at(0, np.array([cdf.lower + 5 * cdf.step]))[0] == pytest.approx(
        float(learned[0, 0, 0]), abs=1e-6
    )


def test_a_channel_cdf_that_is_not_a_cdf_is_refused():
    from qaft.runtime.entropy.channel_cdf import ChannelCdf
    from qaft.runtime.errors import FormatError

    good = np.linspace(0.0, 1.0, 9).reshape(1, -1)
    ChannelCdf(-1.0, 0.25, good)
    for lower, step, cdf in (
        (-1.0, 0.25, good[:, ::-1].copy()),  # decreasing
        (-1.0, 0.25, good * 2),  # above 1
        (-1.0, 0.0, good),  # no spacing
        (float("nan"), 0.25, good),
        (-1.0, 0.25, np.zeros((1, 1))),  # one sample
    ):
        with pytest.raises(FormatError):
            ChannelCdf(lower, step, cdf)


@pytest.mark.parametrize("name", ["sh", "fp"])
def test_a_file_decodes_to_what_compressai_decompresses(name):
    """CompressAI's own compress/decompress (run when the fixture was made) against the
    runtime's file: rounding, the exact prior, entropy coding and decoding, then g_s."""
    from qaft.runtime import codec as C
    from qaft.training.backend import codec_from_model

    ref = dict(np.load(FIX / f"compressai_{name}_n8_m12_ref.npz"))
    m = convert(read_compressai_state_dict(FIX / f"compressai_{name}_n8_m12.pth.tar"))
    codec = codec_from_model(m)
    with torch.no_grad():
        z = m.hyper_analysis(torch.from_numpy(ref["y"])).numpy()
    lat = codec.model.latents(ref["y"], z)
    enc = C.encode_latents(codec, lat, 64, 64, "sq")
    dec = C.decode(codec, enc.data, synthesize=False)
    y_hat = dec.y_indices.astype(np.float32) + lat.means
    assert np.array_equal(y_hat, ref["y_hat"])  # CompressAI's ŷ, through a real file
    with torch.no_grad():
        x_hat = m.g_s(torch.from_numpy(y_hat)).clamp(0, 1).numpy()
    np.testing.assert_allclose(x_hat, ref["x_hat_decompressed"], atol=1e-6)


def test_channel_tables_are_bounded_for_any_grid_and_step():
    """A crafted grid reaching far, or a tiny step, must not make gigabytes of tables."""
    from qaft.runtime.entropy.channel_cdf import MAX_REACH, ChannelCdf
    from qaft.runtime.errors import FormatError
    from qaft.runtime.quantizers.trellis import channel_tcq_tables

    with pytest.raises(FormatError, match="reaching at most"):
        ChannelCdf(-3.3e5, 6.6e5, np.array([[0.0, 1.0]] * 12))
    wide = ChannelCdf(-MAX_REACH, 2 * MAX_REACH, np.array([[0.0, 1.0]] * 1024))
    with pytest.raises(FormatError, match="table entries"):
        channel_tcq_tables(wide, 1 / 16)
