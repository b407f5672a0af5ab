"""Where the pixel distortion of each quantizer comes from, on one model.

    python benchmarks/quantizer_distortion.py [--model q3] [--images 6] [--refine 0.1]
        [--json results/kodak/quantizer-distortion.json]

The trellis search and rdoq minimize w·(y − ŷ)² + λ·bits in the latent domain, with w from
the synthesis gain (pixel error per unit latent error, measured with random signs).  The
pixel error of an image splits exactly into three terms:

    |x − g_s(ŷ)|² = |x − g_s(y)|²            transform: the model's error without quantization
                  + |g_s(ŷ) − g_s(y)|²       quantization: what the latent-domain D predicts
                  + 2⟨x − g_s(y), g_s(y) − g_s(ŷ)⟩   cross: invisible to any latent-domain D

This prints each term per quantizer (per pixel, 0-255 squared error summed over colours),
the latent-domain prediction Σ gain·(ŷ − y)², the file's bpp and PSNR and the model's own
objective J = λ·MSE + bpp.  ``--refine ETA`` repeats every quantizer on a target moved
against the gradient of the pixel error (y − ETA·∂|x − g_s(y)|²/∂y / (2·gain)): a first-order
way to put the cross term into the search (PyTorch; a diagnostic, not a codec mode).
Kodak images, real coded sizes; nothing is tuned on them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from qaft.runtime.image import load_rgb
from qaft.runtime.quantizers import QUANTIZERS, QuantizerParams
from qaft.runtime.quantizers.base import encode_latent
from qaft.runtime.tiling import to_uint8
from qaft.runtime.tools.rate_distortion import default_images
from qaft.training.backend import codec_from_loaded
from qaft.training.checkpoint import load_model
from qaft.training.tune import prepare
from qaft.training.zoo import DEFAULT_MODEL, model_path


def pixels(x_hat: np.ndarray, h: int, w: int) -> np.ndarray:
    """The synthesis output as (h, w, 3) float64 on 0-255, not rounded: the terms must add
    up exactly (the 8-bit image is :func:`to_uint8` of the same output)."""
    return x_hat[0, :, :h, :w].transpose(1, 2, 0).astype(np.float64) * 255.0


def pixel_gradient(g_s, y: np.ndarray, image: np.ndarray) -> np.ndarray:
    """∂|x − g_s(y)|²/∂y (0-255 units, colours summed), float64 shaped like y."""
    h, w = image.shape[:2]
    yt = torch.from_numpy(y).requires_grad_(True)
    x = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]
    sse = ((g_s(yt)[..., :h, :w] * 255.0 - x) ** 2).sum()
    (grad,) = torch.autograd.grad(sse, yt)
    return grad.numpy().astype(np.float64)


def settings(codec, extra_lmbda: float) -> list[tuple[str, QuantizerParams]]:
    """Each quantizer at the model's measured setting, and tcq at λ = 0 and ``extra_lmbda``."""
    out = [(q, codec.model.params(q)) for q in QUANTIZERS]
    delta = codec.model.params("tcq").delta
    out += [("tcq", QuantizerParams(delta, 0.0)), ("tcq", QuantizerParams(delta, extra_lmbda))]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--ckpt", help="a model file instead of a bundled model")
    ap.add_argument("--data", default=default_images())
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--extra-lmbda", type=float, default=0.5)
    ap.add_argument("--refine", type=float, action="append", default=[])
    ap.add_argument("--json")
    args = ap.parse_args()
    if not args.data:
        raise SystemExit("error: no Kodak folder: pass --data DIR")
    torch.set_num_threads(args.threads)
    loaded = load_model(args.ckpt or model_path(args.model))
    codec = codec_from_loaded(loaded)
    lam = float(loaded.meta.lmbda)
    gain = np.asarray(loaded.meta.synthesis_gain, dtype=np.float64).reshape(1, -1, 1, 1)
    syn = codec.networks.synthesis
    files = sorted(Path(args.data).glob("*.png"))[: args.images]
    prepared = [prepare(codec, load_rgb(f)) for f in files]
    # per image, independent of the quantizer: the source, g_s(y) and the transform term
    clean = []
    for p in prepared:
        x, xy = p.image.astype(np.float64), pixels(syn(p.y), *p.image.shape[:2])
        clean.append((x, xy, float(np.sum((xy - x) ** 2))))
    grads = (
        [pixel_gradient(loaded.model.g_s, p.y, p.image) for p in prepared] if args.refine else []
    )

    rows = []
    for eta in [0.0, *args.refine]:
        for name, params in settings(codec, args.extra_lmbda):
            acc = dict.fromkeys(["bits", "px", "total", "transform", "quant", "cross", "pred"], 0.0)
            for i, (p, (x, xy, transform)) in enumerate(zip(prepared, clean)):
                target = p.y if eta == 0 else (p.y - eta * grads[i] / (2 * gain)).astype(np.float32)
                lat = encode_latent(QUANTIZERS[name], target, p.prior, params)
                h, w = p.image.shape[:2]
                raw = syn(lat.y_hat)
                xq = pixels(raw, h, w)
                acc["bits"] += 8 * (p.fixed_bytes + sum(len(s) for s in lat.sections))
                acc["px"] += h * w
                acc["total"] += float(np.sum((to_uint8(raw, h, w) - x) ** 2))
                acc["transform"] += transform
                acc["quant"] += float(np.sum((xq - xy) ** 2))
                acc["cross"] += float(2 * np.sum((xy - x) * (xq - xy)))
                acc["pred"] += float(np.sum(gain * (lat.y_hat - p.y).astype(np.float64) ** 2))
            n = acc.pop("px")
            r = {k: v / n for k, v in acc.items()}
            bpp, mse = r.pop("bits"), r["total"] / 3
            rows.append(
                {
                    "quantizer": name, "step": params.delta, "lmbda": params.rdo_lambda,
                    "refine": eta,
                    "bpp": bpp, "psnr": 10 * np.log10(255**2 / mse), **r, "J": bpp + lam * mse,
                }
            )  # fmt: skip
    name = args.ckpt or args.model
    print(f"model {name} (λ {lam}), {len(files)} images of {args.data}; squared error per pixel")
    print("(0-255, colours summed); total is of the 8-bit output, the terms of the float one\n")
    head = "quantizer      Δ     λ  refine    bpp   PSNR   total  transf.  quant.  cross  pred.  J"
    print(head)
    for r in rows:
        print(
            f"{r['quantizer']:<8} {r['step']:5.2f} {r['lmbda']:5.2f} {r['refine']:6.2f} "
            f"{r['bpp']:6.4f} {r['psnr']:6.3f} {r['total']:7.1f} {r['transform']:7.1f} "
            f"{r['quant']:7.1f} {r['cross']:6.1f} {r['pred']:6.1f} {r['J']:.4f}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"model": name, "images": [f.name for f in files], "rows": rows},
                       indent=1) + "\n"
        )  # fmt: skip


if __name__ == "__main__":
    main()
