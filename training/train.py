"""Stage-1 training: end to end with a differentiable stand-in for quantization."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from qaft.runtime.errors import ConfigError
from qaft.runtime.model import ModelMeta
from qaft.training import loop
from qaft.training.checkpoint import (
    CheckpointError,
    load_model,
    read_run_checkpoint,
    save_model,
)
from qaft.training.data import CropSampler
from qaft.training.models import ARCHITECTURES, MeanScaleHyperprior, ModelConfig, build_model
from qaft.training.models.hyperprior import STAND_INS
from qaft.training.run import (
    CHECKPOINT,
    RunFolderError,
    check_run_files,
    check_schedule,
    open_run_folder,
    removed_unless_used,
    resolve_device,
    resumed_config,
)
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
    architecture: str = ARCHITECTURES[0]
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
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(
                f"unknown architecture {self.architecture!r}; choose from {ARCHITECTURES}"
            )
        if self.stand_in not in STAND_INS:
            raise ConfigError(f"unknown stand-in {self.stand_in!r}; choose from {STAND_INS}")
        if (
            not (isinstance(self.lmbda, int | float) and math.isfinite(self.lmbda))
            or self.lmbda <= 0
        ):
            raise ConfigError(f"lmbda must be a positive number, not {self.lmbda!r}")
        self.lr_decay_at = tuple(self.lr_decay_at)
        check_schedule(self)
        if not (math.isfinite(self.time_budget) and self.time_budget >= 0):
            raise ConfigError(f"time_budget must be seconds >= 0, not {self.time_budget!r}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"unknown amp {self.amp!r}; choose from {AMP_MODES}")
        self.lr_decay_at = tuple(self.lr_decay_at)


#: What a run learns: a resumed run keeps these, and a different value is refused.
RUN_FIXED = ("lmbda", "N", "M", "architecture", "stand_in", "seed", "init_from", "widen")
#: The machine's, not the run's: a resumed run takes them from the command line (or the
#: defaults), so a run begun on a GPU can go on on a CPU without ``--device``/``--amp``.
MACHINE = ("device", "threads", "amp", "channels_last", "compile")


def _option(name: str) -> str:
    return "--" + (name if name in ("N", "M") else name.replace("_", "-"))


def resume_config(out: str | Path, given: dict[str, Any]) -> TrainConfig:
    """The configuration to resume the run in ``out`` with: the run's own (from its
    checkpoint), with ``given`` (the options named on the command line) laid over it.

    Options in :data:`RUN_FIXED` may be repeated but not changed; the schedule (``steps``,
    ``lr_decay_at``, ``time_budget``, ``lr``, ...) may be changed; :data:`MACHINE` options
    come from ``given`` or the defaults, never from the run.
    """
    check_run_files(out)  # before anything of it is read
    ckpt = Path(out) / CHECKPOINT
    stored = read_run_checkpoint(ckpt).get("config")
    if not isinstance(stored, dict):
        raise CheckpointError(f"{ckpt}: records no run configuration")
    _check_fixed(stored, given, ckpt)
    return resumed_config(
        TrainConfig, stored, given, MACHINE, out, lambda m: CheckpointError(f"{ckpt}: {m}")
    )


def _check_fixed(stored: dict[str, Any], given: dict[str, Any], ckpt: Path) -> None:
    # a run begun before a setting existed ran with its default
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    for k in RUN_FIXED:
        if k in given and given[k] != stored.get(k, defaults.get(k)):
            raise RunFolderError(
                f"{_option(k)} {given[k]} differs from the run's {stored.get(k)} "
                f"({ckpt}): a resumed run keeps it (leave the option out)"
            )


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


def schedule_of(cfg: TrainConfig) -> loop.Schedule:
    """The loop's schedule for a stage-1 run (learning-rate drops follow the time budget
    where there is one)."""
    return loop.Schedule(
        iterations=cfg.steps,
        lr=cfg.lr,
        lr_decay_at=cfg.lr_decay_at,
        time_budget=cfg.time_budget,
        log_every=cfg.log_every,
        ckpt_every=cfg.ckpt_every,
        val_every=cfg.val_every,
    )


Validator = Callable[[MeanScaleHyperprior], dict]


class Training(loop.Stage):
    """Stage 1 for the shared loop: the whole model on crops, through a stand-in."""

    name = "training"
    progress_keys = ("loss", "bpp", "psnr")

    def __init__(
        self,
        cfg: TrainConfig,
        model: MeanScaleHyperprior,
        sampler: CropSampler,
        device: torch.device,
        validate: Validator | None = None,
    ) -> None:
        self.cfg, self.model, self.sampler, self.device = cfg, model, sampler, device
        self.layout, self.forward = place(model, cfg, device)
        self.optim = make_optimizers(model, cfg)
        self.optimizer = self.optim.main  # the auxiliary loss keeps its own fixed rate
        self.validator = validate
        self.config = asdict(cfg)

    def parts(self) -> dict[str, loop.Part]:
        model, optim, sampler = self.model, self.optim, self.sampler
        return {
            "model": (model.state_dict, model.load_state_dict),
            "opt": (optim.main.state_dict, optim.main.load_state_dict),
            "aux_opt": (optim.aux.state_dict, optim.aux.load_state_dict),
            "sampler": (sampler.state, sampler.set_state),
            "torch_rng": (torch.get_rng_state, torch.set_rng_state),  # the stand-ins' noise
        }

    def begin(self) -> None:
        self.model.train()

    def train_step(self, iteration: int) -> dict[str, float] | None:
        x = self.sampler.batch(self.cfg.batch)
        x = x.to(self.device, non_blocking=True, memory_format=self.layout)
        terms, aux = train_step(self.forward, self.model, x, self.cfg, self.optim)
        if aux is None:
            return None
        metrics = {k: float(terms[k].detach()) for k in ("loss", "bpp", "mse")}
        metrics["aux"] = float(aux.detach())
        return metrics

    def log_fields(self, mean: dict[str, float]) -> dict[str, float]:
        return {
            "loss": mean["loss"],
            "bpp": mean["bpp"],
            "psnr": loop.psnr(mean["mse"]),
            "aux": mean["aux"],
        }

    def validate(self) -> dict | None:
        if self.validator is None:
            return None
        self.model.eval()
        val = self.validator(self.model)
        self.model.train()
        return val


def _warm_start(model: MeanScaleHyperprior, cfg: TrainConfig) -> MeanScaleHyperprior:
    """``model`` with the weights of the ``--init-from`` model (widened where asked)."""
    warm = load_model(cfg.init_from)
    if warm.model.config == model.config:
        model.load_state_dict(warm.model.state_dict())
        return model
    if not cfg.widen:
        raise CheckpointError(
            f"{cfg.init_from}: architecture {warm.model.config} "
            f"differs from N={cfg.N}, M={cfg.M} (--widen embeds a narrower model)"
        )
    try:
        return widen(warm.model, model.config, seed=cfg.seed)
    except ValueError as exc:
        raise CheckpointError(f"{cfg.init_from}: {exc}") from None


def train(
    cfg: TrainConfig, resume: bool = False, validate: Validator | None = None, progress: bool = True
) -> Path:
    """Runs (or resumes) a stage-1 run; returns the path of the final model file.

    A fresh run refuses a folder that holds a run
    (:func:`~qaft.training.run.check_fresh_run`); a resumed one refuses a ``cfg`` whose
    :data:`RUN_FIXED` settings differ from the run's.
    """
    with removed_unless_used(Path(cfg.out)):
        return _train(cfg, resume, validate, progress)


def _train(
    cfg: TrainConfig, resume: bool = False, validate: Validator | None = None, progress: bool = True
) -> Path:
    """The run itself (:func:`train`)."""
    out = Path(cfg.out)
    # read before anything is written or built: a mismatch fails with nothing changed
    state = open_run_folder(out, resume)
    if state is not None and isinstance(state.get("config"), dict):
        _check_fixed(state["config"], asdict(cfg), out / CHECKPOINT)
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
    model = build_model(ModelConfig(cfg.N, cfg.M, cfg.architecture))
    if cfg.init_from and not resume:  # a resumed run has its weights in its checkpoint
        model = _warm_start(model, cfg)
    stage = Training(cfg, model, sampler, device, validate)
    iterations = loop.run(stage, schedule_of(cfg), out, state, progress)
    final = out / "model.pt"
    model.to(memory_format=torch.contiguous_format)  # model files keep the plain layout
    save_model(
        final,
        model,
        ModelMeta.trained(cfg.lmbda, cfg.N, cfg.M, cfg.stand_in, iterations, cfg.init_from),
    )
    model.to(device)
    return final


def snapshot(run_dir: str | Path, out: str | Path) -> Path:
    """Writes a model file from a run's latest training checkpoint (the run may go on)."""
    run_dir = Path(run_dir)
    ckpt = run_dir / CHECKPOINT
    if not ckpt.is_file():
        raise CheckpointError(f"{run_dir}: no training checkpoint (last.pt)")
    state = read_run_checkpoint(ckpt)
    cfg = state.get("config")
    try:
        arch = cfg.get("architecture", ARCHITECTURES[0])
        model = build_model(ModelConfig(cfg["N"], cfg["M"], arch))
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{ckpt}: inconsistent training checkpoint ({str(exc).splitlines()[0]})"
        ) from None
    meta = ModelMeta.trained(
        cfg["lmbda"], cfg["N"], cfg["M"], cfg["stand_in"], state["step"], cfg.get("init_from")
    )
    save_model(out, model, meta)
    return Path(out)
