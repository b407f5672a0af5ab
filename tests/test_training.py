"""Stage-1 training: the loss goes down, runs resume, stand-ins behave."""

import json
import os
import shutil
import signal

import pytest
import torch
from conftest import synthetic_image

from qaft.training.checkpoint import load_blob
from qaft.training.models import MeanScaleHyperprior, ModelConfig
from qaft.training.train import TrainConfig, make_optimizers, place, rd_terms, train, train_step


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("train")
    for i in range(3):
        Image.fromarray(synthetic_image(96, 96, i)).save(d / f"{i}.png")
    return d


def tiny_run(train_dir, tmp_path, **kw) -> TrainConfig:
    """A run of a tiny model on the synthetic images, in tmp_path/run."""
    base = dict(data=str(train_dir), out=str(tmp_path / "run"), lmbda=0.01, N=8, M=12,
                batch=2, crop=64, amp="none")  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_few_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = MeanScaleHyperprior(ModelConfig(16, 24))
    x = torch.from_numpy(synthetic_image(64, 64)).permute(2, 0, 1)[None].float() / 255
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        terms = rd_terms(model(x, "mixed"), x, 0.01)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(float(terms["loss"].detach()))
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


@pytest.mark.parametrize("stand_in", ["noise", "ste", "mixed"])
def test_stand_ins_give_finite_rates_and_gradients(stand_in):
    torch.manual_seed(0)
    model = MeanScaleHyperprior(ModelConfig(8, 12))
    x = torch.rand(2, 3, 64, 64)
    terms = rd_terms(model(x, stand_in), x, 0.01)
    terms["loss"].backward()
    assert torch.isfinite(terms["bpp"]) and terms["bpp"] > 0
    assert model.g_a[0].weight.grad.abs().sum() > 0


def test_run_writes_log_checkpoint_model_and_resumes(train_dir, tmp_path):
    cfg = tiny_run(train_dir, tmp_path, steps=6, log_every=2, ckpt_every=3)
    final = train(cfg, progress=False)
    assert final.is_file()
    lines = [json.loads(s) for s in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4, 6]
    cfg.steps = 8
    train(cfg, resume=True, progress=False)
    lines = [json.loads(s) for s in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines][-1] == 8


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_between_steps_with_a_checkpoint_that_resumes(train_dir, tmp_path, signum):
    from qaft.training.stopping import TrainingInterrupted

    def signal_at_step_3(model):  # validation runs after step 3's checkpoint: a step boundary
        os.kill(os.getpid(), signum)
        return {}

    cfg = tiny_run(train_dir, tmp_path, steps=8, log_every=1, ckpt_every=100, val_every=3)
    previous = signal.getsignal(signum)
    with pytest.raises(TrainingInterrupted, match="at step 3: checkpoint .*--resume"):
        train(cfg, validate=signal_at_step_3, progress=False)
    assert signal.getsignal(signum) is previous  # handlers restored
    assert load_blob(tmp_path / "run" / "last.pt")["step"] == 3
    assert not (tmp_path / "run" / "model.pt").exists()  # an unfinished run has no model file
    train(cfg, resume=True, validate=lambda m: {}, progress=False)
    steps = [
        json.loads(s)["step"]
        for s in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
        if "val" not in s
    ]
    assert steps == list(range(1, 9))
    assert (tmp_path / "run" / "model.pt").is_file()


def test_validation_codes_real_files(train_dir, tmp_path):
    from qaft.training.evaluate import make_validator

    cfg = tiny_run(train_dir, tmp_path, steps=2, val_every=2, log_every=1, amp="auto")
    train(cfg, validate=make_validator(str(train_dir), 2), progress=False)
    val = [
        json.loads(s)
        for s in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
        if "val" in s
    ]
    assert val and val[0]["val"]["bpp"] > 0 and val[0]["val"]["psnr"] > 0


def test_unknown_stand_in_is_refused():
    with pytest.raises(ValueError, match="stand-in"):
        TrainConfig(data=".", out=".", lmbda=0.01, stand_in="magic")


def _three_steps(channels_last: bool, compile_: bool = False):
    torch.manual_seed(0)
    cfg = TrainConfig(data=".", out=".", lmbda=0.01, N=8, M=12, amp="none", lr=1e-3,
                      channels_last=channels_last, compile=compile_)  # fmt: skip
    model = MeanScaleHyperprior(ModelConfig(cfg.N, cfg.M)).train()
    layout, forward = place(model, cfg, torch.device("cpu"))
    optim = make_optimizers(model, cfg)
    x = torch.from_numpy(synthetic_image(64, 64)).permute(2, 0, 1)[None].float() / 255
    x = x.contiguous(memory_format=layout)
    losses = []
    for _ in range(3):
        torch.manual_seed(1)  # the same noise draws in every variant
        terms, aux = train_step(forward, model, x, cfg, optim)
        assert aux is not None
        losses.append(float(terms["loss"].detach()))
    return losses, model


def test_channels_last_trains_the_same_model():
    plain, _ = _three_steps(False)
    last, model = _three_steps(True)
    assert model.g_a[0].weight.is_contiguous(memory_format=torch.channels_last)
    # Adam moves every weight by about lr whatever its gradient, so the losses, not the
    # weights, are what can tell a wrong step from a right one
    assert plain[0] != pytest.approx(plain[-1], rel=1e-3)
    assert last == pytest.approx(plain, rel=1e-4)


@pytest.mark.skipif(shutil.which("c++") is None, reason="torch.compile needs a C++ compiler")
def test_compiled_forward_trains_the_same_model():
    plain, _ = _three_steps(False)
    compiled, _ = _three_steps(True, compile_=True)
    assert compiled == pytest.approx(plain, rel=1e-3)


def test_model_files_keep_the_plain_layout(train_dir, tmp_path):
    cfg = tiny_run(train_dir, tmp_path, steps=2)
    final = train(cfg, progress=False)
    blob = load_blob(final)
    assert all(t.is_contiguous() for t in blob["state_dict"].values())


def test_amp_auto_uses_bf16_only_where_it_is_native():
    from qaft.training.train import native_bf16, resolve_amp

    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) == ("bf16" if native_bf16(cpu) else "none")
    assert resolve_amp("bf16", cpu) == "bf16" and resolve_amp("none", cpu) == "none"
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(data=".", out=".", lmbda=0.01, amp="fp8")


def test_run_config_records_the_resolved_amp(train_dir, tmp_path):
    from qaft.training.train import native_bf16

    cfg = TrainConfig(data=str(train_dir), out=str(tmp_path / "run"), lmbda=0.01, N=8, M=12,
                      steps=1, batch=1, crop=64)  # fmt: skip
    train(cfg, progress=False)
    ran = json.loads((tmp_path / "run" / "config.json").read_text())["amp"]
    assert ran == ("bf16" if native_bf16(torch.device("cpu")) else "none")


def test_sighup_stays_ignored_under_nohup():
    """``nohup qaft train …``: the terminal closing must not stop the run."""
    from qaft.cli.entry import stop_signals
    from qaft.training.stopping import StopRequests

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        assert signal.SIGHUP not in stop_signals()
        with StopRequests():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert signal.SIGHUP in stop_signals()
