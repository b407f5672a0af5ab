"""Latency per pipeline stage, and graph statistics, for one model or two side by side."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from qaft.runtime import codec as C
from qaft.runtime.codec import Codec
from qaft.runtime.model_dir import GRAPHS, ModelDir

ENCODE_STAGES = ("analysis", "hyper_synthesis", "quantization", "entropy_encode")
DECODE_STAGES = ("entropy_decode", "hyper_synthesis", "synthesis")


def graph_stats(model: ModelDir) -> dict:
    """Operator counts by type and parameter counts of the analysis, the integer
    hyper-synthesis and the synthesis (the ONNX graphs need the onnx package: {} without)."""
    try:
        import onnx
    except ImportError:
        return {}
    out = {}
    for name, fname in GRAPHS.items():
        g = onnx.load(str(model.path / fname)).graph
        ops: dict[str, int] = defaultdict(int)
        for node in g.node:
            ops[node.op_type] += 1
        params = int(sum(np.prod(t.dims) for t in g.initializer))
        out[name] = {"operators": dict(sorted(ops.items())), "parameters": params}
    ops = defaultdict(int)
    layers = getattr(model.model.hyper, "layers", ())  # a factorized prior has none
    for layer in layers:
        ops[f"integer {layer.kind}"] += 1
        if layer.activation != "none":
            ops[{"leaky": "leaky relu", "relu": "relu"}[layer.activation]] += 1
    params = sum(layer.weight.size + layer.bias.size for layer in layers)
    out["hyper_synthesis"] = {"operators": dict(sorted(ops.items())), "parameters": params}
    return {k: out[k] for k in ("analysis", "hyper_synthesis", "synthesis")}


def bench(
    codecs: dict[str, Codec], images: list[np.ndarray], quantizer: str = "sq", repeat: int = 3
) -> dict[str, dict[str, float]]:
    """Median seconds per stage and end to end, models measured in alternation."""
    samples: dict[str, dict[str, list[float]]] = {k: defaultdict(list) for k in codecs}
    for img in images:
        for _ in range(repeat):
            for label, codec in codecs.items():
                t0 = time.perf_counter()
                enc = C.encode(codec, img, quantizer)
                t1 = time.perf_counter()
                dec = C.decode(codec, enc.data)
                t2 = time.perf_counter()
                s = samples[label]
                for k in ENCODE_STAGES:
                    s[f"encode.{k}"].append(enc.timings[k])
                for k in DECODE_STAGES:
                    s[f"decode.{k}"].append(dec.timings[k])
                s["encode"].append(t1 - t0)
                s["decode"].append(t2 - t1)
                s["encode+decode"].append(t2 - t0)
    return {label: {k: statistics.median(v) for k, v in s.items()} for label, s in samples.items()}


def load_images(folder: Path | None, count: int) -> list[np.ndarray]:
    """The first ``count`` images of a folder, or synthetic 768x512 images without one."""
    from qaft.runtime.image import IMAGE_SUFFIXES, load_rgb

    if folder is not None:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return [load_rgb(p) for p in files[:count]]
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:512, 0:768]
    base = 128 + 90 * np.sin(xx[..., None] / 23 + yy[..., None] / 31 + np.arange(3))
    return [
        np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8) for _ in range(count)
    ]
