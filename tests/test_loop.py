"""The loop both training stages share: an interrupted and resumed run ends where an
uninterrupted one does, and its schedule is the one documented."""

import json
import os
import signal

import pytest
import test_training
import torch

from qaft.training import loop
from qaft.training.checkpoint import load_blob
from qaft.training.finetune import FinetuneConfig, Finetuning, finetune
from qaft.training.stopping import TrainingInterrupted
from qaft.training.train import TrainConfig, Training, train

train_dir = test_training.train_dir  # the fixture: a few synthetic training images


def interrupt_after(monkeypatch, stage: type[loop.Stage], iterations: int) -> None:
    """A SIGINT (Ctrl-C) once ``stage`` has trained ``iterations`` iterations."""
    real = stage.train_step

    def train_step(self, iteration):
        metrics = real(self, iteration)
        if iteration + 1 == iterations:
            os.kill(os.getpid(), signal.SIGINT)
        return metrics

    monkeypatch.setattr(stage, "train_step", train_step)


def records(run) -> list[dict]:
    return [json.loads(s) for s in (run / "log.jsonl").read_text().splitlines()]


def assert_same_weights(a, b) -> None:
    wa, wb = load_blob(a)["state_dict"], load_blob(b)["state_dict"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_stage_1_resumed_ends_where_an_uninterrupted_run_does(train_dir, tmp_path, monkeypatch):
    def cfg(name):
        return TrainConfig(data=str(train_dir), out=str(tmp_path / name), lmbda=0.01, N=8, M=12,
                           steps=6, batch=2, crop=64, amp="none", lr=1e-3, log_every=1,
                           ckpt_every=100)  # fmt: skip

    whole = train(cfg("whole"), progress=False)
    with monkeypatch.context() as m:
        interrupt_after(m, Training, 3)
        with pytest.raises(TrainingInterrupted, match="training interrupted at step 3"):
            train(cfg("parts"), progress=False)
    ckpt = load_blob(tmp_path / "parts" / "last.pt")
    assert ckpt.keys() == {"model", "opt", "aux_opt", "sampler", "torch_rng", "step",
                           "elapsed", "skipped", "config"}  # fmt: skip
    assert ckpt["step"] == 3
    resumed = train(cfg("parts"), resume=True, progress=False)
    assert_same_weights(whole, resumed)
    a, b = records(tmp_path / "whole"), records(tmp_path / "parts")
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in b] == [r["loss"] for r in a]  # the same batches and noise
    assert list(a[0]) == ["step", "loss", "bpp", "psnr", "aux", "lr", "s_per_step", "elapsed",
                          "skipped"]  # fmt: skip


@pytest.mark.parametrize("parts", [("decoder",), ("decoder", "hyper-decoder")])
def test_stage_2_resumed_ends_where_an_uninterrupted_run_does(
    tiny_model_file, train_dir, tmp_path, monkeypatch, parts
):
    """Decoder only, batches come from a prefetch thread that runs ahead of training: the
    checkpoint records the sampler where the batches trained on end, so this run is as
    deterministic as the other."""

    def cfg(name):
        return FinetuneConfig(ckpt=str(tiny_model_file), data=str(train_dir),
                              out=str(tmp_path / name), quantizer="tcq", parts=parts, steps=6,
                              batch=2, crop=64, lr=1e-3, log_every=1, ckpt_every=100,
                              device="cpu")  # fmt: skip

    whole = finetune(cfg("whole"), progress=False)
    with monkeypatch.context() as m:
        interrupt_after(m, Finetuning, 2)
        with pytest.raises(TrainingInterrupted, match="finetuning interrupted at step 2"):
            finetune(cfg("parts"), progress=False)
    path = tmp_path / "parts" / "last.pt"
    ckpt = load_blob(path)
    assert ckpt.keys() == {"model", "opt", "sampler", "step", "elapsed", "skipped", "config"}
    # as a run begun before the loop was shared wrote it: no time, no dropped count
    torch.save({k: v for k, v in ckpt.items() if k not in ("elapsed", "skipped")}, path)
    resumed = finetune(cfg("parts"), resume=True, progress=False)
    assert_same_weights(whole, resumed)
    a, b = records(tmp_path / "whole"), records(tmp_path / "parts")
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    assert [r["mse"] for r in b] == [r["mse"] for r in a]
    assert {"step", "mse", "bpp_y", "psnr", "s_per_step"} <= a[0].keys()  # the earlier keys


def test_learning_rate_drops_at_fractions_of_the_run_or_of_its_time():
    s = loop.Schedule(iterations=10, lr=1.0, lr_decay_at=(0.7, 0.9))
    assert [s.lr_at(i) for i in (0, 6, 7, 8, 9)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    timed = loop.Schedule(iterations=10, lr=1.0, lr_decay_at=(0.5,), time_budget=60)
    assert timed.lr_at(9, elapsed=29) == 1 and timed.lr_at(0, elapsed=30) == pytest.approx(0.1)
    assert timed.finished(3, 60) and not timed.finished(3, 59) and timed.finished(10, 0)
    assert loop.due(5, 10, False) and loop.due(5, 3, True) and not loop.due(0, 10, True)
