"""What a backend's precision costs: PSNR and rate on Kodak, every precision on the same images.

    python benchmarks/precision_psnr.py --data ../shared/data/kodak [--model q3] \
        [--configs cpu:fp32,openvino:fp32,openvino:bf16] [--json results/kodak/precision-psnr.json]

Each configuration encodes and decodes every image with its own networks at both ends (what
a user running one backend sees); the files of every configuration decode with every other
(``benchmarks/exact_matrix.py``), only the float analysis and synthesis differ.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from qaft.runtime import codec as C
from qaft.runtime.backends.onnx import onnx_codec
from qaft.runtime.image import IMAGE_SUFFIXES, load_rgb
from qaft.runtime.metrics import psnr
from qaft.runtime.model_dir import open_model_dir
from qaft.runtime.tools.rate_distortion import default_images
from qaft.runtime.zoo import model_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=default_images(), help="image folder (default: $QAFT_DATA)")
    ap.add_argument("--model", default="q3")
    ap.add_argument("--configs", default="cpu:fp32,openvino:fp32,openvino:bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.data is None:
        ap.error("no image folder: pass --data DIR (Kodak) or set QAFT_DATA")
    md = open_model_dir(model_path(args.model))
    codecs = {}
    for spec in args.configs.split(","):
        backend, _, precision = spec.partition(":")
        codecs[spec] = onnx_codec(md, backend, args.threads, precision or "fp32")
    files = sorted(p for p in Path(args.data).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    rows = []
    for f in files:
        img = load_rgb(f)
        row = {"image": f.name}
        for k, codec in codecs.items():
            data = C.encode(codec, img).data
            out = C.decode(codec, data).image
            row[k] = {"psnr": psnr(img, out), "bpp": len(data) * 8 / (img.shape[0] * img.shape[1])}
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = next(iter(codecs))
    summary = {}
    for k in codecs:
        d = [r[k]["psnr"] - r[base]["psnr"] for r in rows]
        rate = [r[k]["bpp"] / r[base]["bpp"] - 1 for r in rows]
        summary[k] = {
            "psnr": float(np.mean([r[k]["psnr"] for r in rows])),
            "bpp": float(np.mean([r[k]["bpp"] for r in rows])),
            f"psnr_minus_{base}": {"mean": float(np.mean(d)), "min": min(d), "max": max(d)},
            f"rate_vs_{base}": {"mean": float(np.mean(rate)), "min": min(rate), "max": max(rate)},
        }
        print(f"{k}: {json.dumps(summary[k])}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"model": args.model, "summary": summary, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
