"""The cross-backend matrix: every encoder against every decoder, on the zoo and Kodak.

    python benchmarks/exact_matrix.py --json results/exact-matrix.json            # 15 models
    python benchmarks/exact_matrix.py --models q3 --synthesis --json results/exact-matrix-q3.json

Encoders and decoders: the PyTorch path, ONNX Runtime fp32 with 1 and 2 threads, ONNX
Runtime with the fp16 graphs (2 threads), ONNX Runtime fp32 with its graph optimizations
off, and where the openvino package is installed OpenVINO at fp32 (1 thread) and bf16 (2
threads, where the CPU has bf16). Each encoder writes a file for every (model, quantizer,
image); every decoder decodes every file; a pair counts as a mismatch when the decoded
indices (y and z) differ from the encoder's, and as a failure when decoding raises. Without
``--synthesis`` the decoders stop after the entropy decoding (the part that recovers the
indices: it runs no float network); with it each decode is complete, synthesis included. The
table also counts how many distinct files the encoders wrote: their float networks do
differ.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from qaft.runtime import codec as C
from qaft.runtime.backends.onnx import available_backends, onnx_codec
from qaft.runtime.image import load_rgb
from qaft.runtime.model_dir import open_model_dir
from qaft.runtime.zoo import model_path
from qaft.training.backend import codec_from_loaded
from qaft.training.checkpoint import load_model
from qaft.training.data import list_images
from qaft.training.evaluate import default_images
from qaft.training.zoo import list_models

#: (name, threads, precision, graph optimizations); None threads: the PyTorch path; a name
#: starting with ov- runs on OpenVINO.
VARIANTS = [
    ("torch", None, "fp32", True),
    ("ort-fp32-1t", 1, "fp32", True),
    ("ort-fp32-2t", 2, "fp32", True),
    ("ort-fp16-2t", 2, "fp16", True),
    ("ort-fp32-noopt", 1, "fp32", False),
]
if "openvino" in available_backends():
    VARIANTS += [("ov-fp32-1t", 1, "fp32", True), ("ov-auto-2t", 2, "auto", True)]


def codecs_for(entry: dict) -> dict[str, C.Codec]:
    md = open_model_dir(model_path(entry["name"]))
    out = {}
    for name, threads, precision, optimize in VARIANTS:
        if threads is None:
            out[name] = codec_from_loaded(load_model(entry["path"]))
        else:
            backend = "openvino" if name.startswith("ov-") else "cpu"
            out[name] = onnx_codec(md, backend, threads, precision, optimize)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=default_images())
    ap.add_argument("--models", default="all", help="Comma-separated zoo names (default: all).")
    ap.add_argument("--quantizers", default="sq,tcq")
    ap.add_argument("--images", type=int, default=0, help="First N images (0: all).")
    ap.add_argument("--synthesis", action="store_true", help="Decode completely.")
    ap.add_argument("--json")
    args = ap.parse_args()
    if not args.data:
        raise SystemExit("needs Kodak: --data or ../shared/data/kodak")
    images = list_images(args.data)
    images = images[: args.images] if args.images else images
    entries = list_models()
    if args.models != "all":
        wanted = args.models.split(",")
        entries = [e for e in entries if e["name"] in wanted]
    quantizers = args.quantizers.split(",")
    rows, t_start = [], time.time()
    total = {"pairs": 0, "mismatches": 0, "failures": 0}
    for e in entries:
        codecs = codecs_for(e)
        for q in quantizers:
            row = {"model": e["name"], "quantizer": q, "images": len(images), "pairs": 0,
                   "mismatches": 0, "failures": 0, "distinct_files": []}  # fmt: skip
            for path in images:
                img = load_rgb(path)
                streams = {k: C.encode(c, img, q) for k, c in codecs.items()}
                row["distinct_files"].append(len({s.data for s in streams.values()}))
                for enc_name, enc in streams.items():
                    for dec_name, dec_codec in codecs.items():
                        row["pairs"] += 1
                        try:
                            dec = C.decode(dec_codec, enc.data, synthesize=args.synthesis)
                        except Exception as exc:  # a failure is what this counts
                            row["failures"] += 1
                            print(f"FAIL {e['name']} {q} {path.name} {enc_name}->{dec_name}: "
                                  f"{type(exc).__name__}: {exc}", flush=True)  # fmt: skip
                            continue
                        same = np.array_equal(dec.y_indices, enc.y_indices) and np.array_equal(
                            dec.z_indices, enc.z_indices
                        )
                        if not same:
                            row["mismatches"] += 1
                            print(f"MISMATCH {e['name']} {q} {path.name} {enc_name}->{dec_name}",
                                  flush=True)  # fmt: skip
            for k in total:
                total[k] += row[k]
            d = row["distinct_files"]
            print(f"{e['name']:>7} {q:>4}: {row['pairs']} pairs, {row['mismatches']} mismatches, "
                  f"{row['failures']} failures; distinct files per image: min {min(d)}, "
                  f"max {max(d)}, mean {np.mean(d):.2f} ({time.time() - t_start:.0f} s)",
                  flush=True)  # fmt: skip
            rows.append(row)
            if args.json:  # written as it goes: a stopped run keeps what it measured
                Path(args.json).write_text(json.dumps(
                    {"variants": [v[0] for v in VARIANTS], "synthesis": args.synthesis,
                     "total": total, "rows": rows}, indent=1))  # fmt: skip
    print(f"total: {total['pairs']} encoder/decoder pairs, {total['mismatches']} mismatches, "
          f"{total['failures']} failures ({time.time() - t_start:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
