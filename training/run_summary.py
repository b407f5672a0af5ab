"""Steps, wall time and last figures of training runs, from their ``log.jsonl``.

python -m qaft.training.run_summary RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def summarize(run: Path) -> dict:
    recs = [json.loads(s) for s in (run / "log.jsonl").read_text().splitlines() if s.strip()]
    steps = [r for r in recs if "s_per_step" in r]
    wall, prev = 0.0, 0
    seen = set()
    for r in steps:
        if r["step"] in seen:  # a resumed run repeats the steps after its last checkpoint
            continue
        seen.add(r["step"])
        wall += r["s_per_step"] * (r["step"] - prev) if r["step"] > prev else 0.0
        prev = max(prev, r["step"])
    cfg = json.loads((run / "config.json").read_text())
    last = steps[-1]
    return {
        "run": run.name,
        "steps": last["step"],
        "wall_min": wall / 60,
        "config": cfg,
        "last": {k: last[k] for k in ("bpp", "psnr", "mse", "bpp_y") if k in last},
    }


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        s = summarize(Path(arg))
        c = s["config"]
        print(
            f"{s['run']}: {s['steps']} steps, {s['wall_min']:.1f} min, "
            f"λ={c.get('lmbda', '-')}, lr={c['lr']}, batch {c['batch']}x{c['crop']}², "
            f"last {json.dumps({k: round(v, 4) for k, v in s['last'].items()})}"
        )
