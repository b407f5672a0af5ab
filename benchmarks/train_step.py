"""Time per stage-1 training step by memory layout and compilation, side by side in one run.

    python benchmarks/train_step.py [--N 64 --M 96] [--batch 8] [--crop 128] [--threads 2]
        [--steps 15] [--compile] [--amp auto|bf16|none]

Each variant trains a fresh model (same seed, same random batch) through the training
loop's own step (:func:`qaft.training.train.train_step`) and prints the median time of
``--steps`` steps after three warm-up steps (compilation happens during the warm-up).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from qaft.training.models import MeanScaleHyperprior, ModelConfig
from qaft.training.train import TrainConfig, make_optimizers, place, resolve_amp, train_step


def time_variant(args, channels_last: bool, compile_: bool) -> tuple[float, float]:
    """(warm-up seconds, median seconds per step)."""
    torch.manual_seed(0)
    cfg = TrainConfig(
        data="-", out="-", lmbda=0.0067, N=args.N, M=args.M, batch=args.batch, crop=args.crop,
        channels_last=channels_last, compile=compile_,
        amp=resolve_amp(args.amp, torch.device("cpu")),
    )  # fmt: skip
    model = MeanScaleHyperprior(ModelConfig(cfg.N, cfg.M)).train()
    layout, forward = place(model, cfg, torch.device("cpu"))
    optim = make_optimizers(model, cfg)
    x = torch.rand(cfg.batch, 3, cfg.crop, cfg.crop).contiguous(memory_format=layout)
    t0 = time.perf_counter()
    for _ in range(3):
        train_step(forward, model, x, cfg, optim)
    warm = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        train_step(forward, model, x, cfg, optim)
        times.append(time.perf_counter() - t)
    return warm, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, default=64)
    ap.add_argument("--M", type=int, default=96)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--amp", default="auto", choices=["auto", "bf16", "none"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = [("contiguous (NCHW)", False, False), ("channels-last", True, False)]
    if args.compile:
        variants.append(("channels-last + torch.compile", True, True))
    print(
        f"N={args.N} M={args.M}, batch {args.batch} of {args.crop}², "
        f"amp {resolve_amp(args.amp, torch.device('cpu'))} ({args.amp}), "
        f"{args.threads} threads, median of {args.steps} steps\n"
    )
    base = None
    for name, cl, comp in variants:
        warm, med = time_variant(args, cl, comp)
        base = base or med
        print(f"{name:<32} {med * 1000:7.1f} ms/step  {base / med:5.2f}x  (warm-up {warm:.1f} s)")


if __name__ == "__main__":
    main()
