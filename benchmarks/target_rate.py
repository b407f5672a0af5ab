"""Rate control on Kodak: how close each image lands to a target bpp, and at what cost.

    python benchmarks/target_rate.py [--target-bpp 0.25 0.5 0.75] [--images N]
        [--quantizer tcq] [--threads 2] [--json out.json]

Per image and target: the achieved bpp (of the real file), its relative error, the PSNR,
the model and step chosen, the trials and analyses the search used, and its time against
one plain compress (``codec.encode`` with the chosen model's defaults) timed side by side
in the same run.  Then per target: the fraction within ±5%, the median and worst error,
and the median times.  Torch-free: it runs the bundled ONNX models.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from qaft.runtime import codec as C
from qaft.runtime.image import load_rgb
from qaft.runtime.quantizers import QUANTIZERS
from qaft.runtime.rate_control import BPP_TOLERANCE, MAX_TRIALS, encode_to_target, zoo_candidates
from qaft.runtime.tools.rate_distortion import default_images


def run(args: argparse.Namespace) -> dict:
    data = Path(args.data or default_images() or "")
    images = sorted(data.glob("*.png"))[: args.images]
    if not images:
        raise SystemExit(f"no PNG images in {data!s} (give --data)")
    cands = zoo_candidates(args.quantizer, args.models, threads=args.threads)
    by_name = {c.name: c for c in cands}
    rows = []
    t_start = time.perf_counter()
    for path in images:
        image = load_rgb(path)
        for target in args.target_bpp:
            t0 = time.perf_counter()
            r = encode_to_target(
                image,
                cands,
                target_bpp=target,
                tolerance=args.tolerance,
                max_trials=args.max_trials,
            )
            t_search = time.perf_counter() - t0
            chosen = by_name[r.model]
            t0 = time.perf_counter()
            C.encode(chosen.codec, image, chosen.quantizer, chosen.params)
            t_plain = time.perf_counter() - t0
            rows.append(
                {
                    "image": path.name,
                    "target_bpp": target,
                    "bpp": r.bpp,
                    "error": r.bpp / target - 1,
                    "psnr": r.psnr,
                    "model": r.model,
                    "step": r.params.delta,
                    "lmbda": r.params.rdo_lambda,
                    "met": r.met,
                    "out_of_range": r.out_of_range,
                    "trials": r.trials,
                    "analyses": r.analyses,
                    "search_s": t_search,
                    "plain_s": t_plain,
                }
            )
    wall = time.perf_counter() - t_start
    summary = []
    for target in args.target_bpp:
        rs = [r for r in rows if r["target_bpp"] == target]
        errs = [abs(r["error"]) for r in rs]
        search = statistics.median(r["search_s"] for r in rs)
        plain = statistics.median(r["plain_s"] for r in rs)
        summary.append(
            {
                "target_bpp": target,
                "images": len(rs),
                "within": sum(e <= args.tolerance for e in errs) / len(rs),
                "out_of_range": sum(r["out_of_range"] is not None for r in rs),
                "median_abs_error": statistics.median(errs),
                "max_abs_error": max(errs),
                "mean_bpp": statistics.fmean(r["bpp"] for r in rs),
                "mean_psnr": statistics.fmean(r["psnr"] for r in rs),
                "mean_trials": statistics.fmean(r["trials"] for r in rs),
                "max_trials": max(r["trials"] for r in rs),
                "mean_analyses": statistics.fmean(r["analyses"] for r in rs),
                "median_search_s": search,
                "median_plain_s": plain,
                "search_over_plain": search / plain,
            }
        )
    return {
        "quantizer": args.quantizer,
        "models": [c.name for c in cands],
        "threads": args.threads,
        "tolerance": args.tolerance,
        "max_trials": args.max_trials,
        "wall_s": wall,
        "rows": rows,
        "summary": summary,
    }


def print_tables(out: dict) -> None:
    print(
        f"{'image':<12} {'target':>6} {'bpp':>7} {'error':>7} {'PSNR':>6} {'model':<5} "
        f"{'step':>6} {'trials':>6} {'anal.':>5} {'search s':>8} {'plain s':>7}  note"
    )
    for r in out["rows"]:
        note = r["out_of_range"] and f"out of range ({r['out_of_range']})" or ""
        print(
            f"{r['image']:<12} {r['target_bpp']:>6.2f} {r['bpp']:>7.4f} {r['error']:>+7.1%} "
            f"{r['psnr']:>6.2f} {r['model']:<5} {r['step']:>6.3f} {r['trials']:>6} "
            f"{r['analyses']:>5} {r['search_s']:>8.2f} {r['plain_s']:>7.2f}  {note}"
        )
    tol = out["tolerance"]
    print()
    print(
        f"{'target':>6} {'images':>6} {'within ±' + format(tol, '.0%'):>10} {'out':>4} "
        f"{'med |err|':>9} {'max |err|':>9} {'bpp':>6} {'PSNR':>6} {'trials':>6} {'max':>4} "
        f"{'anal.':>5} {'search s':>8} {'plain s':>7} {'ratio':>6}"
    )
    for s in out["summary"]:
        print(
            f"{s['target_bpp']:>6.2f} {s['images']:>6} {s['within']:>10.0%} "
            f"{s['out_of_range']:>4} {s['median_abs_error']:>9.1%} {s['max_abs_error']:>9.1%} "
            f"{s['mean_bpp']:>6.3f} {s['mean_psnr']:>6.2f} {s['mean_trials']:>6.1f} "
            f"{s['max_trials']:>4} {s['mean_analyses']:>5.1f} {s['median_search_s']:>8.2f} "
            f"{s['median_plain_s']:>7.2f} {s['search_over_plain']:>5.1f}x"
        )
    print(
        f"\n{out['quantizer']}, models {','.join(out['models'])}, threads {out['threads']}, "
        f"at most {out['max_trials']} trials; wall {out['wall_s']:.0f} s"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="folder of PNG images (default: the shared Kodak)")
    p.add_argument("--images", type=int, default=None, help="only the first N images")
    p.add_argument("--target-bpp", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    p.add_argument("--quantizer", default="tcq", choices=list(QUANTIZERS))
    p.add_argument("--models", type=lambda s: s.split(","), default=None,
                   help="comma-separated, increasing rate (default: stage-1 q0..q6)")  # fmt: skip
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: its own)")
    p.add_argument("--tolerance", type=float, default=BPP_TOLERANCE)
    p.add_argument("--max-trials", type=int, default=MAX_TRIALS)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    out = run(args)
    print_tables(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
