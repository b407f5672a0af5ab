"""Memory and throughput of ``qaft-run`` itself, measured from outside the process.

    python benchmarks/memory.py peak [--model q3] [--threads 2] [--size 2160x3840]
        peak resident memory of compressing and decompressing one 3840x2160 photograph
        (Kodak images side by side; a synthetic picture without Kodak)
    python benchmarks/memory.py folder --count 1000 [--jobs 2] [--size 256x384]
        a folder of generated images through compress and decompress: resident memory and
        files per second in each tenth of the run, and every file checked to round-trip

The commands run as subprocesses exactly as a user runs them; memory is read from
``/proc/PID/status`` every 0.2 s (VmRSS, and VmHWM for the peak: the child's own high-water
mark, where the kernel's rusage would start from this process's).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
Image.MAX_IMAGE_PIXELS = None  # this script makes its own large pictures
KODAK = REPO.parent / "shared" / "data" / "kodak"
QAFT_RUN = str(Path(sys.executable).parent / "qaft-run")


def _rss_mb(pid: int, field: str = "VmRSS") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_tracked(args: list[str], out_dir: Path | None = None, suffix: str = ""):
    """Runs ``qaft-run args``; returns (exit code, wall s, peak RSS MB, samples), samples
    being (t, rss MB, files in out_dir) every 0.2 s."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([QAFT_RUN, *args], stdout=log, stderr=subprocess.STDOUT)
        samples = []
        hwm = 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            hwm = max(hwm, _rss_mb(proc.pid, "VmHWM") or 0.0)
            rss = _rss_mb(proc.pid)
            n = len(list(out_dir.rglob(f"*{suffix}"))) if out_dir and out_dir.exists() else 0
            if rss is not None:
                samples.append((time.perf_counter() - t0, rss, n))
            time.sleep(0.2)
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code:
            log.seek(0)
            print(log.read().decode(errors="replace")[-2000:], file=sys.stderr)
    # The child's own high-water mark: rusage's ru_maxrss starts from this process's peak
    # (the kernel carries the forking process's mark across exec), which building a large
    # picture here makes larger than the child's.
    return code, time.perf_counter() - t0, hwm or usage.ru_maxrss / 1024, samples


def _photo(h: int, w: int) -> np.ndarray:
    """An h x w picture made of Kodak images side by side (a synthetic one without Kodak)."""
    if KODAK.is_dir():
        tiles = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(KODAK.glob("*.png"))]
        tiles = [t for t in tiles if t.shape[:2] == (512, 768)]
        rows, cols = -(-h // 512), -(-w // 768)
        pick = [tiles[i % len(tiles)] for i in range(rows * cols)]
        grid = [np.concatenate(pick[r * cols : (r + 1) * cols], axis=1) for r in range(rows)]
        return np.concatenate(grid, axis=0)[:h, :w]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([128 + 100 * np.sin(xx / (30 + 9 * c) + yy / 41) for c in range(3)], -1)
    return img.astype(np.uint8)


def peak(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        h, w = map(int, args.size.split("x"))
        Image.fromarray(_photo(h, w)).save(tmp / "uhd.png", compress_level=1)
        common = ["--model", args.model, "--threads", str(args.threads), "--force"]
        print(f"{w}x{h}, model {args.model}, {args.threads} threads")
        for name, cmd in (
            ("compress", ["compress", str(tmp / "uhd.png"), "--out", str(tmp / "c")]),
            (
                "decompress",
                ["decompress", str(tmp / "c" / "uhd.qaft"), "--out", str(tmp / "d")],
            ),
        ):
            code, wall, mb, _ = run_tracked([*cmd, *common])
            if code:
                sys.exit(f"{name} failed with exit code {code}")
            print(f"  {name:<10} peak RSS {mb / 1024:5.2f} GiB   wall {wall:5.1f} s")
        back = Image.open(tmp / "d" / "uhd.png")
        size = (tmp / "c" / "uhd.qaft").stat().st_size
        print(f"  decoded {back.size[0]}x{back.size[1]}, file {size:,} bytes")


def _generated(folder: Path, count: int, h: int, w: int) -> None:
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(count):
        rng = np.random.default_rng(i)
        f = rng.uniform(5, 40, 3)
        base = np.stack(
            [128 + 100 * np.sin(xx / f[c] + yy / f[(c + 1) % 3] + i) for c in range(3)], -1
        )
        img = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:05d}.png")


def _report(name: str, samples, count: int, wall: float, peak_mb: float) -> None:
    print(f"{name}: {count} files in {wall:.1f} s, peak RSS {peak_mb:.0f} MB")
    print(f"  {'files done':>10} {'RSS MB':>8} {'files/s in this tenth':>22}")
    last_t, last_n = 0.0, 0
    marks = [count * k // 10 for k in range(1, 11)]
    rows = []
    for t, rss, n in samples:
        if marks and n >= marks[0]:
            rate = (n - last_n) / max(t - last_t, 1e-9)
            rows.append((n, rss, rate))
            print(f"  {n:>10} {rss:>8.0f} {rate:>22.1f}")
            last_t, last_n = t, n
            while marks and n >= marks[0]:
                marks.pop(0)
    if len(rows) >= 4:
        early, late = rows[1], rows[-1]
        print(
            f"  RSS from the 2nd tenth to the last: {early[1]:.0f} -> {late[1]:.0f} MB "
            f"({late[1] - early[1]:+.0f} MB); throughput late/early "
            f"{np.median([r[2] for r in rows[-3:]]) / np.median([r[2] for r in rows[1:4]]):.2f}"
        )


def folder(args) -> None:
    h, w = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _generated(tmp / "in", args.count, h, w)
        common = ["--model", args.model, "--threads", str(args.threads)]
        print(f"{args.count} generated {w}x{h} images, model {args.model}, --jobs {args.jobs}")
        code, wall, mb, samples = run_tracked(
            [
                "compress",
                str(tmp / "in"),
                "--out",
                str(tmp / "c"),
                "--jobs",
                str(args.jobs),
                *common,
            ],
            tmp / "c",
            ".qaft",
        )
        if code:
            sys.exit(f"compress failed with exit code {code}")
        _report("compress", samples, args.count, wall, mb)
        code, wall, mb, samples = run_tracked(
            ["decompress", str(tmp / "c"), "--out", str(tmp / "d"), *common], tmp / "d", ".png"
        )
        if code:
            sys.exit(f"decompress failed with exit code {code}")
        _report("decompress", samples, args.count, wall, mb)
        back = sorted((tmp / "d").glob("*.png"))
        sizes_ok = all(Image.open(p).size == (w, h) for p in back)
        verdict = "all right" if sizes_ok else "NOT all right"
        print(f"round trip: {len(back)} of {args.count} decoded, sizes {verdict}")
        if len(back) != args.count or not sizes_ok:
            sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("peak")
    p.add_argument("--model", default="q3")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", default="2160x3840", help="HxW of the picture.")
    f = sub.add_parser("folder")
    f.add_argument("--model", default="q3")
    f.add_argument("--count", type=int, default=1000)
    f.add_argument("--jobs", type=int, default=2)
    f.add_argument("--threads", type=int, default=1)
    f.add_argument("--size", default="256x384", help="HxW of the generated images.")
    args = ap.parse_args()
    peak(args) if args.cmd == "peak" else folder(args)


if __name__ == "__main__":
    main()
