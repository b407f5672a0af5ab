"""The table of issue 30 from the results files of ``benchmarks/ablation.sh``.

    python benchmarks/ablation_table.py results/kodak/ablation [--runs RUNS_DIR]

Prints Markdown (the tables of ``docs/experiments/ablation.md``) and writes ``summary.json``
beside the results files: every BD-rate (PSNR and MS-SSIM, Bjøntegaard with Akima
interpolation, as ``qaft bdrate``) and the per-rate figures.  With ``--runs``, the cost of
each stage-2 run as a share of its stage-1 run (steps and logged step time).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from qaft.training.bdrate import bd_rate, load_curve
from qaft.training.run_summary import summarize

STAND_INS = ("noise", "mixed")
QUANTIZERS = ("sq", "tcq")
PARTS = {"decoder": "decoder", "hd": "decoder + hyper-decoder"}
METRICS = {"psnr-rgb": "PSNR", "ms-ssim": "MS-SSIM"}
#: The stage-1 rates (benchmarks/ablation.sh): CompressAI's λ of its qualities 1, 3, 4, 5.
RATES = ("λ 0.0018 (q1)", "λ 0.0067 (q3)", "λ 0.013 (q4)", "λ 0.025 (q5)")


def _bd(curves: dict, anchor: str, test: str) -> dict[str, float] | None:
    if anchor not in curves or test not in curves:
        return None
    return {m: bd_rate(curves[anchor], curves[test], m) for m in METRICS}


def _cell(v: dict[str, float] | None) -> str:
    if v is None:
        return "not run"
    return " / ".join(f"{v[m]:+.2f}%" for m in METRICS)


def comparisons(curves: dict) -> dict[str, dict]:
    """Every BD-rate the table shows, by a readable key (test against anchor)."""
    out: dict[str, dict] = {}
    for q in QUANTIZERS:
        out[f"noise-stage1-{q} vs mixed-stage1-{q}"] = _bd(
            curves, f"mixed-stage1-{q}", f"noise-stage1-{q}"
        )
        for s in STAND_INS:
            for p in PARTS:
                out[f"{s}-stage2-{q}-{p} vs {s}-stage1-{q}"] = _bd(
                    curves, f"{s}-stage1-{q}", f"{s}-stage2-{q}-{p}"
                )
        for p in PARTS:
            out[f"noise-stage2-{q}-{p} vs mixed-stage1-{q}"] = _bd(
                curves, f"mixed-stage1-{q}", f"noise-stage2-{q}-{p}"
            )
            out[f"noise-stage2-{q}-{p} vs mixed-stage2-{q}-{p}"] = _bd(
                curves, f"mixed-stage2-{q}-{p}", f"noise-stage2-{q}-{p}"
            )
    for s in STAND_INS:
        out[f"{s}-stage1-tcq vs {s}-stage1-sq"] = _bd(curves, f"{s}-stage1-sq", f"{s}-stage1-tcq")
        for p in PARTS:
            out[f"{s}-stage2-tcq-{p} vs {s}-stage2-sq-{p}"] = _bd(
                curves, f"{s}-stage2-sq-{p}", f"{s}-stage2-tcq-{p}"
            )
            out[f"{s}-stage2-tcq-{p} vs {s}-stage1-sq"] = _bd(
                curves, f"{s}-stage1-sq", f"{s}-stage2-tcq-{p}"
            )
    return out


def per_rate_gain(curves: dict, anchor: str, test: str) -> list[tuple[float, float]] | None:
    """(ΔPSNR dB, Δbpp %) of each rate of ``test`` against ``anchor``, rate by rate (the
    points sorted by rate pair up: the same λ)."""
    if anchor not in curves or test not in curves:
        return None
    a = sorted(zip(curves[anchor]["bpp"], curves[anchor]["psnr-rgb"], strict=True))
    t = sorted(zip(curves[test]["bpp"], curves[test]["psnr-rgb"], strict=True))
    if len(a) != len(t):
        return None
    return [(pt - pa, 100 * (bt / ba - 1)) for (ba, pa), (bt, pt) in zip(a, t, strict=True)]


def crop_effect(curves: dict) -> dict | None:
    """The one run on 256² crops (q3's λ) against the same run on 128² crops and against
    its stage 1, at that rate: bpp and PSNR, and its rate against each curve at its PSNR."""
    from qaft.training.bdrate import rate_differences

    crop = curves.get("noise-stage2-sq-decoder-crop256")
    if crop is None:
        return None
    out = {"bpp": crop["bpp"][0], "psnr-rgb": crop["psnr-rgb"][0]}
    for name in ("noise-stage1-sq", "noise-stage2-sq-decoder"):
        if name in curves:
            diff = rate_differences(curves[name], crop)[0]["rate_difference"]
            out[f"rate vs {name} (%)"] = diff
    return out


def markdown(curves: dict, bd: dict, costs: dict | None) -> str:
    lines = ["BD-rates on Kodak: PSNR / MS-SSIM (negative: fewer bits for the same quality).", ""]
    lines += ["**Stage 1: the paper's stand-in (noise) against the zoo's (mixed)**", ""]
    lines += ["| quantizer | noise vs mixed |", "| --- | --- |"]
    for q in QUANTIZERS:
        lines.append(f"| {q} | {_cell(bd[f'noise-stage1-{q} vs mixed-stage1-{q}'])} |")
    lines += ["", "**Stage 2's gain over its own stage 1**", ""]
    lines += ["| quantizer | retrained | on noise stage 1 | on mixed stage 1 |"]
    lines += ["| --- | --- | --- | --- |"]
    for q in QUANTIZERS:
        for p, name in PARTS.items():
            cells = [_cell(bd[f"{s}-stage2-{q}-{p} vs {s}-stage1-{q}"]) for s in STAND_INS]
            lines.append(f"| {q} | {name} | {' | '.join(cells)} |")
    lines += [
        "",
        "**Stage 2's gain at each rate** against its own stage 1 with the same quantizer: "
        "ΔPSNR in dB (Δbpp in %; retraining the decoder alone leaves the files unchanged)",
        "",
    ]
    lines += [f"| stage 1 | quantizer | retrained | {' | '.join(RATES)} |"]
    lines += ["| --- | --- | --- |" + " --- |" * len(RATES)]
    for s in STAND_INS:
        for q in QUANTIZERS:
            for p, name in PARTS.items():
                gains = per_rate_gain(curves, f"{s}-stage1-{q}", f"{s}-stage2-{q}-{p}")
                cells = (
                    [f"{dp:+.3f} ({db:+.2f}%)" for dp, db in gains]
                    if gains
                    else ["not run"] * len(RATES)
                )
                lines.append(f"| {s} | {q} | {name} | {' | '.join(cells)} |")
    lines += ["", "**Does noise + stage 2 catch up with mixed?** (noise stage 2 against mixed)", ""]
    lines += ["| quantizer | retrained | vs mixed stage 1 | vs mixed stage 2 (same parts) |"]
    lines += ["| --- | --- | --- | --- |"]
    for q in QUANTIZERS:
        for p, name in PARTS.items():
            a = _cell(bd[f"noise-stage2-{q}-{p} vs mixed-stage1-{q}"])
            b = _cell(bd[f"noise-stage2-{q}-{p} vs mixed-stage2-{q}-{p}"])
            lines.append(f"| {q} | {name} | {a} | {b} |")
    lines += ["", "**tcq against sq**", ""]
    lines += ["| stand-in | stage 1 | stage 2, decoder | stage 2, decoder + hyper-decoder |"]
    lines += ["| --- | --- | --- | --- |"]
    for s in STAND_INS:
        cells = [_cell(bd[f"{s}-stage1-tcq vs {s}-stage1-sq"])]
        cells += [_cell(bd[f"{s}-stage2-tcq-{p} vs {s}-stage2-sq-{p}"]) for p in PARTS]
        lines.append(f"| {s} | {' | '.join(cells)} |")
    crop = crop_effect(curves)
    lines += ["", "**Crop size alone** (noise stage 1 at q3's λ, sq, decoder, 256² crops)", ""]
    if crop is None:
        lines.append("not run")
    else:
        lines.append(f"- {crop['bpp']:.4f} bpp, {crop['psnr-rgb']:.3f} dB")
        for k, v in crop.items():
            if k.startswith("rate vs"):
                cell = "outside its range" if v is None else f"{v:+.2f}%"
                lines.append(f"- {k[:-4]} (its rate at the same PSNR): {cell}")
    lines += ["", "**Per rate** (Kodak means: bpp, PSNR dB, MS-SSIM)", ""]
    lines += [f"| curve | {' | '.join(RATES)} |", "| --- |" + " --- |" * len(RATES)]
    for n in sorted(curves):
        c = curves[n]
        if len(c["bpp"]) != len(RATES):  # the one crop-size run: above
            continue
        # by rate: the runs' λ rise with their rate
        points = sorted(zip(c["bpp"], c["psnr-rgb"], c["ms-ssim"], strict=True))
        cells = [f"{b:.3f} / {p:.2f} / {m:.4f}" for b, p, m in points]
        lines.append(f"| {n} | {' | '.join(cells)} |")
    if costs:
        lines += ["", "**Cost of stage 2** (share of its stage-1 run, mean over the runs)", ""]
        lines += ["| runs | n | steps | logged step time |", "| --- | --- | --- | --- |"]
        groups: dict[str, list[dict]] = {}
        for run, c in sorted(costs.items()):
            # s2_<stand-in>_<rate>_<quantizer>_<parts>[_crop256]: by quantizer, parts, crop
            groups.setdefault(" ".join(run.split("_")[3:]), []).append(c)
        for key, cs in groups.items():
            steps = sum(c["steps_share"] for c in cs) / len(cs)
            time = sum(c["time_share"] for c in cs) / len(cs)
            lines.append(f"| {key} | {len(cs)} | {steps:.1%} | {time:.1%} |")
    return "\n".join(lines)


def run_costs(runs: Path) -> dict:
    """Each stage-2 run's steps and logged step time as shares of its stage-1 run's."""
    out = {}
    for run in sorted(runs.glob("s2_*")):
        if not (run / "log.jsonl").is_file():
            continue
        stand_in, rate = run.name.split("_")[1:3]
        parent = runs / f"s1_{stand_in}_{rate}"
        s1, s2 = summarize(parent), summarize(run)
        out[run.name] = {
            "steps": s2["steps"],
            "wall_min": s2["wall_min"],
            "steps_share": s2["steps"] / s1["steps"],
            "time_share": s2["wall_min"] / s1["wall_min"],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--runs", type=Path, help="the runs folder, for the cost of stage 2")
    args = ap.parse_args()
    curves = {
        p.stem: load_curve(p) for p in sorted(args.results.glob("*.json")) if p.stem != "summary"
    }
    crop = curves.pop("noise-stage2-sq-decoder-crop256", None)
    bd = comparisons(curves)
    if crop is not None:
        curves["noise-stage2-sq-decoder-crop256"] = crop
    costs = run_costs(args.runs) if args.runs else None
    print(markdown(curves, bd, costs))
    summary = {
        "bd_rate_percent": bd,
        "crop256": crop_effect(curves),
        "per_rate_gain": {
            f"{si}-stage2-{q}-{p}": per_rate_gain(
                curves, f"{si}-stage1-{q}", f"{si}-stage2-{q}-{p}"
            )
            for si in STAND_INS
            for q in QUANTIZERS
            for p in PARTS
        },
        "curves": {
            n: {k: c[k] for k in ("bpp", "psnr-rgb", "ms-ssim", "labels") if k in c}
            for n, c in curves.items()
        },
    }
    if costs is not None:
        summary["stage2_cost"] = costs
    (args.results / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
