"""qaft-run against CompressAI on the same weights, side by side in one run.

    python benchmarks/vs_compressai.py --compressai-python /path/to/venv/bin/python \
        [--model q3] [--images 6] [--threads 2]

CompressAI 1.2.8 needs numpy<2 and its own torch, so it lives in a separate environment:
``python3 -m venv cai && cai/bin/pip install torch==2.14.1 torchvision==0.29.1 "numpy<2"
compressai==1.2.8``.  The zoo model's weights are written as a bare state dict (CompressAI's
parameter names), loaded into CompressAI's ``MeanScaleHyperprior`` there, and its
``compress``/``decompress`` are timed on the same images as ``qaft-run``'s ONNX Runtime path.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from qaft.runtime import codec as C
from qaft.runtime.evaluation import default_kodak
from qaft.runtime.image import IMAGE_SUFFIXES, load_rgb
from qaft.runtime.model_dir import open_model_dir
from qaft.runtime.onnx_backend import onnx_codec
from qaft.runtime.zoo import model_path
from qaft.training.checkpoint import load_model
from qaft.training.zoo import model_path as checkpoint_path

# Runs inside the CompressAI environment: argv = state_dict, N, M, threads, repeat, images...
COMPRESSAI_SIDE = r"""
import json, statistics, sys, time
import numpy as np, torch
from PIL import Image
from compressai.models import MeanScaleHyperprior
sd_path, N, M, threads, repeat, *images = sys.argv[1:]
torch.set_num_threads(int(threads))
net = MeanScaleHyperprior(int(N), int(M))
net.update(force=True)
sd, own = torch.load(sd_path), net.state_dict()
assert set(sd) <= set(own), set(sd) - set(own)
# CompressAI's loader wants its CDF buffers present; they are rebuilt right after.
assert all(k.rsplit(".", 1)[-1] in ("_offset", "_quantized_cdf", "_cdf_length")
           for k in set(own) - set(sd))
net.load_state_dict({**own, **sd})
net.update(force=True)
net.eval()
out = []
for p in images:
    x = np.asarray(Image.open(p).convert("RGB"))
    x = torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255
    h, w = x.shape[2:]
    ph, pw = (-h) % 64, (-w) % 64
    xp = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
    te, td = [], []
    with torch.no_grad():
        for _ in range(int(repeat)):
            t0 = time.perf_counter()
            enc = net.compress(xp)
            t1 = time.perf_counter()
            net.decompress(enc["strings"], enc["shape"])
            te.append(t1 - t0)
            td.append(time.perf_counter() - t1)
    nbytes = sum(len(s[0]) for s in enc["strings"])
    out.append({"image": p, "encode": statistics.median(te), "decode": statistics.median(td),
                "bytes": nbytes, "pixels": h * w})
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compressai-python", required=True)
    ap.add_argument("--model", default="q3")
    ap.add_argument("--data", default=default_kodak())
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    files = sorted(p for p in Path(args.data).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    files = [str(p) for p in files[: args.images]]
    loaded = load_model(checkpoint_path(args.model))
    with tempfile.TemporaryDirectory() as tmp:
        sd = Path(tmp) / "state_dict.pt"
        torch.save({k: v.clone() for k, v in loaded.model.state_dict().items()}, sd)
        cfg = loaded.model.config
        res = subprocess.run(
            [
                args.compressai_python,
                "-c",
                COMPRESSAI_SIDE,
                str(sd),
                str(cfg.N),
                str(cfg.M),
                str(args.threads),
                str(args.repeat),
                *files,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    cai = json.loads(res.stdout.strip().splitlines()[-1])
    codec = onnx_codec(open_model_dir(model_path(args.model)), "cpu", args.threads)
    print(
        f"model {args.model}, {len(files)} images, {args.threads} threads, medians of "
        f"{args.repeat}; CompressAI {cfg.N}/{cfg.M} on the same weights"
    )
    print(
        f"{'image':<14}{'CAI enc':>9}{'qaft enc':>9}{'x':>6}{'CAI dec':>9}{'qaft dec':>9}"
        f"{'x':>6}{'CAI B':>8}{'qaft B':>8}"
    )
    rows = []
    for f, c in zip(files, cai):
        img = load_rgb(f)
        te, td = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            data = C.encode(codec, img).data
            te.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            C.decode(codec, data)
            td.append(time.perf_counter() - t0)
        e, d = statistics.median(te), statistics.median(td)
        rows.append((c["encode"] / e, c["decode"] / d, len(data) / c["bytes"]))
        print(
            f"{Path(f).name:<14}{c['encode'] * 1e3:>9.0f}{e * 1e3:>9.0f}{rows[-1][0]:>6.2f}"
            f"{c['decode'] * 1e3:>9.0f}{d * 1e3:>9.0f}{rows[-1][1]:>6.2f}"
            f"{c['bytes']:>8}{len(data):>8}"
        )
    med = np.median(np.array(rows), axis=0)
    print(
        f"median speed-up: compress {med[0]:.2f}x, decompress {med[1]:.2f}x; "
        f"qaft file size / CompressAI's: {med[2]:.3f}"
    )


if __name__ == "__main__":
    main()
