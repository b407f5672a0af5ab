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

import io
import json
import math
import queue
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from qaft.runtime.entropy.tables import scale_to_level
from qaft.runtime.files import open_append, write_file
from qaft.runtime.quantizers import QUANTIZERS
from qaft.runtime.quantizers import trellis as T
from qaft.training.backend import codec_from_loaded
from qaft.training.checkpoint import (
    CheckpointError,
    atomic_save,
    load_model,
    read_run_checkpoint,
    restore_run_state,
    save_model,
)
from qaft.training.data import CropSampler
from qaft.training.stopping import StopRequests, TrainingInterrupted
from qaft.training.train import (
    RunFolderError,
    check_fresh_run,
    check_run_files,
    check_schedule,
    resolve_device,
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
            raise ValueError(f"unknown quantizer {self.quantizer!r}")
        if not self.parts or any(p not in PARTS for p in self.parts) or "decoder" not in self.parts:
            raise ValueError(
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
        self.medians = torch.from_numpy(codec.tables.z_medians).reshape(1, -1, 1, 1).to(device)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor):
        """(x, ŷ as a tensor, indices, scale levels, y) for a batch of crops."""
        m = self.model
        y = m.g_a(x)
        z = m.h_a(y)
        z_hat = torch.round(z - self.medians) + self.medians
        hyper = m.integer_hyper_synthesis() if self.live_hyper else self.codec.hyper
        scales, means_np = hyper(z_hat.float().cpu().numpy())
        levels = scale_to_level(scales, self.codec.tables.scale_levels)
        y_np = y.float().cpu().numpy()
        idx, y_hat = self.quant.quantize(
            y_np, means_np, levels, self.codec.tables, self.params, self.codec.distortion_weights
        )
        return {
            "x": x,
            "y_hat": torch.from_numpy(y_hat).to(self.device),
            "z_hat": z_hat,
            "indices": idx,
            "y": y,
        }


def _index_bins(indices: np.ndarray, step: float, machine_q: np.ndarray | None):
    """Decision interval [lo, hi) of each index, in latent units relative to the mean."""
    if machine_q is None:  # scalar quantizers: unit bins around the integer
        k = indices.astype(np.float64)
        return k - 0.5, k + 0.5
    k = indices.astype(np.int64)
    rec = T.reconstruction(k, machine_q)
    rec_lo = T.reconstruction(k - 1, machine_q)
    rec_hi = T.reconstruction(k + 1, machine_q)
    return (rec + rec_lo) / 2 * step, (rec + rec_hi) / 2 * step


#: What a stage-2 run is about: a resumed run must be given the same (its schedule may change).
FINETUNE_FIXED = ("ckpt", "quantizer", "parts", "seed", "step", "q_lmbda")


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


def finetune(cfg: FinetuneConfig, resume: bool = False, progress: bool = True) -> Path:
    """Runs (or resumes) a stage-2 run; returns the path of the finetuned model file.

    A fresh run refuses a folder that holds a run already (:func:`check_fresh_run`).
    """
    out = Path(cfg.out)
    check_run_files(out)
    if not resume:
        check_fresh_run(out)
    else:
        check_same_run(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    parent = load_model(cfg.ckpt)
    if parent.meta.get("stage", 1) != 1:
        raise CheckpointError(f"{cfg.ckpt}: finetune a stage-1 model, not a stage-2 one")
    model = parent.model.to(device)
    codec = codec_from_loaded(parent, str(device))
    params = codec.params(cfg.quantizer, cfg.step, cfg.q_lmbda)
    # A calibration stays as it is: the indices are chosen with its tables, and a finetuned
    # hyper-decoder's model is calibrated again afterwards (qaft calibrate).
    train_hs = "hyper-decoder" in cfg.parts
    trained = list(model.g_s.parameters()) + (list(model.h_s.parameters()) if train_hs else [])
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trained:
        p.requires_grad_(True)
    opt = torch.optim.Adam(trained, lr=cfg.lr)
    sampler = CropSampler(cfg.data, cfg.crop, seed=cfg.seed)
    step = 0
    ckpt_path = out / "last.pt"
    if resume:
        state = read_run_checkpoint(ckpt_path)
        parts = {"model": model.load_state_dict, "opt": opt.load_state_dict}
        restore_run_state(ckpt_path, state, {**parts, "sampler": sampler.set_state})
        step = state["step"]
    write_file(out / "config.json", json.dumps(asdict(cfg), indent=2).encode(), replace=True)

    model.eval()  # no layer here behaves differently in training; keeps the analysis exact
    source = _LatentSource(model, codec, cfg.quantizer, params, device, train_hs)
    machine = getattr(QUANTIZERS[cfg.quantizer], "machine", None)
    batches: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:  # decoder only: the encoder side is frozen, safe to run ahead
        while not stop.is_set():
            try:
                item = source(sampler.batch(cfg.batch).to(device))
            except Exception as exc:  # handed to the training loop, which re-raises it
                item = exc
            while not stop.is_set():
                try:
                    batches.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue

    worker = None
    if not train_hs:
        worker = threading.Thread(target=produce, daemon=True)
        worker.start()

    log = io.TextIOWrapper(open_append(out / "log.jsonl"), encoding="utf-8")
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, dynamic_ncols=True)
    acc, n_acc, t0 = {"mse": 0.0, "bpp": 0.0}, 0, time.time()
    lmbda = float(parent.meta.get("lmbda") or 0.01)

    def save_checkpoint() -> None:
        atomic_save(
            {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "sampler": sampler.state(),
                "step": step,
                "config": asdict(cfg),
            },
            ckpt_path,
        )

    with StopRequests() as requests:
        try:
            while step < cfg.steps:
                if requests.requested:
                    save_checkpoint()
                    raise TrainingInterrupted("finetuning", step, ckpt_path)
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * 0.1 ** sum(step >= f * cfg.steps for f in cfg.lr_decay_at)
                b = batches.get() if worker else source(sampler.batch(cfg.batch).to(device))
                if isinstance(b, Exception):
                    raise b
                x = b["x"]
                if train_hs:
                    scales, means = model.hyper_synthesis(b["z_hat"])
                    idx = b["indices"]
                    q_of = None
                    if machine is not None:
                        flat = idx.reshape(-1, idx.shape[-1]).astype(np.int64)
                        q_of = machine.quantizer[T.states_along(flat, machine)].reshape(idx.shape)
                    lo, hi = _index_bins(idx, params.step, q_of)
                    if machine is None:
                        rec = idx.astype(np.float32)
                    else:
                        rec = T.reconstruction(idx.astype(np.int64), q_of) * params.step
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
                    mass = 0.5 * (
                        torch.erfc(-hi_t / s / math.sqrt(2)) - torch.erfc(-lo_t / s / math.sqrt(2))
                    )
                    bits = -torch.log2(mass.clamp_min(1e-9)).sum()
                    bpp = bits / (x.shape[0] * x.shape[2] * x.shape[3])
                else:
                    y_hat = b["y_hat"]
                    bpp = torch.zeros((), device=device)
                mse = torch.mean((model.g_s(y_hat) - x) ** 2)
                loss = lmbda * 255**2 * mse + bpp
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                acc["mse"] += float(mse.detach())
                acc["bpp"] += float(bpp.detach())
                n_acc += 1
                if step % cfg.log_every == 0 or step == cfg.steps:
                    mean = {k: v / n_acc for k, v in acc.items()}
                    rec_ = {
                        "step": step,
                        "mse": mean["mse"],
                        "bpp_y": mean["bpp"],
                        "psnr": -10 * math.log10(max(mean["mse"], 1e-12)),
                        "s_per_step": (time.time() - t0) / n_acc,
                    }
                    log.write(json.dumps(rec_) + "\n")
                    log.flush()
                    bar.set_postfix(psnr=f"{rec_['psnr']:.2f}")
                    acc, n_acc, t0 = dict.fromkeys(acc, 0.0), 0, time.time()
                if step % cfg.ckpt_every == 0 or step == cfg.steps:
                    save_checkpoint()
                bar.update(1)
        finally:
            stop.set()
            if worker:
                worker.join(timeout=10)
            bar.close()
            log.close()
    meta = {
        **parent.meta,
        "stage": 2,
        "finetuned_for": cfg.quantizer,
        "parent_fingerprint": parent.fingerprint.hex(),
        "finetune_steps": step,
        "finetune_parts": list(cfg.parts),
        "finetune_lr": cfg.lr,
        "quantizers": {
            **parent.meta.get("quantizers", {}),
            cfg.quantizer: {"step": params.step, "lmbda": params.lmbda},
        },
    }
    final = out / "model.pt"
    save_model(final, model, meta)
    return final
