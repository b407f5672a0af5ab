"""Copies each bundled model's Kodak figures (mean bpp and PSNR of real files, with the
quantizer it codes with by default) from the results files into ``runtime/zoo/index.json``,
where ``qaft-run models`` shows them.

    python scripts/zoo_kodak.py   # after `qaft eval` rewrote results/kodak/qaft-stage*.json

Stage-1 models take their `sq` point from ``qaft-stage1-sq.json``; a stage-2 model takes
the point of the quantizer it was finetuned for from ``qaft-stage2-QUANTIZER.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INDEX = REPO / "runtime" / "zoo" / "index.json"
RESULTS = REPO / "results" / "kodak"


def points(path: Path) -> dict[str, dict]:
    """{model name: {"bpp", "psnr", "quantizer"}} of one results file."""
    blob = json.loads(path.read_text())
    res = blob["results"]
    out = {}
    for i, m in enumerate(blob["models"]):
        name = m.get("name") or m.get("label")
        out[name] = {
            "bpp": round(res["bpp"][i], 4),
            "psnr": round(res["psnr-rgb"][i], 3),
            "quantizer": m["quantizer"],
        }
    return out


def main() -> None:
    entries = json.loads(INDEX.read_text())
    for e in entries:
        source = (
            "qaft-stage1-sq.json" if e["stage"] == 1 else f"qaft-stage2-{e['finetuned_for']}.json"
        )
        found = points(RESULTS / source).get(e["name"])
        if found is None:
            raise SystemExit(f"{e['name']}: no point in {source}")
        e["kodak"] = found
    INDEX.write_text(json.dumps(entries, indent=2) + "\n")
    print(f"{len(entries)} models: Kodak figures written to {INDEX.relative_to(REPO)}")


if __name__ == "__main__":
    main()
