"""qaft-run against CompressAI on the same weights, side by side in one run: per image, per
stage, and whole folders (PNG in and out).

    python benchmarks/vs_compressai.py --compressai-python /path/to/venv/bin/python \
        [--data DIR] [--model q3] [--images 6] [--threads 2] [--backends cpu,openvino:fp32]

Each ``--backends`` entry (``backend[:precision]``; default: ONNX Runtime's cpu and, where
the openvino package is installed, OpenVINO at fp32 and at its default precision) is timed
on every image; CompressAI (a process of its own, kept running) and the backends take turns
image by image within each repetition, so that every ratio is measured under the same load.

CompressAI 1.2.8 needs numpy<2 and its own torch, so it lives in a separate environment:
``python3 -m venv cai && cai/bin/pip install torch==2.14.1 torchvision==0.29.1 "numpy<2"
compressai==1.2.8``.  The zoo model's weights are written as a bare state dict (CompressAI's
parameter names), loaded into CompressAI's ``MeanScaleHyperprior`` there, and its
``compress``/``decompress`` are timed on the same images as qaft's backends.
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
from qaft.runtime.backends.onnx import available_backends, onnx_codec
from qaft.runtime.image import IMAGE_SUFFIXES, load_rgb
from qaft.runtime.model_dir import open_model_dir
from qaft.runtime.tools.rate_distortion import default_images
from qaft.runtime.zoo import model_path
from qaft.training.checkpoint import load_model
from qaft.training.zoo import model_path as checkpoint_path

# Runs inside the CompressAI environment: argv = state_dict, N, M, threads, images...; then
# one line per request on stdin (an image's index) is answered with one JSON line (that
# image's encode and decode times and bytes), so that the calls take turns with qaft's.
COMPRESSAI_SIDE = r"""
import json, sys, time
import numpy as np, torch
from PIL import Image
from compressai.models import MeanScaleHyperprior
sd_path, N, M, threads, *images = sys.argv[1:]
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
padded = []
for p in images:
    x = np.asarray(Image.open(p).convert("RGB"))
    x = torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255
    h, w = x.shape[2:]
    ph, pw = (-h) % 64, (-w) % 64
    padded.append(torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate"))
eb, gc = net.entropy_bottleneck, net.gaussian_conditional


def hyper(z_hat):
    scales, means = net.h_s(z_hat).chunk(2, 1)
    return gc.build_indexes(scales), means


print("ready", flush=True)
for line in sys.stdin:
    if line.startswith("folder "):  # the whole-folder loop, PNG reading and writing included
        src, out = line.split()[1:]
        t0 = time.perf_counter()
        for i, p in enumerate(images):
            x = np.asarray(Image.open(p).convert("RGB"))
            h, w = x.shape[:2]
            x = torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255
            x = torch.nn.functional.pad(x, (0, (-w) % 64, 0, (-h) % 64), mode="replicate")
            with torch.no_grad():
                enc = net.compress(x)
                x_hat = net.decompress(enc["strings"], enc["shape"])["x_hat"][..., :h, :w]
            img = (x_hat[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            Image.fromarray(img).save(f"{out}/{i}.png")
        print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)
        continue
    xp = padded[int(line)]
    t = {}
    with torch.no_grad():  # MeanScaleHyperprior.compress and .decompress, stage by stage
        t0 = time.perf_counter()
        y = net.g_a(xp)
        z = net.h_a(y)
        t["analysis"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        z_strings = eb.compress(z)
        z_hat = eb.decompress(z_strings, z.size()[-2:])
        t["entropy_encode"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        indexes, means = hyper(z_hat)
        t["hyper_synthesis"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        y_strings = gc.compress(y, indexes, means=means)
        t["entropy_encode"] += time.perf_counter() - t0
        encode = sum(t.values())
        t0 = time.perf_counter()
        z_hat = eb.decompress(z_strings, z.size()[-2:])
        t["d_entropy_decode"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        indexes, means = hyper(z_hat)
        t["d_hyper_synthesis"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        y_hat = gc.decompress(y_strings, indexes, means=means)
        t["d_entropy_decode"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        net.g_s(y_hat).clamp_(0, 1)
        t["d_synthesis"] = time.perf_counter() - t0
    decode = sum(v for k, v in t.items() if k.startswith("d_"))
    nbytes = len(y_strings[0]) + len(z_strings[0])
    r = {"encode": encode, "decode": decode, "bytes": nbytes, "stages": t}
    print(json.dumps(r), flush=True)
"""


def _backend_specs(arg: str | None) -> list[tuple[str, str]]:
    """``cpu,openvino:bf16`` -> [(backend, precision)]; None: the CPU backends here."""
    if arg is None:
        specs = [("cpu", "fp32")]
        if "openvino" in available_backends():
            specs += [("openvino", "fp32"), ("openvino", "auto")]
        return specs
    return [(b, p or "fp32") for b, _, p in (x.partition(":") for x in arg.split(","))]


def _whole_folder(cai, files: list[str], model: str, codecs: dict, threads: int, tmp: Path) -> dict:
    """Images per second of a whole folder, compressed and decompressed back to PNG:
    CompressAI's loop (one process, its PNG writer at Pillow's default level) against
    ``qaft-run compress`` then ``decompress`` (whole processes, model loads included) with
    one job of ``threads`` threads and with two jobs of one thread."""
    import shutil
    import sys

    src = tmp / "folder"
    src.mkdir()
    for f in files:
        (src / Path(f).name).symlink_to(Path(f).resolve())
    out = tmp / "cai-out"
    out.mkdir()
    cai.stdin.write(f"folder {src} {out}\n")
    cai.stdin.flush()
    seconds = json.loads(cai.stdout.readline())["seconds"]
    result = {"CompressAI loop": f"{len(files) / seconds:.2f} images/s ({seconds:.1f} s)"}
    exe = str(Path(sys.executable).parent / "qaft-run")
    for label, jobs, t in (("1 job", 1, threads), ("2 jobs", 2, 1)):
        for k in codecs:
            backend, _, precision = k.partition(":")
            coded, back = tmp / "coded", tmp / "back"
            common = ["--model", model, "--backend", backend, "--precision", precision,
                      "--jobs", str(jobs), "--threads", str(t)]  # fmt: skip
            t0 = time.perf_counter()
            subprocess.run([exe, "compress", str(src), "-o", str(coded), *common], check=True,
                           capture_output=True)  # fmt: skip
            t1 = time.perf_counter()
            subprocess.run([exe, "decompress", str(coded), "-o", str(back), *common],
                           check=True, capture_output=True)  # fmt: skip
            t2 = time.perf_counter()
            result[f"qaft-run {k}, {label}"] = (
                f"{len(files) / (t2 - t0):.2f} images/s ({t1 - t0:.1f} s compress, "
                f"{t2 - t1:.1f} s decompress)"
            )
            shutil.rmtree(coded)
            shutil.rmtree(back)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compressai-python", required=True)
    ap.add_argument("--model", default="q3")
    ap.add_argument("--data", default=default_images(), help="image folder (default: $QAFT_DATA)")
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backends", help="backend[:precision],... (default: see above)")
    args = ap.parse_args()
    if args.data is None:
        ap.error("no image folder: pass --data DIR (Kodak) or set QAFT_DATA")
    files = sorted(p for p in Path(args.data).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    files = [str(p) for p in files[: args.images]]
    md = open_model_dir(model_path(args.model))
    codecs = {}
    for backend, precision in _backend_specs(args.backends):
        codec = onnx_codec(md, backend, args.threads, precision)
        codecs[f"{codec.networks.backend}:{codec.networks.precision}"] = codec
    images = [load_rgb(f) for f in files]
    loaded = load_model(checkpoint_path(args.model))
    cfg = loaded.model.config
    stages: dict[str, dict[str, list]] = {k: {} for k in ("CAI", *codecs)}
    te: dict[str, list] = {k: [[] for _ in files] for k in ("CAI", *codecs)}
    td: dict[str, list] = {k: [[] for _ in files] for k in ("CAI", *codecs)}
    sizes: dict[str, list] = {k: [0] * len(files) for k in ("CAI", *codecs)}
    with tempfile.TemporaryDirectory() as tmp:
        sd = Path(tmp) / "state_dict.pt"
        torch.save({k: v.clone() for k, v in loaded.model.state_dict().items()}, sd)
        argv = [str(sd), str(cfg.N), str(cfg.M), str(args.threads), *files]
        cai = subprocess.Popen(
            [args.compressai_python, "-c", COMPRESSAI_SIDE, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            if cai.stdout.readline().strip() != "ready":
                raise SystemExit("the CompressAI side did not start (see its error above)")
            # In turns, image by image and repetition by repetition: CompressAI and every
            # backend see the same load (the ratios hold on a busy machine too).
            for _ in range(args.repeat):
                for i, img in enumerate(images):
                    cai.stdin.write(f"{i}\n")
                    cai.stdin.flush()
                    r = json.loads(cai.stdout.readline())
                    te["CAI"][i].append(r["encode"])
                    td["CAI"][i].append(r["decode"])
                    sizes["CAI"][i] = r["bytes"]
                    for name, s in r["stages"].items():
                        stages["CAI"].setdefault(name, []).append(s)
                    for k, codec in codecs.items():
                        t0 = time.perf_counter()
                        enc = C.encode(codec, img)
                        te[k][i].append(time.perf_counter() - t0)
                        t0 = time.perf_counter()
                        dec = C.decode(codec, enc.data)
                        td[k][i].append(time.perf_counter() - t0)
                        sizes[k][i] = len(enc.data)
                        timed = [*enc.timings.items()]
                        timed += [(f"d_{n}", s) for n, s in dec.timings.items()]
                        for name, s in timed:
                            stages[k].setdefault(name, []).append(s)
            folder = _whole_folder(cai, files, args.model, codecs, args.threads, Path(tmp))
        finally:
            cai.stdin.close()
            cai.wait()
    print(
        f"model {args.model}, {len(files)} images, {args.threads} threads, medians of "
        f"{args.repeat}; CompressAI {cfg.N}/{cfg.M} on the same weights, in turns with "
        f"qaft's backends: {', '.join(codecs)}"
    )
    print(
        f"{'image':<14}{'backend':<15}{'CAI enc':>9}{'qaft enc':>9}{'x':>6}{'CAI dec':>9}"
        f"{'qaft dec':>9}{'x':>6}{'CAI B':>8}{'qaft B':>8}"
    )
    rows: dict[str, list] = {k: [] for k in codecs}
    for i, f in enumerate(files):
        ce, cd = statistics.median(te["CAI"][i]), statistics.median(td["CAI"][i])
        for k in codecs:
            e, d = statistics.median(te[k][i]), statistics.median(td[k][i])
            rows[k].append((ce / e, cd / d, sizes[k][i] / sizes["CAI"][i], e, d, ce, cd))
            print(
                f"{Path(f).name:<14}{k:<15}{ce * 1e3:>9.0f}{e * 1e3:>9.0f}"
                f"{rows[k][-1][0]:>6.2f}{cd * 1e3:>9.0f}{d * 1e3:>9.0f}"
                f"{rows[k][-1][1]:>6.2f}{sizes['CAI'][i]:>8}{sizes[k][i]:>8}"
            )
    names = sorted({n for k in stages for n in stages[k]}, key=lambda n: (n.startswith("d_"), n))
    print("\nper stage, medians over images and repetitions (ms; d_: decoding):")
    print(f"{'stage':<20}" + "".join(f"{k:>16}" for k in stages))
    for n in names:
        cells = [
            f"{statistics.median(stages[k][n]) * 1e3:>16.1f}" if n in stages[k] else f"{'-':>16}"
            for k in stages
        ]
        print(f"{n:<20}" + "".join(cells))
    print(f"\nwhole folder ({len(files)} images, PNG in and out, model loaded once):")
    for k, v in folder.items():
        print(f"  {k}: {v}")
    print()
    for k in codecs:
        med = np.median(np.array(rows[k]), axis=0)
        print(
            f"{k}: median speed-up: compress {med[0]:.2f}x, decompress {med[1]:.2f}x "
            f"(medians {med[3] * 1e3:.0f} / {med[4] * 1e3:.0f} ms, CompressAI's "
            f"{med[5] * 1e3:.0f} / {med[6] * 1e3:.0f} ms); "
            f"qaft file size / CompressAI's: {med[2]:.3f}"
        )


if __name__ == "__main__":
    main()
