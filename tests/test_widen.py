"""Widening a trained model: the wide one starts out computing what the narrow one did."""

import pytest
import torch
from conftest import synthetic_image

from qaft.runtime.codec import decode, encode
from qaft.runtime.metrics import psnr
from qaft.runtime.model import ModelMeta
from qaft.training.backend import codec_from_model
from qaft.training.checkpoint import CheckpointError, load_model, save_model
from qaft.training.models import MeanScaleHyperprior, ModelConfig
from qaft.training.train import TrainConfig, rd_terms, train
from qaft.training.widen import widen


def _trained_small():
    # a few steps so that the entropy models are not at their initial values
    torch.manual_seed(0)
    model = MeanScaleHyperprior(ModelConfig(16, 24))
    x = torch.from_numpy(synthetic_image(64, 64)).permute(2, 0, 1)[None].float() / 255
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(5):
        loss = rd_terms(model(x, "mixed"), x, 0.01)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_widened_networks_compute_the_same_and_new_channels_are_zero():
    small = _trained_small()
    big = widen(small, ModelConfig(24, 40)).eval()
    x = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        ys, yb = small.g_a(x), big.g_a(x)
        assert torch.equal(yb[:, :24], ys) and not yb[:, 24:].any()
        zs, zb = small.h_a(ys).round(), big.h_a(yb).round()
        assert torch.equal(zb[:, :16], zs) and not zb[:, 16:].any()
        (s_s, m_s), (s_b, m_b) = small.hyper_synthesis(zs), big.hyper_synthesis(zb)
        torch.testing.assert_close(s_b[:, :24], s_s, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(m_b[:, :24], m_s, rtol=1e-5, atol=1e-5)
        assert not s_b[:, 24:].any() and not m_b[:, 24:].any()
        assert torch.equal(big.g_s(yb.round()), small.g_s(ys.round()))
    # the weights out of new channels are random, so the new channels can learn
    assert big.g_s[0].weight[24:].abs().sum() > 0


def test_widened_model_codes_the_same_image_at_about_the_same_rate():
    small = _trained_small()
    big = widen(small, ModelConfig(24, 40))
    img = synthetic_image(64, 96, 3)
    outs = []
    for m in (small, big):
        codec = codec_from_model(m)
        enc = encode(codec, img, "sq")
        dec = decode(codec, enc.data)
        outs.append((len(enc.data), dec.image))
    (n_small, im_small), (n_big, im_big) = outs
    assert psnr(im_big, img) == pytest.approx(psnr(im_small, img), abs=0.05)
    assert n_small <= n_big < 1.3 * n_small + 64


def test_narrower_target_is_refused():
    small = MeanScaleHyperprior(ModelConfig(16, 24))
    with pytest.raises(ValueError, match="narrower"):
        widen(small, ModelConfig(16, 20))


def test_training_from_a_narrower_model_needs_widen(tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(synthetic_image(96, 96, 1)).save(data / "a.png")
    src = tmp_path / "small.pt"
    save_model(src, _trained_small(), ModelMeta(lmbda=0.01))
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), lmbda=0.01, N=24, M=40,
                      steps=2, batch=1, crop=64, amp="none", init_from=str(src))  # fmt: skip
    with pytest.raises(CheckpointError, match="--widen"):
        train(cfg, progress=False)
    cfg.widen = True
    final = train(cfg, progress=False)
    assert load_model(final).model.config == ModelConfig(24, 40)
