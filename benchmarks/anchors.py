"""JPEG and WebP anchors through Pillow: real files, PSNR-RGB and MS-SSIM per quality.

    python benchmarks/anchors.py --data ../shared/data/kodak --out results/kodak

Writes ``jpeg.json`` and ``webp.json`` in CompressAI's results layout.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from qaft.runtime.image import load_rgb
from qaft.runtime.metrics import psnr
from qaft.training.data import list_images
from qaft.training.evaluate import ImageResult, msssim_rgb, results_json, summarize

QUALITIES = {"jpeg": [10, 20, 30, 45, 60, 75, 85, 92], "webp": [5, 15, 30, 45, 60, 75, 85, 92]}


def code(image: np.ndarray, fmt: str, quality: int) -> tuple[bytes, np.ndarray, float, float]:
    t0 = time.perf_counter()
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt.upper(), quality=quality)
    t1 = time.perf_counter()
    dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return buf.getvalue(), dec, t1 - t0, time.perf_counter() - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    images = [(p, load_rgb(p)) for p in list_images(args.data)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for fmt, qualities in QUALITIES.items():
        points = []
        for q in qualities:
            res = []
            for path, img in images:
                data, dec, te, td = code(img, fmt, q)
                h, w = img.shape[:2]
                res.append(
                    ImageResult(
                        path.name,
                        len(data),
                        8 * len(data) / (h * w),
                        psnr(img, dec),
                        msssim_rgb(img, dec),
                        te,
                        td,
                    )
                )
            s = summarize(res)
            print(f"{fmt} q={q}: {s['bpp']:.3f} bpp {s['psnr']:.2f} dB")
            points.append({"summary": s, "images": res, "model": {"quality": q}})
        desc = f"Pillow {fmt.upper()} on {len(images)} images, default settings, real files"
        (out / f"{fmt}.json").write_text(
            json.dumps(results_json(fmt.upper(), desc, points), indent=2)
        )


if __name__ == "__main__":
    main()
