"""Stage 2 (QAFT): the frozen parts stay frozen, distortion on real latents goes down."""

import numpy as np
import pytest
import torch
from conftest import synthetic_image

from qaft.runtime import codec as C
from qaft.training.backend import codec_from_loaded
from qaft.training.checkpoint import load_model
from qaft.training.finetune import FinetuneConfig, _LatentSource, finetune


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("ft-train")
    for i in range(3):
        Image.fromarray(synthetic_image(96, 96, 10 + i)).save(d / f"{i}.png")
    return d


FROZEN = ("g_a.", "h_a.", "entropy_bottleneck.", "gaussian_conditional.")


@pytest.mark.parametrize(
    "quantizer, parts",
    [("sq", ("decoder",)), ("tcq", ("decoder",)), ("tcq", ("decoder", "hyper-decoder"))],
)
def test_frozen_parts_unchanged_and_model_round_trips(
    tiny_model_file, train_dir, tmp_path, quantizer, parts
):
    cfg = FinetuneConfig(
        ckpt=str(tiny_model_file),
        data=str(train_dir),
        out=str(tmp_path),
        quantizer=quantizer,
        parts=parts,
        steps=6,
        batch=2,
        crop=64,
        lr=1e-3,
        log_every=3,
        device="cpu",
    )
    final = finetune(cfg, progress=False)
    before = load_model(tiny_model_file).model.state_dict()
    after_model = load_model(final)
    after = after_model.model.state_dict()
    for k, v in before.items():
        if k.startswith(FROZEN) or (k.startswith("h_s.") and "hyper-decoder" not in parts):
            assert torch.equal(v, after[k]), k
    assert any(not torch.equal(v, after[k]) for k, v in before.items() if k.startswith("g_s."))
    assert after_model.meta["stage"] == 2 and after_model.meta["finetuned_for"] == quantizer
    codec = codec_from_loaded(after_model)
    img = synthetic_image(64, 80, 4)
    enc = C.encode(codec, img, quantizer, reconstruct=True)
    dec = C.decode(codec, enc.data)
    np.testing.assert_array_equal(dec.image, enc.reconstruction)


@pytest.mark.parametrize("quantizer", ["sq", "tcq"])
def test_decoder_steps_lower_distortion_on_real_quantized_latents(tiny_model_file, quantizer):
    loaded = load_model(tiny_model_file)
    model = loaded.model
    codec = codec_from_loaded(loaded)
    source = _LatentSource(model, codec, quantizer, codec.params(quantizer), torch.device("cpu"))
    x = (
        torch.from_numpy(np.stack([synthetic_image(64, 64, s) for s in range(2)]))
        .permute(0, 3, 1, 2)
        .float()
        / 255
    )
    batch = source(x)
    opt = torch.optim.Adam(model.g_s.parameters(), lr=1e-3)

    def mse():
        return torch.mean((model.g_s(batch["y_hat"]) - x) ** 2)

    with torch.no_grad():
        start = float(mse())
    for _ in range(30):
        loss = mse()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(mse()) < 0.8 * start


def test_bad_parts_are_refused(tiny_model_file):
    with pytest.raises(ValueError, match="--parts"):
        FinetuneConfig(ckpt=str(tiny_model_file), data=".", out=".", parts=("encoder",))
