"""Stage 2 (QAFT): the frozen parts stay frozen, distortion on real latents goes down."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synthetic_image

from qaft.runtime import codec as C
from qaft.training.backend import codec_from_loaded
from qaft.training.checkpoint import CheckpointError, load_model, save_model, update_meta
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
    assert after_model.meta.stage == 2 and after_model.meta.finetuned_for == quantizer
    codec = codec_from_loaded(after_model)
    img = synthetic_image(64, 80, 4)
    enc = C.encode(codec, img, quantizer, reconstruct=True)
    dec = C.decode(codec, enc.data)
    np.testing.assert_array_equal(dec.image, enc.reconstruction)

    # stored as a delta against its stage-1 model, as the zoo bundles it (q1-sq/model.pt
    # names ../q1/model.pt): the same model
    base = tmp_path / "q1" / "model.pt"
    base.parent.mkdir()
    shutil.copy(tiny_model_file, base)
    delta = tmp_path / "q1-sq" / "model.pt"
    delta.parent.mkdir()
    save_model(delta, after_model.model, after_model.meta, base=base)
    again = load_model(delta)
    assert again.fingerprint == after_model.fingerprint and again.meta == after_model.meta
    assert delta.stat().st_size < Path(final).stat().st_size


def test_delta_model_refuses_a_base_with_other_weights(tiny_model_file, tmp_path):
    loaded = load_model(tiny_model_file)
    base = tmp_path / "base.pt"
    save_model(base, loaded.model, loaded.meta)
    with torch.no_grad():
        loaded.model.g_s[0].weight.add_(0.01)
    save_model(tmp_path / "ft.pt", loaded.model, replace(loaded.meta, stage=2), base=base)
    assert load_model(tmp_path / "ft.pt").meta.stage == 2
    update_meta(base, {"note": "metadata may change"})
    assert load_model(tmp_path / "ft.pt").meta.stage == 2
    with torch.no_grad():
        loaded.model.h_a[0].weight.add_(0.01)
    save_model(base, loaded.model, loaded.meta)  # the base's weights replaced
    with pytest.raises(CheckpointError, match="other weights"):
        load_model(tmp_path / "ft.pt")


@pytest.mark.parametrize("quantizer", ["sq", "tcq"])
def test_decoder_steps_lower_distortion_on_real_quantized_latents(tiny_model_file, quantizer):
    loaded = load_model(tiny_model_file)
    model = loaded.model
    codec = codec_from_loaded(loaded)
    source = _LatentSource(
        model, codec, quantizer, codec.model.params(quantizer), torch.device("cpu")
    )
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


def test_resume_takes_the_runs_own_settings(tiny_model_file, train_dir, tmp_path):
    """``qaft finetune --resume RUN`` needs nothing else (as ``qaft train --resume``): the
    parent, data, quantizer and parts are the run's; a fixed one given differently is refused."""
    from conftest import run_cli

    run = tmp_path / "run"
    r = run_cli("qaft", "finetune", "--ckpt", str(tiny_model_file), "--data", str(train_dir),
                "--quantizer", "tcq", "--out", str(run), "--steps", "2", "--batch", "2",
                "--crop", "64", "--log-every", "1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run_cli("qaft", "finetune", "--resume", str(run), "--steps", "3")
    assert r.returncode == 0, r.stderr
    steps = [json.loads(s)["step"] for s in (run / "log.jsonl").read_text().splitlines()]
    assert steps[-1] == 3 and json.loads((run / "config.json").read_text())["quantizer"] == "tcq"
    r = run_cli("qaft", "finetune", "--resume", str(run), "--quantizer", "sq", "--steps", "4")
    assert r.returncode == 1 and "quantizer 'tcq', not 'sq'" in r.stderr
    r = run_cli("qaft", "finetune", "--out", str(tmp_path / "new"), "--data", str(train_dir))
    assert r.returncode == 2 and "--ckpt is required (except with --resume)" in r.stderr
