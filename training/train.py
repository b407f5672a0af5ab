"""Stage-1 training: end to end with a differentiable stand-in for quantization."""

from __future__ import annotations

import io
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from qaft.runtime.errors import QaftError
from qaft.runtime.files import open_append, write_file
from qaft.training.checkpoint import (
    CheckpointError,
    atomic_save,
    load_model,
    read_run_checkpoint,
    restore_run_state,
    save_model,
)
from qaft.training.data import CropSampler
from qaft.training.models import MeanScaleHyperprior, ModelConfig
from qaft.training.models.hyperprior import STAND_INS
from qaft.training.stopping import StopRequests, TrainingInterrupted
from qaft.training.widen import widen

AMP_MODES = ("auto", "bf16", "none")


@dataclass
class TrainConfig:
    """Everything a stage-1 run depends on; stored in the run folder."""

    data: str
    out: str
    lmbda: float
    N: int = 128
    M: int = 192
    stand_in: str = "mixed"
    steps: int = 100_000
    batch: int = 16
    crop: int = 128
    lr: float = 1e-4
    aux_lr: float = 1e-3
    lr_decay_at: tuple[float, ...] = (0.8, 0.95)  # fractions of ``steps``; x0.1 each
    clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    init_from: str | None = None
    # --init-from a narrower model (smaller N, M): embed it function-preservingly
    # (qaft.training.widen) instead of refusing the mismatch
    widen: bool = False
    val_data: str | None = None
    val_every: int = 0
    val_images: int = 0  # 0: all
    log_every: int = 50
    ckpt_every: int = 250
    threads: int = 0  # 0: torch's default
    # Networks under bf16 autocast: about 2x faster where the hardware computes in bf16 (AMX,
    # AVX512-BF16, CUDA), some 20x *slower* where it is emulated (an AVX2-only CPU).
    # "auto" picks bf16 only where it is native (resolve_amp).
    amp: str = "auto"
    # Seconds of training (0: none). With a budget the run ends when it is spent and the
    # learning-rate drops follow elapsed time instead of steps: on a lent GPU the wall time,
    # not the step count, is what is fixed in advance.
    time_budget: float = 0.0
    # Weights and batches in channels-last layout: oneDNN's convolutions are faster on it
    # (1.27x per step on these 2 cores, benchmarks/train_step.py; docs/training.md).
    channels_last: bool = True
    # torch.compile the forward pass (1.47x with channels-last), at the price of a
    # compilation at the start and a C++ compiler: off by default, short runs lose by it.
    compile: bool = False

    def __post_init__(self) -> None:
        if self.stand_in not in STAND_INS:
            raise ValueError(f"unknown stand-in {self.stand_in!r}; choose from {STAND_INS}")
        if (
            not (isinstance(self.lmbda, int | float) and math.isfinite(self.lmbda))
            or self.lmbda <= 0
        ):
            raise ValueError(f"lmbda must be a positive number, not {self.lmbda!r}")
        self.lr_decay_at = tuple(self.lr_decay_at)
        check_schedule(self)
        if not (math.isfinite(self.time_budget) and self.time_budget >= 0):
            raise ValueError(f"time_budget must be seconds >= 0, not {self.time_budget!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"unknown amp {self.amp!r}; choose from {AMP_MODES}")
        self.lr_decay_at = tuple(self.lr_decay_at)


#: Crops go through g_a's four stride-2 stages and h_a's two: multiples of this many
#: pixels keep every latent whole (stage 2 fails on a 32-pixel crop: its hyper-latent
#: rounds to another size).
CROP_MULTIPLE = 64


def check_schedule(cfg) -> None:
    """Refuses, before a run folder is touched, a schedule no run can follow (steps, batch,
    crop, learning rate, counts): one line instead of a traceback mid-run or a folder left
    half made."""
    if cfg.steps < 1:
        raise ValueError(f"steps must be at least 1, not {cfg.steps}")
    if cfg.batch < 1:
        raise ValueError(f"batch must be at least 1, not {cfg.batch}")
    if cfg.crop < CROP_MULTIPLE or cfg.crop % CROP_MULTIPLE:
        raise ValueError(f"crop must be a multiple of {CROP_MULTIPLE} pixels, not {cfg.crop}")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise ValueError(f"lr must be a positive number, not {cfg.lr!r}")
    if any(not 0 < f < 1 for f in cfg.lr_decay_at):
        raise ValueError(f"learning-rate drops are fractions of the run, not {cfg.lr_decay_at}")
    if cfg.log_every < 1 or cfg.ckpt_every < 1:
        raise ValueError("log_every and ckpt_every must be at least 1")


#: What a run learns: a resumed run keeps these, and a different value is refused.
RUN_FIXED = ("lmbda", "N", "M", "stand_in", "seed", "init_from", "widen")
#: The machine's, not the run's: a resumed run takes them from the command line (or the
#: defaults), so a run begun on a GPU can go on on a CPU without ``--device``/``--amp``.
MACHINE = ("device", "threads", "amp", "channels_last", "compile")
#: The files a run writes into its folder (a run folder is recognised by them).
RUN_FILES = ("config.json", "last.pt", "model.pt", "log.jsonl")


class RunFolderError(QaftError):
    """A run folder that does not fit the request (an existing run without ``--resume``,
    an option that contradicts the run being resumed)."""


def _option(name: str) -> str:
    return "--" + (name if name in ("N", "M") else name.replace("_", "-"))


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


def resume_config(out: str | Path, given: dict[str, Any]) -> TrainConfig:
    """The configuration to resume the run in ``out`` with: the run's own (from its
    checkpoint), with ``given`` (the options named on the command line) laid over it.

    Options in :data:`RUN_FIXED` may be repeated but not changed; the schedule (``steps``,
    ``lr_decay_at``, ``time_budget``, ``lr``, ...) may be changed; :data:`MACHINE` options
    come from ``given`` or the defaults, never from the run.
    """
    check_run_files(out)  # before anything of it is read
    ckpt = Path(out) / "last.pt"
    stored = read_run_checkpoint(ckpt).get("config")
    if not isinstance(stored, dict):
        raise CheckpointError(f"{ckpt}: records no run configuration")
    _check_fixed(stored, given, ckpt)
    names = {f.name for f in fields(TrainConfig)}
    merged = {k: v for k, v in stored.items() if k in names and k not in MACHINE}
    merged.update({k: v for k, v in given.items() if k in names})
    merged["out"] = str(out)
    try:
        return TrainConfig(**merged)
    except TypeError as exc:
        raise CheckpointError(f"{ckpt}: unusable run configuration ({exc})") from None


def _check_fixed(stored: dict[str, Any], given: dict[str, Any], ckpt: Path) -> None:
    for k in RUN_FIXED:
        if k in given and given[k] != stored.get(k):
            raise RunFolderError(
                f"{_option(k)} {given[k]} differs from the run's {stored.get(k)} "
                f"({ckpt}): a resumed run keeps it (leave the option out)"
            )


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return torch.device(device)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 convolutions natively (not emulated)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:  # oneDNN's own check: AVX512-BF16 or AMX
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_amp(amp: str, device: torch.device) -> str:
    """``"bf16"`` or ``"none"`` for a configured ``auto|bf16|none`` on ``device``."""
    if amp == "auto":
        return "bf16" if native_bf16(device) else "none"
    return amp


def rd_terms(
    out: dict[str, torch.Tensor], x: torch.Tensor, lmbda: float
) -> dict[str, torch.Tensor]:
    """Rate (estimated bpp), distortion (MSE on [0, 255]²-scaled pixels) and the loss."""
    n, _, h, w = x.shape
    pixels = n * h * w
    bpp = sum(torch.log2(out[k]).sum() for k in ("y_likelihood", "z_likelihood")) / -pixels
    mse = torch.mean((out["x_hat"] - x) ** 2)
    return {"loss": lmbda * 255**2 * mse + bpp, "bpp": bpp, "mse": mse}


@dataclass
class Optimizers:
    """Adam for the networks, a separate Adam for the factorized prior's auxiliary loss."""

    main: torch.optim.Optimizer
    aux: torch.optim.Optimizer
    main_params: list[torch.nn.Parameter]


def make_optimizers(model: MeanScaleHyperprior, cfg: TrainConfig) -> Optimizers:
    main_params, aux_params = model.parameter_groups()
    return Optimizers(
        torch.optim.Adam(main_params, lr=cfg.lr),
        torch.optim.Adam(aux_params, lr=cfg.aux_lr),
        main_params,
    )


def place(model: MeanScaleHyperprior, cfg: TrainConfig, device: torch.device):
    """Moves ``model`` to ``device`` in the run's memory layout; returns the layout and the
    forward callable (the model itself, or its compiled form)."""
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device, memory_format=layout)
    return layout, (torch.compile(model) if cfg.compile else model)


def train_step(
    forward, model: MeanScaleHyperprior, x: torch.Tensor, cfg: TrainConfig, optim: Optimizers
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """One stage-1 step on batch ``x``: the rate-distortion terms and the auxiliary loss, or
    None for the latter when the step was dropped."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
        fwd = forward(x, cfg.stand_in)
    terms = rd_terms(fwd, x, cfg.lmbda)
    optim.main.zero_grad(set_to_none=True)
    terms["loss"].backward()
    clip = cfg.clip if cfg.clip > 0 else math.inf
    norm = torch.nn.utils.clip_grad_norm_(optim.main_params, clip)
    # A rare non-finite batch (a likelihood underflow under bf16) would poison Adam's
    # moments for good: such a step is dropped instead.
    if not torch.isfinite(norm):
        return terms, None
    optim.main.step()
    aux = model.aux_loss()
    optim.aux.zero_grad(set_to_none=True)
    aux.backward()
    optim.aux.step()
    return terms, aux


def lr_at(cfg: TrainConfig, step: int, elapsed: float = 0.0) -> float:
    """The learning rate at ``step`` (or at ``elapsed`` seconds with a time budget)."""
    if cfg.time_budget > 0:
        done = elapsed / cfg.time_budget
    else:
        done = step / cfg.steps
    return cfg.lr * 0.1 ** sum(done >= f for f in cfg.lr_decay_at)


Validator = Callable[[MeanScaleHyperprior], dict]


def train(
    cfg: TrainConfig, resume: bool = False, validate: Validator | None = None, progress: bool = True
) -> Path:
    """Runs (or resumes) a stage-1 run; returns the path of the final model file.

    A fresh run refuses a folder that holds a run (:func:`check_fresh_run`); a resumed one
    refuses a ``cfg`` whose :data:`RUN_FIXED` settings differ from the run's.
    """
    out = Path(cfg.out)
    state = None
    check_run_files(out)
    if resume:
        # read before anything is written or built: a mismatch fails with nothing changed
        state = read_run_checkpoint(out / "last.pt")
        if isinstance(state.get("config"), dict):
            _check_fixed(state["config"], asdict(cfg), out / "last.pt")
    else:
        check_fresh_run(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    # the run folder's config.json records what ran, not "auto"
    cfg = replace(cfg, amp=resolve_amp(cfg.amp, device))
    if cfg.amp == "bf16" and not native_bf16(device):
        warnings.warn(
            f"--amp bf16 is emulated on this {device.type}: steps are far slower", stacklevel=2
        )
    torch.manual_seed(cfg.seed)
    sampler = CropSampler(cfg.data, cfg.crop, seed=cfg.seed)

    model = MeanScaleHyperprior(ModelConfig(cfg.N, cfg.M))
    if cfg.init_from and not resume:
        warm = load_model(cfg.init_from)
        if warm.model.config == model.config:
            model.load_state_dict(warm.model.state_dict())
        elif cfg.widen:
            try:
                model = widen(warm.model, model.config, seed=cfg.seed)
            except ValueError as exc:
                raise CheckpointError(f"{cfg.init_from}: {exc}") from None
        else:
            raise CheckpointError(
                f"{cfg.init_from}: architecture {warm.model.config} "
                f"differs from N={cfg.N}, M={cfg.M} (--widen embeds a narrower model)"
            )
    layout, forward = place(model, cfg, device)
    optim = make_optimizers(model, cfg)
    opt, aux_opt = optim.main, optim.aux

    step, elapsed, skipped = 0, 0.0, 0
    ckpt_path = out / "last.pt"
    if state is not None:
        parts = {"model": model.load_state_dict, "opt": opt.load_state_dict}
        parts |= {"aux_opt": aux_opt.load_state_dict, "sampler": sampler.set_state}
        restore_run_state(ckpt_path, state, {**parts, "torch_rng": torch.set_rng_state})
        step = state["step"]
        elapsed = state.get("elapsed", 0.0)
        skipped = state.get("skipped", 0)
    write_file(out / "config.json", json.dumps(asdict(cfg), indent=2).encode(), replace=True)

    def save_checkpoint() -> None:
        atomic_save(
            {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "aux_opt": aux_opt.state_dict(),
                "sampler": sampler.state(),
                "torch_rng": torch.get_rng_state(),
                "step": step,
                "elapsed": elapsed,
                "skipped": skipped,
                "config": asdict(cfg),
            },
            ckpt_path,
        )

    log = io.TextIOWrapper(open_append(out / "log.jsonl"), encoding="utf-8")
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, dynamic_ncols=True)
    # the bar and the log close however the loop ends
    with StopRequests() as stop, bar, log:
        acc = {"loss": 0.0, "bpp": 0.0, "mse": 0.0, "aux": 0.0}
        n_acc, t0 = 0, time.time()
        t_last = time.time()
        model.train()
        last = False
        while step < cfg.steps and not (cfg.time_budget > 0 and elapsed >= cfg.time_budget):
            if stop.requested:
                save_checkpoint()
                raise TrainingInterrupted("training", step, ckpt_path)
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step, elapsed)
            x = sampler.batch(cfg.batch).to(device, non_blocking=True, memory_format=layout)
            terms, aux = train_step(forward, model, x, cfg, optim)
            finite = aux is not None
            step += 1
            now = time.time()
            elapsed, t_last = elapsed + now - t_last, now
            last = step >= cfg.steps or (cfg.time_budget > 0 and elapsed >= cfg.time_budget)
            if not finite:
                skipped += 1
                bar.update(1)
                continue
            for k in ("loss", "bpp", "mse"):
                acc[k] += float(terms[k].detach())
            acc["aux"] += float(aux.detach())
            n_acc += 1
            if n_acc and (step % cfg.log_every == 0 or last):
                mean = {k: v / n_acc for k, v in acc.items()}
                psnr = -10 * math.log10(max(mean["mse"], 1e-12))
                rec = {
                    "step": step,
                    "loss": mean["loss"],
                    "bpp": mean["bpp"],
                    "psnr": psnr,
                    "aux": mean["aux"],
                    "lr": lr_at(cfg, step - 1, elapsed),
                    "s_per_step": (time.time() - t0) / n_acc,
                    "elapsed": round(elapsed, 1),
                    "skipped": skipped,
                }
                log.write(json.dumps(rec) + "\n")
                log.flush()
                bar.set_postfix(
                    loss=f"{mean['loss']:.3f}", bpp=f"{mean['bpp']:.3f}", psnr=f"{psnr:.2f}"
                )
                acc = dict.fromkeys(acc, 0.0)
                n_acc, t0 = 0, time.time()
            if step % cfg.ckpt_every == 0 or last:
                save_checkpoint()
            if validate and cfg.val_every and (step % cfg.val_every == 0 or last):
                model.eval()
                val = validate(model)
                model.train()
                log.write(json.dumps({"step": step, "val": val}) + "\n")
                log.flush()
                bar.write(f"step {step}: validation {json.dumps(val)}")
            bar.update(1)
    final = out / "model.pt"
    model.to(memory_format=torch.contiguous_format)  # model files keep the plain layout
    save_model(
        final,
        model,
        {
            "lmbda": cfg.lmbda,
            "stage": 1,
            "finetuned_for": None,
            "stand_in": cfg.stand_in,
            "steps": step,
            "N": cfg.N,
            "M": cfg.M,
            "init_from": cfg.init_from,
        },
    )
    model.to(device)
    return final


def snapshot(run_dir: str | Path, out: str | Path) -> Path:
    """Writes a model file from a run's latest training checkpoint (the run may go on)."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "last.pt"
    if not ckpt.is_file():
        raise CheckpointError(f"{run_dir}: no training checkpoint (last.pt)")
    state = read_run_checkpoint(ckpt)
    cfg = state.get("config")
    try:
        model = MeanScaleHyperprior(ModelConfig(cfg["N"], cfg["M"]))
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{ckpt}: inconsistent training checkpoint ({str(exc).splitlines()[0]})"
        ) from None
    save_model(
        out,
        model,
        {
            "lmbda": cfg["lmbda"],
            "stage": 1,
            "finetuned_for": None,
            "stand_in": cfg["stand_in"],
            "steps": state["step"],
            "N": cfg["N"],
            "M": cfg["M"],
            "init_from": cfg.get("init_from"),
        },
    )
    return Path(out)
