"""Stage 2: quantization-aware finetuning (QAFT) on the latents the real quantizer makes.

The encoder side (``g_a``, ``h_a``) and the factorized prior stay frozen.  Each step takes
a batch of crops, runs the frozen analysis, and asks the runtime's own quantizer (the very
function inference calls, :meth:`LatentQuantizer.quantize`) for the indices and ŷ.  Then:

- ``--parts decoder``: the rate is fixed, the loss is the distortion of ``g_s(ŷ)``;
- ``--parts decoder,hyper-decoder``: ``h_s`` is trained too, and the loss adds the rate of
  the real indices under the new entropy parameters (their Gaussian mass on each index's
  decision interval).  The indices depend on ``h_s``'s means and scales, so they are
  recomputed at every step from the current parameters, before the gradient step.

With only the decoder trained, the quantizer for the next batch runs in a background thread
while the current batch trains (NumPy and PyTorch both release the GIL in their kernels).
"""

from __future__ import annotations

import json
import math
import queue
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qaft.runtime.errors import ConfigError
from qaft.runtime.quantizers import QUANTIZERS
from qaft.runtime.quantizers.base import QuantizerParams
from qaft.training import loop
from qaft.training.backend import codec_from_loaded
from qaft.training.checkpoint import CheckpointError, load_model, save_model
from qaft.training.data import CropSampler
from qaft.training.models import MeanScaleHyperprior
from qaft.training.run import (
    RunFolderError,
    check_run_files,
    check_schedule,
    open_run_folder,
    removed_unless_used,
    resolve_device,
    resumed_config,
)

PARTS = ("decoder", "hyper-decoder")


@dataclass
class FinetuneConfig:
    """Everything a stage-2 run depends on; stored in the run folder."""

    ckpt: str
    data: str
    out: str
    quantizer: str = "sq"
    parts: tuple[str, ...] = ("decoder",)
    steps: int = 2000
    batch: int = 8
    crop: int = 128
    lr: float = 2e-5
    lr_decay_at: tuple[float, ...] = (0.8,)
    step: float | None = None  # quantizer step; None: the model's measured default
    q_lmbda: float | None = None
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    log_every: int = 50
    ckpt_every: int = 250

    def __post_init__(self) -> None:
        self.parts = tuple(self.parts)
        self.lr_decay_at = tuple(self.lr_decay_at)
        check_schedule(self)
        if self.quantizer not in QUANTIZERS:
            raise ConfigError(f"unknown quantizer {self.quantizer!r}")
        if not self.parts or any(p not in PARTS for p in self.parts) or "decoder" not in self.parts:
            raise ConfigError(
                f"--parts must be 'decoder' or 'decoder,hyper-decoder', not "
                f"{','.join(self.parts)!r}"
            )


class _LatentSource:
    """Frozen analysis + the runtime quantizer, batch by batch."""

    def __init__(self, model, codec, quantizer: str, params, device, live_hyper: bool = False):
        self.model, self.codec, self.device = model, codec, device
        # With the hyper-decoder in training, the entropy parameters follow its weights:
        # the integer path is rebuilt from them for every batch (a few ms).
        self.live_hyper = live_hyper
        self.quant = QUANTIZERS[quantizer]
        self.params = params

    @torch.no_grad()
    def __call__(self, x: torch.Tensor):
        """(x, ŷ as a tensor, ẑ, indices, y) for a batch of crops."""
        m = self.model
        y = m.g_a(x)
        z = m.hyper_analysis(y)
        # the codec's products: ONNX Runtime's threads, none left spinning into PyTorch's
        hyper = (
            self.codec.bind(m.integer_hyper_synthesis()) if self.live_hyper else self.codec.hyper
        )
        lat = self.codec.model.latents(y.float().cpu().numpy(), z.float().cpu().numpy(), hyper)
        idx, y_hat = self.quant.quantize(lat.y, lat.prior, self.params)
        return {
            "x": x,
            "y_hat": torch.from_numpy(y_hat).to(self.device),
            "z_hat": torch.from_numpy(lat.z_hat).to(self.device),
            "indices": idx,
            "y": y,
        }


#: What a stage-2 run is about: a resumed run must be given the same (its schedule may change).
FINETUNE_FIXED = ("ckpt", "quantizer", "parts", "seed", "step", "q_lmbda")


#: The machine's, not the run's: a resumed run takes them from the command line (or the
#: defaults), never from the run.
FINETUNE_MACHINE = ("device", "threads")


def resume_config(out: str | Path, given: dict[str, Any]) -> FinetuneConfig:
    """The configuration to resume the stage-2 run in ``out`` with: the run's own (its
    ``config.json``), with ``given`` (the options named on the command line) laid over it,
    as ``qaft train --resume`` does; :data:`FINETUNE_FIXED` ones are then checked."""
    check_run_files(out)  # before anything of it is read
    path = Path(out) / "config.json"
    stored: Any = {}
    if path.exists():  # a run from before config.json: the options given must say it all
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RunFolderError(f"{path}: unreadable run configuration ({exc})") from None
        if not isinstance(stored, dict):
            raise RunFolderError(f"{path}: not a run configuration")
    return resumed_config(
        FinetuneConfig,
        stored,
        given,
        FINETUNE_MACHINE,
        out,
        lambda m: RunFolderError(f"{path}: {m}; give --ckpt and --data"),
    )


def check_same_run(out: Path, cfg: FinetuneConfig) -> None:
    """Refuses to resume the run in ``out`` with other fixed settings than it ran with
    (its ``config.json``): a different parent model or quantizer would continue another
    run under this one's name."""
    try:
        stored = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return  # an older run without one: its checkpoint is checked when loaded
    given = asdict(cfg)
    for key in FINETUNE_FIXED:
        old, new = stored.get(key), given.get(key)
        if key == "ckpt" and old is not None:
            same = Path(old).resolve() == Path(new).resolve()
        else:
            same = (list(old) if isinstance(old, list | tuple) else old) == (
                list(new) if isinstance(new, list | tuple) else new
            )
        if key in stored and not same:
            raise RunFolderError(
                f"{out}: the run was started with {key} {old!r}, not {new!r}; "
                "a resumed run keeps it (start another --out)"
            )


class _Prefetch:
    """Batches made ahead by a background thread (decoder only: the encoder side is frozen,
    so a batch does not depend on the training of the ones before it).

    Each batch comes with the sampler's state after it was drawn: a checkpoint records the
    state after the last batch trained on, not the one the thread has reached, so a
    resumed run trains on the batches an uninterrupted one would have.
    """

    def __init__(self, make: Callable[[], tuple[dict, dict]]) -> None:
        self.make = make
        self.batches: queue.Queue = queue.Queue(maxsize=2)
        self.stop = threading.Event()
        self.worker = threading.Thread(target=self._produce, daemon=True)

    def _produce(self) -> None:
        while not self.stop.is_set():
            try:
                item = self.make()
            except Exception as exc:  # handed to the training loop, which re-raises it
                item = exc
            while not self.stop.is_set():
                try:
                    self.batches.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue

    def start(self) -> None:
        self.worker.start()

    def get(self) -> tuple[dict, dict]:
        """The next batch and the sampler state after it."""
        item = self.batches.get()
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self.stop.set()
        if self.worker.is_alive():
            self.worker.join(timeout=10)


class Finetuning(loop.Stage):
    """Stage 2 for the shared loop: the decoder side on the real quantizer's latents."""

    name = "finetuning"

    def __init__(
        self,
        cfg: FinetuneConfig,
        model: MeanScaleHyperprior,
        source: _LatentSource,
        sampler: CropSampler,
        params: QuantizerParams,
        lmbda: float,
        device: torch.device,
    ) -> None:
        self.cfg, self.model, self.source, self.sampler = cfg, model, source, sampler
        self.params, self.lmbda, self.device = params, lmbda, device
        # A calibration stays as it is: the indices are chosen with its tables, and a finetuned
        # hyper-decoder's model is calibrated again afterwards (qaft calibrate).
        self.train_hs = "hyper-decoder" in cfg.parts
        trained = list(model.g_s.parameters())
        trained += list(model.h_s.parameters()) if self.train_hs else []
        for p in model.parameters():
            p.requires_grad_(False)
        for p in trained:
            p.requires_grad_(True)
        self.optimizer = torch.optim.Adam(trained, lr=cfg.lr)
        self.quant = QUANTIZERS[cfg.quantizer]
        self.prefetch = None if self.train_hs else _Prefetch(self._batch)
        self.sampler_state = sampler.state()  # after the last batch trained on
        self.config = asdict(cfg)

    def parts(self) -> dict[str, loop.Part]:
        model, opt = self.model, self.optimizer
        return {
            "model": (model.state_dict, model.load_state_dict),
            "opt": (opt.state_dict, opt.load_state_dict),
            "sampler": (lambda: self.sampler_state, self._set_sampler_state),
        }

    def _set_sampler_state(self, state: dict) -> None:
        self.sampler.set_state(state)
        self.sampler_state = self.sampler.state()

    def begin(self) -> None:
        if self.prefetch:
            self.prefetch.start()

    def end(self) -> None:
        if self.prefetch:
            self.prefetch.close()

    def _batch(self) -> tuple[dict[str, Any], dict]:
        x = self.sampler.batch(self.cfg.batch).to(self.device)
        state = self.sampler.state()
        return self.source(x), state

    def train_step(self, iteration: int) -> dict[str, float]:
        b, self.sampler_state = self.prefetch.get() if self.prefetch else self._batch()
        x = b["x"]
        if self.train_hs:
            y_hat, bpp = self._rate_terms(b)
        else:
            y_hat = b["y_hat"]
            bpp = torch.zeros((), device=self.device)
        mse = torch.mean((self.model.g_s(y_hat) - x) ** 2)
        loss = self.lmbda * 255**2 * mse + bpp
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"mse": float(mse.detach()), "bpp": float(bpp.detach())}

    def _rate_terms(self, b: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """ŷ of the real indices under the current hyper-decoder, and their rate in bpp."""
        model, device, delta = self.model, self.device, self.params.delta
        scales, means = model.hyper_synthesis(b["z_hat"])
        idx = b["indices"]
        lo, hi = self.quant.decision_intervals(idx, delta)
        rec = self.quant.offsets(idx, delta)
        y_hat = torch.from_numpy(rec.astype(np.float32)).to(device) + means
        s = model.gaussian_conditional.lower_bound_scale(scales)
        # The indices are fixed within a step, so the real rate has no gradient with
        # respect to the means; a straight-through shift of the bin by the residual
        # gives it one (moving a mean away from its latent moves the latent towards
        # a costlier bin). Without it the distortion term alone steers the means and
        # at high λ the rate grew by 14% on Kodak for 0.02 dB (q5).
        r = b["y"] - means
        shift = r - r.detach()
        lo_t = torch.from_numpy(lo.astype(np.float32)).to(device) + shift
        hi_t = torch.from_numpy(hi.astype(np.float32)).to(device) + shift
        mass = 0.5 * (torch.erfc(-hi_t / s / math.sqrt(2)) - torch.erfc(-lo_t / s / math.sqrt(2)))
        bits = -torch.log2(mass.clamp_min(1e-9)).sum()
        x = b["x"]
        bpp = bits / (x.shape[0] * x.shape[2] * x.shape[3])
        return y_hat, bpp

    def log_fields(self, mean: dict[str, float]) -> dict[str, float]:
        return {"mse": mean["mse"], "bpp_y": mean["bpp"], "psnr": loop.psnr(mean["mse"])}


def finetune(cfg: FinetuneConfig, resume: bool = False, progress: bool = True) -> Path:
    """Runs (or resumes) a stage-2 run; returns the path of the finetuned model file.

    A fresh run refuses a folder that holds a run already
    (:func:`~qaft.training.run.check_fresh_run`).
    """
    with removed_unless_used(Path(cfg.out)):
        return _finetune(cfg, resume, progress)


def _finetune(cfg: FinetuneConfig, resume: bool = False, progress: bool = True) -> Path:
    """The run itself (:func:`finetune`)."""
    out = Path(cfg.out)
    state = open_run_folder(out, resume)
    if resume:
        check_same_run(out, cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    parent = load_model(cfg.ckpt)
    if parent.meta.stage != 1:
        raise CheckpointError(f"{cfg.ckpt}: finetune a stage-1 model, not a stage-2 one")
    model = parent.model.to(device)
    if "hyper-decoder" in cfg.parts and not hasattr(model, "h_s"):
        raise ConfigError(f"{cfg.ckpt}: a factorized prior has no hyper-decoder: --parts decoder")
    codec = codec_from_loaded(parent, str(device))
    params = codec.model.params(cfg.quantizer, cfg.step, cfg.q_lmbda)
    sampler = CropSampler(cfg.data, cfg.crop, seed=cfg.seed)
    model.eval()  # no layer here behaves differently in training; keeps the analysis exact
    train_hs = "hyper-decoder" in cfg.parts
    source = _LatentSource(model, codec, cfg.quantizer, params, device, train_hs)
    lmbda = float(parent.meta.lmbda or 0.01)
    stage = Finetuning(cfg, model, source, sampler, params, lmbda, device)
    schedule = loop.Schedule(
        iterations=cfg.steps,
        lr=cfg.lr,
        lr_decay_at=cfg.lr_decay_at,
        log_every=cfg.log_every,
        ckpt_every=cfg.ckpt_every,
    )
    iterations = loop.run(stage, schedule, out, state, progress)
    meta = replace(
        parent.meta,
        stage=2,
        finetuned_for=cfg.quantizer,
        parent_fingerprint=parent.fingerprint.hex(),
        finetune_steps=iterations,
        finetune_parts=list(cfg.parts),
        finetune_lr=cfg.lr,
        quantizers={**parent.meta.quantizers, cfg.quantizer: params},
    )
    final = out / "model.pt"
    save_model(final, model, meta)
    return final
