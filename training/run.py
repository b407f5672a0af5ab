"""What both training stages check before a run starts: its schedule, its folder, its device.

A run folder holds :data:`RUN_FILES`; a fresh run refuses a folder that holds a run, and
neither stage reads or writes through a symlink planted there.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from qaft.runtime.errors import ConfigError, QaftError
from qaft.training.checkpoint import read_run_checkpoint

#: Crops go through g_a's four stride-2 stages and h_a's two: multiples of this many
#: pixels keep every latent whole (stage 2 fails on a 32-pixel crop: its hyper-latent
#: rounds to another size).
CROP_MULTIPLE = 64

#: The files a run writes into its folder (a run folder is recognised by them).
RUN_FILES = ("config.json", "last.pt", "model.pt", "log.jsonl")
#: The run's checkpoint (what ``--resume`` continues from), one of :data:`RUN_FILES`.
CHECKPOINT = "last.pt"


class RunFolderError(QaftError):
    """A run folder that does not fit the request (an existing run without ``--resume``,
    an option that contradicts the run being resumed)."""


def check_schedule(cfg) -> None:
    """Refuses, before a run folder is touched, a schedule no run can follow (steps, batch,
    crop, learning rate, counts): one line instead of a traceback mid-run or a folder left
    half made."""
    if cfg.steps < 1:
        raise ConfigError(f"steps must be at least 1, not {cfg.steps}")
    if cfg.batch < 1:
        raise ConfigError(f"batch must be at least 1, not {cfg.batch}")
    if cfg.crop < CROP_MULTIPLE or cfg.crop % CROP_MULTIPLE:
        raise ConfigError(f"crop must be a multiple of {CROP_MULTIPLE} pixels, not {cfg.crop}")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise ConfigError(f"lr must be a positive number, not {cfg.lr!r}")
    if any(not 0 < f < 1 for f in cfg.lr_decay_at):
        raise ConfigError(f"learning-rate drops are fractions of the run, not {cfg.lr_decay_at}")
    if cfg.log_every < 1 or cfg.ckpt_every < 1:
        raise ConfigError("log_every and ckpt_every must be at least 1")


def check_fresh_run(out: str | Path) -> None:
    """Refuses to start a run in a folder that holds one: it would overwrite its checkpoint
    and model and mix two runs in one log.  An empty, unrelated or missing folder is fine."""
    out = Path(out)
    found = [f for f in RUN_FILES if os.path.lexists(out / f)]  # a dangling symlink counts
    if found:
        raise RunFolderError(
            f"{out} holds a run already ({', '.join(found)}): continue it with --resume, "
            "or choose another --out"
        )


def check_run_files(out: str | Path) -> None:
    """Refuses a run folder whose files are symlinks or not regular files: the run writes
    its config, log and checkpoints there, and must not write through them elsewhere."""
    for f in RUN_FILES:
        p = Path(out) / f
        if os.path.lexists(p) and (p.is_symlink() or not p.is_file()):
            raise RunFolderError(f"{p} is a symlink or not a regular file; the run will not use it")


@contextmanager
def removed_unless_used(out: Path) -> Iterator[None]:
    """Removes the run folder ``out`` again when the run fails before it wrote anything
    there and the folder did not exist before (bad data, a model file that does not load,
    Ctrl-C while it starts): a failed start leaves no empty folder behind."""
    existed = os.path.lexists(out)
    try:
        yield
    except BaseException:
        if not existed:
            with suppress(OSError):  # not empty (the run wrote into it), or gone
                out.rmdir()
        raise


def open_run_folder(out: Path, resume: bool) -> dict[str, Any] | None:
    """Checks the run folder ``out`` and makes it: for a resumed run, returns its checkpoint
    (read before anything is written, so a run that cannot resume fails with nothing
    changed); for a fresh one, refuses a folder that holds a run and returns None."""
    check_run_files(out)  # before anything of it is read
    state = None
    if resume:
        state = read_run_checkpoint(out / CHECKPOINT)
    else:
        check_fresh_run(out)
    out.mkdir(parents=True, exist_ok=True)
    return state


def resolve_device(device: str) -> torch.device:
    """The torch device for a configured ``auto|cpu|cuda`` (``auto``: CUDA where present)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    return torch.device(device)


def resumed_config(
    cls: type,
    stored: dict[str, Any],
    given: dict[str, Any],
    machine: tuple[str, ...],
    out: str | Path,
    error: Callable[[str], Exception],
):
    """A run's configuration dataclass ``cls`` to resume it with: its ``stored`` settings
    with ``given`` (the options named on the command line) laid over them; ``machine``
    settings (device, threads, ...) come from ``given`` or the defaults, never from the run.
    ``error`` makes the exception of a configuration that does not fit ``cls``."""
    names = {f.name for f in fields(cls)}
    merged = {k: v for k, v in stored.items() if k in names and k not in machine}
    merged.update({k: v for k, v in given.items() if k in names})
    merged["out"] = str(out)
    try:
        return cls(**merged)
    except TypeError as exc:
        raise error(f"unusable run configuration ({exc})") from None
