"""Rate-distortion of the zoo on Kodak with real files, per quantizer, and the BD-rate table.

    python benchmarks/kodak_rd.py --out results/kodak [--quantizers sq,rdoq,tcq,tcq8]
    python benchmarks/kodak_rd.py --out results/kodak --only q3,q6   # after replacing q3, q6

Writes ``qaft-stage1-<quantizer>.json`` (CompressAI layout) and ``rd.png`` into --out and
prints a Markdown table of BD-rates (PSNR-RGB, Akima) against the anchors found there
(``--anchors``: by default the classical codecs at their strongest settings, ``webp-m6.json``,
``avif.json``, ``jxl.json``, ``jpeg-opt.json``, made by ``benchmarks/anchors.py``, and
``compressai-mbt2018-mean.json`` from the brief; ``webp.json`` and ``jpeg.json`` are Pillow's
default settings) and of each quantizer against ``sq``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qaft.runtime.quantizers import QUANTIZERS
from qaft.runtime.tools.rate_distortion import curve_point, read_points, write_results
from qaft.training.backend import codec_from_loaded
from qaft.training.bdrate import bd_rate, load_curve
from qaft.training.checkpoint import load_model
from qaft.training.data import list_images
from qaft.training.evaluate import default_images, evaluate_codec
from qaft.training.plot import plot_rd
from qaft.training.zoo import list_models

ANCHORS = ("webp-m6.json", "avif.json", "jxl.json", "jpeg-opt.json", "compressai-mbt2018-mean.json")


def evaluate_zoo(
    out: Path, quantizers: list[str], stage: int, data: str, only: set[str] | None = None
) -> dict[str, Path]:
    """Codes Kodak with every stage-``stage`` model and quantizer; with ``only``, just those
    models, the others' points kept from the existing results files."""
    images = list_images(data)
    entries = [e for e in list_models() if e["stage"] == stage]
    if not entries:
        raise SystemExit(f"no stage-{stage} models in the zoo")
    unknown = (only or set()) - {e["name"] for e in entries}
    if unknown:
        raise SystemExit(f"not stage-{stage} models of the zoo: {', '.join(sorted(unknown))}")
    files = {}
    for q in quantizers:
        path = out / f"qaft-stage{stage}-{q}.json"
        kept = {}
        if only is not None:
            if not path.is_file():
                raise SystemExit(f"--only needs the earlier results: {path} is missing")
            kept = {p["model"]["name"]: p for p in read_points(path)}
        points = []
        for e in entries:
            if only is not None and e["name"] not in only:
                if e["name"] not in kept:
                    raise SystemExit(f"{path} has no point for {e['name']}: evaluate it too")
                measured = kept[e["name"]]["model"].get("fingerprint", e["fingerprint"])
                if measured != e["fingerprint"]:
                    raise SystemExit(f"{e['name']} changed since {path} was written: add it")
                points.append(kept[e["name"]])
                continue
            loaded = load_model(e["path"])
            codec = codec_from_loaded(loaded)
            res = evaluate_codec(codec, images, q)
            params = codec.model.params(q)
            model = {"name": e["name"], "lmbda": e["lmbda"], "fingerprint": e["fingerprint"]}
            points.append(curve_point(res, model, q, params))
            s = points[-1]["summary"]
            print(
                f"{e['name']:>6} {q:>5}: {s['bpp']:.4f} bpp {s['psnr']:.3f} dB "
                f"(step {params.delta}, λ {params.rdo_lambda})",
                flush=True,
            )
        desc = (
            f"qaft stage-{stage} zoo ({', '.join(e['name'] for e in entries)}), quantizer "
            f"{q}, {len(images)} Kodak images, real files"
        )
        write_results(path, f"qaft stage {stage}, {q}", desc, points)
        files[q] = path
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/kodak")
    ap.add_argument("--data", default=default_images())
    ap.add_argument("--quantizers", default=",".join(QUANTIZERS))
    ap.add_argument("--stage", type=int, default=1)
    ap.add_argument("--table-only", action="store_true", help="Reuse the JSON files.")
    ap.add_argument(
        "--only",
        help="Comma-separated models to evaluate again (e.g. the ones just replaced); the "
        "others' points are kept from the existing JSON files.",
    )
    ap.add_argument(
        "--anchors",
        default=",".join(ANCHORS),
        help="Comma-separated results files in --out to compare with and plot (those missing "
        "are left out).",
    )
    args = ap.parse_args()
    out = Path(args.out)
    quantizers = args.quantizers.split(",")
    if args.table_only:
        files = {q: out / f"qaft-stage{args.stage}-{q}.json" for q in quantizers}
    else:
        if not args.data:
            raise SystemExit("needs Kodak: --data or ../shared/data/kodak")
        only = set(args.only.split(",")) if args.only else None
        files = evaluate_zoo(out, quantizers, args.stage, args.data, only)
    curves = {q: load_curve(f) for q, f in files.items()}
    names = args.anchors.split(",")
    anchors = {a: load_curve(out / a) for a in names if (out / a).is_file()}
    print(
        "\n| qaft curve | "
        + " | ".join(f"vs {c['name']}" for c in anchors.values())
        + " | vs qaft sq |"
    )
    print("|---" * (len(anchors) + 2) + "|")
    for q, c in curves.items():
        cells = [f"{bd_rate(a, c):+.1f}%" for a in anchors.values()]
        cells.append("—" if q == "sq" else f"{bd_rate(curves['sq'], c):+.2f}%")
        print(f"| {c['name']} | " + " | ".join(cells) + " |")
    plot_files = [out / a for a in anchors] + [files[q] for q in quantizers if q in ("sq", "tcq")]
    print(f"\nplot: {plot_rd(plot_files, out / 'rd.png', 'Kodak, 24 images, real files')}")


if __name__ == "__main__":
    main()
