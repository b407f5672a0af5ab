"""What the exact entropy parameters cost: BD-rate and latency against the float path.

    python benchmarks/exact_cost.py --json results/kodak/exact-cost.json
    python benchmarks/exact_cost.py --skip-rd --latency-images 8 --repeat 5   # latency only

Rate-distortion: every zoo model coded on Kodak twice with the same PyTorch networks, once
with the tables chosen by the float ``h_s`` (what the models did before, and what a learned
codec usually does) and once by the integer hyper-synthesis; BD-rate (PSNR-RGB, Akima) of the
exact path against the float path for each group (stage-1 with ``sq``, stage-2 ``sq`` models
with ``sq``, stage-2 ``tcq`` models with ``tcq``).  Latency: the bundled ``q3`` through ONNX
Runtime (CPU, ``--threads``), encode and decode per image, the integer hyper-synthesis
against the float ``h_s`` exported to ONNX for this run, measured alternately in one process;
medians and their ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from qaft.runtime import codec as C
from qaft.runtime.backends.onnx import onnx_codec
from qaft.runtime.image import load_rgb
from qaft.runtime.model_dir import open_model_dir
from qaft.runtime.tools.rate_distortion import curve_point, results_json
from qaft.runtime.zoo import model_path
from qaft.training.backend import codec_from_loaded
from qaft.training.bdrate import bd_rate
from qaft.training.checkpoint import load_model
from qaft.training.data import list_images
from qaft.training.evaluate import default_images, evaluate_codec
from qaft.training.zoo import list_models
from qaft.training.zoo import model_path as ckpt_path

GROUPS = {
    "stage 1, sq": (1, None, "sq"),
    "stage 2 for sq, sq": (2, "sq", "sq"),
    "stage 2 for tcq, tcq": (2, "tcq", "tcq"),
}


class FloatHyper:
    """Tables chosen from the float ``h_s`` of a PyTorch model (the hazard, for comparison)."""

    def __init__(self, model):
        self.model = model

    @torch.no_grad()
    def __call__(self, z_hat: np.ndarray):
        scales, means = self.model.h_s(torch.from_numpy(z_hat)).chunk(2, 1)
        return scales.numpy().astype(np.float64), means.numpy()


class OnnxFloatHyper:
    """The float ``h_s`` as an ONNX Runtime session (what model folders held before)."""

    def __init__(self, model, folder: Path, threads: int):
        import onnxruntime as ort

        path = folder / "h_s.onnx"
        dyn = {"z": {2: "h", 3: "w"}, "o": {2: "h", 3: "w"}}
        torch.onnx.export(model.h_s, (torch.rand(1, model.config.N, 2, 3),), str(path),
                          input_names=["z"], output_names=["o"], dynamic_axes=dyn,
                          opset_version=17, dynamo=False)  # fmt: skip
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        # as the codecs' sessions: spinning threads would take the next session's cores
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, z_hat: np.ndarray):
        out = self.sess.run(None, {"z": np.ascontiguousarray(z_hat, np.float32)})[0]
        m = out.shape[1] // 2
        return out[:, :m].astype(np.float64), out[:, m:]


def _curve(points: list[dict], name: str) -> dict:
    return results_json(name, name, sorted(points, key=lambda p: p["summary"]["bpp"]))


def rd_cost(images: list[Path]) -> dict:
    out = {}
    for group, (stage, ft, q) in GROUPS.items():
        entries = [e for e in list_models() if e["stage"] == stage]
        entries = [e for e in entries if e["finetuned_for"] == ft]
        pts = {"float": [], "exact": []}
        for e in entries:
            loaded = load_model(e["path"])
            exact = codec_from_loaded(loaded)
            flt = dataclasses.replace(
                exact, model=dataclasses.replace(exact.model, hyper=FloatHyper(loaded.model))
            )
            for kind, codec in (("float", flt), ("exact", exact)):
                res = evaluate_codec(codec, images, q)
                pts[kind].append(curve_point(res, {"name": e["name"]}, q, codec.model.params(q)))
                s = pts[kind][-1]["summary"]
                print(f"{e['name']:>7} {q:>4} {kind:>5}: {s['bpp']:.5f} bpp {s['psnr']:.4f} dB",
                      flush=True)  # fmt: skip
        flt_c, ex_c = _curve(pts["float"], "float"), _curve(pts["exact"], "exact")
        out[group] = {
            "bd_rate_exact_vs_float": bd_rate(flt_c["results"], ex_c["results"]),
            "float": flt_c["results"],
            "exact": ex_c["results"],
        }
        print(f"{group}: BD-rate of the exact path against the float path "
              f"{out[group]['bd_rate_exact_vs_float']:+.3f}%", flush=True)  # fmt: skip
    return out


def latency(images: list[Path], threads: int, repeat: int, quantizer: str) -> dict:
    md = open_model_dir(model_path("q3"))
    loaded = load_model(ckpt_path("q3"))
    with tempfile.TemporaryDirectory() as tmp:
        exact = onnx_codec(md, "cpu", threads)
        flt = dataclasses.replace(
            exact,
            model=dataclasses.replace(
                exact.model, hyper=OnnxFloatHyper(loaded.model, Path(tmp), threads)
            ),
        )
        times = {k: {"encode": [], "decode": [], "hyper": []} for k in ("float", "exact")}
        for path in images:
            img = load_rgb(path)
            for _ in range(repeat):
                for kind, codec in (("float", flt), ("exact", exact)):
                    t0 = time.perf_counter()
                    enc = C.encode(codec, img, quantizer)
                    t1 = time.perf_counter()
                    dec = C.decode(codec, enc.data)
                    t2 = time.perf_counter()
                    times[kind]["encode"].append(t1 - t0)
                    times[kind]["decode"].append(t2 - t1)
                    times[kind]["hyper"].append(dec.timings["hyper_synthesis"])
    med = {k: {s: statistics.median(v) * 1e3 for s, v in d.items()} for k, d in times.items()}
    ratio = {s: med["exact"][s] / med["float"][s] for s in ("encode", "decode")}
    print(f"latency, q3, {len(images)} images x {repeat}, {threads} threads, {quantizer}:")
    for k in ("float", "exact"):
        print(f"  {k:>5}: encode {med[k]['encode']:.1f} ms, decode {med[k]['decode']:.1f} ms, "
              f"hyper-synthesis {med[k]['hyper']:.1f} ms (medians)")  # fmt: skip
    print(f"  ratio exact/float: encode {ratio['encode']:.3f}, decode {ratio['decode']:.3f}")
    return {"medians_ms": med, "ratio": ratio, "threads": threads, "images": len(images),
            "repeat": repeat, "quantizer": quantizer}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=default_images())
    ap.add_argument("--images", type=int, default=0, help="Kodak images for RD (0: all).")
    ap.add_argument("--latency-images", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-rd", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    if not args.data:
        raise SystemExit("needs Kodak: --data or ../shared/data/kodak")
    images = list_images(args.data)
    report = {}
    if args.skip_rd and args.json and Path(args.json).is_file():  # keep the RD part measured before
        report = {k: v for k, v in json.loads(Path(args.json).read_text()).items() if k == "rd"}
    if not args.skip_rd:
        report["rd"] = rd_cost(images[: args.images] if args.images else images)
    report["latency"] = {
        q: latency(images[: args.latency_images], args.threads, args.repeat, q)
        for q in ("sq", "tcq")
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
