"""Continues the zoo's stage-1 training on a lent GPU machine, all rates side by side.

A lent machine gets only what travels with the working tree (64 MiB), has no package
registry and is held for minutes, so the work is split in three steps:

1. ``pack`` (here): warm starts as bare state dicts, convolutions in fp16 (the coding tables
   are rebuilt there), and the training photographs as JPEG copies (quality 92, no chroma
   subsampling: 21 MB instead of 84 MB of PNG) into a folder that git ignores (45 MiB).
2. ``run`` (there): one ``qaft.training.train`` process per rate, each with a time budget
   (the learning-rate drops follow elapsed time), started together on the one GPU; each
   finished model is written to ``--out`` as a bare state dict with its metadata.
3. ``unpack`` (here): the returned state dicts become ordinary qaft model files.

    python scripts/train_zoo_gpu.py pack --out .gpu
    # on the device, with .gpu and .whl carried:
    python3 scripts/train_zoo_gpu.py run --pack .gpu --out "$OUT" --seconds 480
    python scripts/train_zoo_gpu.py unpack --returned DIR --out runs/gpu

The plan (every bundled stage-1 model, its λ, continuing from its own weights) is read from
the zoo index by ``pack`` and travels as ``plan.json``; docs/training.md records the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The plan travels in the pack: {name: λ} of every bundled stage-1 model, each continuing
#: from its own weights (the zoo index is the one place that knows the rates).
PLAN_FILE = "plan.json"


def _read_plan(pack_dir: Path) -> dict[str, float]:
    return json.loads((pack_dir / PLAN_FILE).read_text())


def _namespace(tmp: Path) -> Path:
    """A ``qaft`` import namespace over the repo's folders, as the package install maps them."""
    pkg = tmp / "qaft"
    pkg.mkdir(parents=True, exist_ok=True)
    for sub in ("training", "runtime", "export", "cli"):
        link = pkg / sub
        if not link.exists():
            link.symlink_to(ROOT / sub)
    return tmp


def pack(out: Path, data: Path, quality: int) -> None:
    import torch
    from PIL import Image

    from qaft.training.checkpoint import load_model
    from qaft.training.zoo import list_models, model_path

    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "warm").mkdir(exist_ok=True)
    for src in sorted(p for p in data.iterdir() if p.suffix.lower() == ".png"):
        with Image.open(src) as im:
            im.convert("RGB").save(
                out / "images" / f"{src.stem}.jpg", "JPEG", quality=quality, subsampling=0
            )
    plan = {e["name"]: e["lmbda"] for e in list_models() if e["stage"] == 1}
    for warm in sorted(plan):
        loaded = load_model(model_path(warm))
        # Convolution weights and biases travel in fp16 (a warm start needs no more, and seven
        # fp32 models plus the photographs would pass the 64 MiB the device tool carries);
        # GDN and entropy-model parameters, small and partly tiny in value, stay fp32.
        state = {
            k: (v.half() if k.endswith((".weight", ".bias")) else v.float()).contiguous()
            for k, v in loaded.model.state_dict().items()
        }
        torch.save(
            {"config": loaded.model.config.to_dict(), "state_dict": state},
            out / "warm" / f"{warm}.pt",
        )
    (out / PLAN_FILE).write_text(json.dumps(plan, indent=1))
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"packed {out}: {total / 2**20:.1f} MiB")


def one(pack_dir: Path, name: str, out: Path, seconds: float, args: argparse.Namespace) -> None:
    """One rate: warm start, time-budgeted training, bare state dict into ``out``."""
    import torch

    from qaft.training.checkpoint import load_blob, save_model
    from qaft.training.models import MeanScaleHyperprior, ModelConfig
    from qaft.training.train import TrainConfig, train

    torch.backends.cudnn.benchmark = True
    lmbda, warm = _read_plan(pack_dir)[name], name
    run = Path(args.runs) / name
    run.mkdir(parents=True, exist_ok=True)
    blob = load_blob(pack_dir / "warm" / f"{warm}.pt")
    model = MeanScaleHyperprior(ModelConfig(**blob["config"]))
    model.load_state_dict(blob["state_dict"])
    init = run / "init.pt"
    save_model(init, model, {"lmbda": lmbda, "stage": 1, "finetuned_for": None})
    cfg = TrainConfig(
        data=str(pack_dir / "images"),
        out=str(run),
        lmbda=lmbda,
        N=model.config.N,
        M=model.config.M,
        steps=10**9,
        time_budget=seconds,
        batch=args.batch,
        crop=args.crop,
        lr=args.lr,
        lr_decay_at=(0.8, 0.95),
        device=args.device,
        init_from=str(init),
        log_every=100,
        ckpt_every=10**9,
        threads=2,
        seed=args.seed,
    )
    final = train(cfg, progress=False)
    done = load_blob(final)
    meta = dict(
        done["meta"],
        init_from=f"zoo {warm}",
        lr=args.lr,
        batch=args.batch,
        crop=args.crop,
        time_budget=seconds,
        device=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    )
    torch.save(
        {"config": done["config"], "state_dict": done["state_dict"], "meta": meta},
        out / f"{name}.pt",
    )


def run(pack_dir: Path, out: Path, seconds: float, args: argparse.Namespace) -> None:
    out.mkdir(parents=True, exist_ok=True)
    paths = [str(_namespace(Path("/tmp/qaftns"))), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p), PYTHONUNBUFFERED="1")
    Path(args.runs).mkdir(parents=True, exist_ok=True)
    names = args.names.split(",") if args.names else list(_read_plan(pack_dir))
    procs = {}
    for name in names:
        cmd = [
            sys.executable,
            __file__,
            "one",
            "--pack",
            str(pack_dir),
            "--name",
            name,
            "--out",
            str(out),
            "--seconds",
            str(seconds),
            "--runs",
            args.runs,
            "--batch",
            str(args.batch),
            "--crop",
            str(args.crop),
            "--lr",
            str(args.lr),
            "--device",
            args.device,
            "--seed",
            str(args.seed),
        ]
        log = open(Path(args.runs) / f"{name}.stdout", "w")
        procs[name] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log)
    t0 = time.time()
    for name, (p, log) in procs.items():
        p.wait()
        log.close()
        print(f"{name}: exit {p.returncode} after {time.time() - t0:.0f} s", flush=True)
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        for f in sorted(Path(args.runs).rglob("*")):
            if f.suffix in (".jsonl", ".stdout", ".json"):
                tar.add(f, arcname=str(f.relative_to(args.runs)))
    for name in names:
        tail = Path(args.runs) / name / "log.jsonl"
        if tail.is_file():
            print(name, tail.read_text().strip().splitlines()[-1], flush=True)
        else:
            print(name, (Path(args.runs) / f"{name}.stdout").read_text()[-1500:], flush=True)


def unpack(returned: Path, out: Path) -> None:

    from qaft.runtime.model import ModelMeta
    from qaft.training.checkpoint import load_blob, save_model
    from qaft.training.models import MeanScaleHyperprior, ModelConfig

    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(returned.glob("q*.pt")):
        blob = load_blob(f)  # files that came back from a lent machine: data, not code
        model = MeanScaleHyperprior(ModelConfig(**blob["config"]))
        model.load_state_dict(blob["state_dict"])
        (out / f.stem).mkdir(exist_ok=True)
        save_model(out / f.stem / "model.pt", model, ModelMeta.from_dict(blob["meta"], f))
        print(f"{out / f.stem / 'model.pt'}: {blob['meta'].get('steps')} steps")
    if (returned / "logs.tar.gz").is_file():
        with tarfile.open(returned / "logs.tar.gz") as tar:
            tar.extractall(out, filter="data")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["pack", "run", "one", "unpack"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pack", type=Path, default=Path(".gpu"))
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "train")
    ap.add_argument("--quality", type=int, default=92)
    ap.add_argument("--returned", type=Path)
    ap.add_argument("--name")
    ap.add_argument("--names", help="Comma-separated subset of the plan (default: all).")
    ap.add_argument("--seconds", type=float, default=480)
    ap.add_argument("--runs", default="/tmp/qaft-runs")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.step == "pack":
        pack(a.out, a.data, a.quality)
    elif a.step == "run":
        run(a.pack, a.out, a.seconds, a)
    elif a.step == "one":
        one(a.pack, a.name, a.out, a.seconds, a)
    else:
        unpack(a.returned, a.out)


if __name__ == "__main__":
    main()
