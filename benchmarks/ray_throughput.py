"""Throughput of ``qaft-run compress`` locally and on a local Ray cluster of 1 and 2 workers.

    python benchmarks/ray_throughput.py [--count 192] [--size 256x384] [--model q3]

Every configuration compresses the same generated folder with one ONNX Runtime thread per
worker, as a user would run it (a subprocess each).  Printed per configuration: wall time
(with start-up: Python, Ray, model loading), steady-state files/s (from the first output
file to the last) and whether the files are byte-identical to the local run's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

QAFT_RUN = str(Path(sys.executable).parent / "qaft-run")


def _run(src: Path, out: Path, extra: list[str], model: str) -> tuple[float, float, int]:
    """(wall s, steady files/s, files) of one compress run, watching the output folder."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [QAFT_RUN, "compress", str(src), "--out", str(out), "--model", model, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    seen: list[tuple[float, int]] = []
    while proc.poll() is None:
        n = len(list(out.glob("*.qaft"))) if out.exists() else 0
        if n and (not seen or n != seen[-1][1]):
            seen.append((time.perf_counter(), n))
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"failed: {proc.stderr.read().decode()[-1000:]}")
    n = len(list(out.glob("*.qaft")))
    seen.append((time.perf_counter(), n))
    (t_a, n_a), (t_b, n_b) = seen[0], seen[-1]
    return wall, (n_b - n_a) / max(t_b - t_a, 1e-9), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=192)
    ap.add_argument("--size", default="256x384", help="HxW of the generated images.")
    ap.add_argument("--model", default="q3")
    args = ap.parse_args()
    h, w = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "in"
        src.mkdir()
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        for i in range(args.count):
            rng = np.random.default_rng(i)
            base = np.stack(
                [128 + 100 * np.sin(xx / (9 + c + i % 7) + yy / 13) for c in range(3)], -1
            )
            img = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(src / f"{i:05d}.png")
        configs = [
            ("local, 1 process", ["--threads", "1"]),
            ("Ray, 1 worker", ["--ray", "--workers", "1", "--threads", "1"]),
            ("Ray, 2 workers", ["--ray", "--workers", "2", "--threads", "1"]),
        ]
        print(f"{args.count} generated {w}x{h} images, model {args.model}, 1 thread per worker")
        print(f"{'configuration':<18} {'wall s':>7} {'files/s (steady)':>17} {'same bytes':>11}")
        ref = None
        for name, extra in configs:
            out = tmp / name.replace(" ", "_").replace(",", "")
            wall, rate, n = _run(src, out, extra, args.model)
            files = {p.name: p.read_bytes() for p in out.glob("*.qaft")}
            ref = ref or files
            same = "yes" if files == ref and n == args.count else "NO"
            print(f"{name:<18} {wall:>7.1f} {rate:>17.1f} {same:>11}")


if __name__ == "__main__":
    main()
