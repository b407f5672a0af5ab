"""The training loop both stages share.

A stage (:class:`Stage`: stage 1 in :mod:`qaft.training.train`, stage 2 in
:mod:`qaft.training.finetune`) supplies what differs between them: one training iteration,
its share of the checkpoint, the fields of its log records, an optional validation.  The
loop (:func:`run`) owns what is the same: the learning-rate schedule and the time budget,
the log records, the checkpoint cadence and the atomic save, resuming, stop requests
(SIGINT/SIGTERM end a run between iterations, with a checkpoint) and the progress bar.

An *iteration* is one optimizer update on one batch.  On disk and on the command line it
keeps its older name: log records and checkpoints count iterations under ``"step"``, and
``--steps`` sets how many a run does (``step`` in a stage-2 config is the quantizer step Δ).
"""

from __future__ import annotations

import io
import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from tqdm import tqdm

from qaft.runtime.files import open_append, write_file
from qaft.training.checkpoint import CheckpointError, atomic_save, restore_run_state
from qaft.training.run import CHECKPOINT
from qaft.training.stopping import StopRequests, TrainingInterrupted

#: One piece of a stage's checkpoint: how to read its state and how to restore it.
Part = tuple[Callable[[], Any], Callable[[Any], None]]


@dataclass(frozen=True)
class Schedule:
    """How long a run goes, its learning rate over time, and how often it logs, saves its
    checkpoint and validates."""

    iterations: int
    lr: float
    lr_decay_at: tuple[float, ...] = ()  # fractions of the run; x0.1 at each
    # Seconds of training (0: none). With a budget the run ends when it is spent and the
    # learning-rate drops follow elapsed time instead of iterations.
    time_budget: float = 0.0
    log_every: int = 50
    ckpt_every: int = 250
    val_every: int = 0  # 0: never

    def lr_at(self, iteration: int, elapsed: float = 0.0) -> float:
        """The learning rate of iteration ``iteration`` (counted from 0), or at ``elapsed``
        seconds with a time budget."""
        done = elapsed / self.time_budget if self.time_budget > 0 else iteration / self.iterations
        return self.lr * 0.1 ** sum(done >= f for f in self.lr_decay_at)

    def finished(self, iteration: int, elapsed: float) -> bool:
        """Whether a run that has done ``iteration`` iterations in ``elapsed`` s is over."""
        return iteration >= self.iterations or 0 < self.time_budget <= elapsed


def due(every: int, iteration: int, last: bool) -> bool:
    """Whether something done every ``every`` iterations (0: never) is due after
    ``iteration``; the ``last`` iteration of a run always is."""
    return every > 0 and (iteration % every == 0 or last)


def psnr(mse: float) -> float:
    """PSNR in dB of a mean squared error on pixels in [0, 1]."""
    return -10 * math.log10(max(mse, 1e-12))


class Stage(ABC):
    """What a training stage hands the loop.

    Subclasses set :attr:`name`, :attr:`config` (the run's settings, stored in
    ``config.json`` and in the checkpoint) and :attr:`optimizer` (whose learning rate the
    :class:`Schedule` sets before each iteration).
    """

    #: What the interrupt message calls the run ("training interrupted at step 3: ...").
    name: str
    #: Fields of the log record shown on the progress bar.
    progress_keys: tuple[str, ...] = ("psnr",)
    config: dict[str, Any]
    optimizer: torch.optim.Optimizer

    @abstractmethod
    def train_step(self, iteration: int) -> dict[str, float] | None:
        """Trains iteration ``iteration`` (counted from 0); returns its metrics, or None
        when the iteration was dropped (a non-finite gradient)."""

    @abstractmethod
    def parts(self) -> dict[str, Part]:
        """The stage's pieces of the run checkpoint, by their key in it."""

    @abstractmethod
    def log_fields(self, mean: dict[str, float]) -> dict[str, float]:
        """The fields of a log record, from the means of :meth:`train_step`'s metrics over
        the iterations since the previous record."""

    def begin(self) -> None:  # noqa: B027 (a hook a stage may leave out)
        """Called once the checkpoint (if any) is restored, before the first iteration."""

    def end(self) -> None:  # noqa: B027 (a hook a stage may leave out)
        """Called however the loop ends (threads the stage started stop here)."""

    def validate(self) -> dict[str, Any] | None:
        """Figures for the log at the validation cadence; None: the stage has none."""
        return None


@dataclass
class Position:
    """How far a run is: iterations done, seconds spent training, iterations dropped."""

    iteration: int = 0
    elapsed: float = 0.0
    skipped: int = 0


def save_checkpoint(stage: Stage, position: Position, path: Path) -> None:
    """Writes the run checkpoint ``path`` (atomically: a crash leaves the previous one)."""
    state = {key: get() for key, (get, _) in stage.parts().items()}
    state |= {"step": position.iteration, "elapsed": position.elapsed}
    atomic_save({**state, "skipped": position.skipped, "config": stage.config}, path)


def restore_checkpoint(stage: Stage, state: dict[str, Any], path: Path) -> Position:
    """Restores ``stage`` from the checkpoint ``state`` read from ``path``; returns where
    the run stood.  Checkpoints of older stage-2 runs have no time or dropped count."""
    restore_run_state(path, state, {key: put for key, (_, put) in stage.parts().items()})
    iteration = state.get("step")
    if not isinstance(iteration, int) or iteration < 0:
        raise CheckpointError(f"{path}: does not fit this run (step {iteration!r})")
    return Position(iteration, state.get("elapsed", 0.0), state.get("skipped", 0))


class _Means:
    """Sums of the metrics of the iterations since the last log record."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.since = time.time()

    def add(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def take(self) -> tuple[dict[str, float], float]:
        """The means and the seconds per iteration; starts a new interval."""
        mean = {k: v / self.count for k, v in self.sums.items()}
        per_iteration = (time.time() - self.since) / self.count
        self._reset()
        return mean, per_iteration


def _write(log: TextIO, record: dict[str, Any]) -> None:
    log.write(json.dumps(record) + "\n")
    log.flush()  # a record is on disk as soon as it is made: runs are watched live


def _postfix(record: dict[str, Any], keys: tuple[str, ...]) -> dict[str, str]:
    return {k: format(record[k], ".2f" if k == "psnr" else ".3f") for k in keys}


def run(
    stage: Stage,
    schedule: Schedule,
    out: Path,
    state: dict[str, Any] | None = None,
    progress: bool = True,
) -> int:
    """Trains ``stage`` in the run folder ``out`` until ``schedule`` ends; returns the
    number of iterations done.

    ``state`` is the checkpoint to resume from (:func:`qaft.training.run.open_run_folder`).
    A stop request (SIGINT, SIGTERM) ends the run at the next iteration boundary: the
    checkpoint is written and :class:`TrainingInterrupted` raised.
    """
    ckpt = out / CHECKPOINT
    pos = restore_checkpoint(stage, state, ckpt) if state is not None else Position()
    write_file(out / "config.json", json.dumps(stage.config, indent=2).encode(), replace=True)
    log = io.TextIOWrapper(open_append(out / "log.jsonl"), encoding="utf-8")
    bar = tqdm(
        total=schedule.iterations, initial=pos.iteration, disable=not progress, dynamic_ncols=True
    )
    # the bar, the log and the stage's threads close however the loop ends
    with StopRequests() as stop, bar, log:
        current = _Loop(stage, schedule, ckpt, pos, log, bar)
        stage.begin()
        try:
            while not schedule.finished(pos.iteration, pos.elapsed):
                if stop.requested:
                    save_checkpoint(stage, pos, ckpt)
                    raise TrainingInterrupted(stage.name, pos.iteration, ckpt)
                current.iterate()
        finally:
            stage.end()
    return pos.iteration


@dataclass
class _Loop:
    """A run in progress: its stage and schedule, where it stands, where it writes."""

    stage: Stage
    schedule: Schedule
    ckpt: Path
    pos: Position
    log: TextIO
    bar: tqdm

    def __post_init__(self) -> None:
        self.means = _Means()
        self.t_last = time.time()

    def iterate(self) -> None:
        """One iteration, then the log record, checkpoint and validation due after it."""
        pos = self.pos
        for g in self.stage.optimizer.param_groups:
            g["lr"] = self.schedule.lr_at(pos.iteration, pos.elapsed)
        metrics = self.stage.train_step(pos.iteration)
        pos.iteration += 1
        now = time.time()
        pos.elapsed, self.t_last = pos.elapsed + now - self.t_last, now
        if metrics is None:
            pos.skipped += 1
        else:
            self.means.add(metrics)
        last = self.schedule.finished(pos.iteration, pos.elapsed)
        if self.means.count and due(self.schedule.log_every, pos.iteration, last):
            self.write_record()
        if due(self.schedule.ckpt_every, pos.iteration, last):
            save_checkpoint(self.stage, pos, self.ckpt)
        if due(self.schedule.val_every, pos.iteration, last):
            self.validate()
        self.bar.update(1)

    def write_record(self) -> None:
        """The log record of the iterations since the previous one."""
        pos = self.pos
        mean, per_iteration = self.means.take()
        record = {"step": pos.iteration, **self.stage.log_fields(mean)}
        record["lr"] = self.schedule.lr_at(pos.iteration - 1, pos.elapsed)
        record |= {"s_per_step": per_iteration, "elapsed": round(pos.elapsed, 1)}
        _write(self.log, {**record, "skipped": pos.skipped})
        self.bar.set_postfix(_postfix(record, self.stage.progress_keys))

    def validate(self) -> None:
        val = self.stage.validate()
        if val is not None:
            _write(self.log, {"step": self.pos.iteration, "val": val})
            self.bar.write(f"step {self.pos.iteration}: validation {json.dumps(val)}")
