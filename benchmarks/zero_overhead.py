"""Zero inference cost of stage 2: every finetuned zoo model against its stage-1 baseline.

    python benchmarks/zero_overhead.py [--count 4] [--repeat 3] [--threads 2]

For each stage-2 model in the zoo, ``qaft-run bench``'s measurement (the two models timed
in alternation on the same Kodak images, with the quantizer the model was finetuned for)
and its graph statistics; prints the table of ``docs/results.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qaft.runtime.backends.onnx import onnx_codec
from qaft.runtime.model_dir import open_model_dir
from qaft.runtime.tools.bench import bench, graph_stats, load_images
from qaft.runtime.tools.rate_distortion import default_images
from qaft.runtime.zoo import list_models, model_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    kodak = default_images()
    images = load_images(Path(kodak) if kodak else None, args.count)
    print(f"{len(images)} images x {args.repeat} runs, ONNX Runtime CPU, {args.threads} threads")
    print(
        "| model | baseline | quantizer | operators (analysis / hyper-synthesis / synthesis) "
        "| parameters | same graphs | encode+decode ms (model / baseline) | ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for e in list_models():
        if e["stage"] != 2 or not e.get("base"):
            continue
        dirs = {
            "model": open_model_dir(e["path"]),
            "baseline": open_model_dir(model_path(e["base"])),
        }
        codecs = {k: onnx_codec(d, "cpu", args.threads) for k, d in dirs.items()}
        med = bench(codecs, images, e["finetuned_for"], args.repeat)
        stats = {k: graph_stats(d) for k, d in dirs.items()}
        same = stats["model"] == stats["baseline"]
        ops = " / ".join(str(sum(s["operators"].values())) for s in stats["model"].values())
        params = sum(s["parameters"] for s in stats["model"].values())
        a, b = med["model"]["encode+decode"], med["baseline"]["encode+decode"]
        print(
            f"| {e['name']} | {e['base']} | {e['finetuned_for']} | {ops} | {params:,} | "
            f"{'yes' if same else 'NO'} | {a * 1e3:.1f} / {b * 1e3:.1f} | {a / b:.3f} |"
        )


if __name__ == "__main__":
    main()
