"""Add (or replace) a model in the bundled zoo: its PyTorch file, its exported folder and
its entry in ``runtime/zoo/index.json``.

    python scripts/zoo_add.py MODEL.pt --name q3 --quality 3 [--run RUN_DIR ...]
    python scripts/zoo_add.py STAGE2.pt --name q3-tcq --quality 3 --base q3 [--run RUN_DIR]
    python scripts/zoo_add.py MODEL.pt --name q3 --quality 3 --history-from q3 --run RUN_DIR
    python scripts/zoo_add.py --reexport      # every bundled model again, after a format change
    python scripts/zoo_add.py --reexport q4   # those named only (after calibrating them)

The model's λ, stage and ``finetuned_for`` come from its metadata; ``--run`` folders add
training provenance (steps and wall time from their logs).  ``--base`` stores a stage-2
model as the tensors that differ from its bundled stage-1 model (``save_model(base=...)``).
``--history-from NAME`` says the new file continues the bundled model NAME (``qaft train
--init-from`` its file or a descendant of it): NAME's training history comes first, then the
``--run`` folders, oldest first.  A stage-2 model's folder takes its analysis graphs from
its stage-1 model's (``analysis_from`` in its manifest: stage 2 leaves the encoder as it was)
instead of carrying copies (:func:`share_analysis`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
from qaft.export.onnx_export import export_model  # noqa: E402
from qaft.runtime.image import load_rgb  # noqa: E402
from qaft.runtime.model_dir import FROM_PARENT, MANIFEST  # noqa: E402
from qaft.runtime.zoo import INDEX, ZOO_DIR  # noqa: E402
from qaft.training.checkpoint import load_model, save_model  # noqa: E402
from qaft.training.data import list_images  # noqa: E402
from qaft.training.run_summary import summarize  # noqa: E402
from qaft.training.zoo import CHECKPOINT_DIR  # noqa: E402


def _short(path: str | None) -> str | None:
    return None if not path else "/".join(Path(path).parts[-2:])


def _check_image():
    return load_rgb(list_images(REPO.parent / "shared" / "data" / "train")[0])[:256, :384]


def share_analysis(folder: Path, parent: Path) -> bool:
    """Lets a stage-2 model folder take its analysis graphs from its parent's folder (its
    manifest names the parent, ``analysis_from``, and keeps listing their hashes, against
    which the runtime checks the parent's files) where they are byte for byte the same:
    the copies are deleted.  Whether it did."""
    mpath = folder / MANIFEST
    manifest = json.loads(mpath.read_text())
    shared = [f for f in FROM_PARENT if f in manifest["files"]]
    if not shared or any(
        not (parent / f).is_file() or (parent / f).read_bytes() != (folder / f).read_bytes()
        for f in shared
    ):
        return False
    at = list(manifest).index("finetuned_for") + 1
    items = list(manifest.items())
    manifest = dict(items[:at] + [("analysis_from", parent.name)] + items[at:])
    mpath.write_text(json.dumps(manifest, indent=2) + "\n")
    for f in shared:
        (folder / f).unlink()
    return True


def reexport(names: list[str]) -> None:
    """Exports bundled models' folders again from their PyTorch files (all of them when
    ``names`` is empty; export is deterministic: unchanged graphs come out byte for byte
    the same) and records the fingerprints (they change when what they cover changes, e.g.
    the integer path or the calibration)."""
    entries = json.loads(INDEX.read_text())
    unknown = set(names) - {e["name"] for e in entries}
    if unknown:
        raise SystemExit(f"error: not bundled: {', '.join(sorted(unknown))}")
    for e in entries:
        if names and e["name"] not in names:
            continue
        m = export_model(
            load_model(CHECKPOINT_DIR / e["checkpoint"]),
            ZOO_DIR / e["model_dir"],
            _check_image(),
            force=True,
        )
        if e.get("base"):
            share_analysis(ZOO_DIR / e["model_dir"], ZOO_DIR / e["base"])
        if m["fingerprint"] != e["fingerprint"]:
            print(f"{e['name']}: fingerprint {e['fingerprint']} -> {m['fingerprint']}")
            e["fingerprint"] = m["fingerprint"]
        print(f"{e['name']}: re-exported ({', '.join(sorted(m['files']))})")
    INDEX.write_text(json.dumps(entries, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="*", help="MODEL.pt (with --reexport: the names, if any)")
    ap.add_argument("--name")
    ap.add_argument("--quality", type=int)
    ap.add_argument("--run", action="append", default=[], help="Run folder(s) it came from.")
    ap.add_argument("--base", help="Bundled model it was finetuned from (stored as a delta).")
    ap.add_argument("--reexport", action="store_true", help="Re-export every bundled model.")
    ap.add_argument(
        "--history-from",
        metavar="NAME",
        help="It continues the bundled model NAME: its training history comes first.",
    )
    args = ap.parse_args()
    if args.reexport:
        return reexport(args.model)
    if not (len(args.model) == 1 and args.name and args.quality is not None):
        ap.error("one MODEL, --name and --quality are required (or --reexport)")
    args.model = args.model[0]
    loaded = load_model(args.model)
    entries = json.loads(INDEX.read_text()) if INDEX.is_file() else []
    history = []
    if args.history_from:
        previous = [e for e in entries if e["name"] == args.history_from]
        if not previous:
            ap.error(f"--history-from: no bundled model {args.history_from!r}")
        history = previous[0].get("training", [])
    dest = CHECKPOINT_DIR / args.name / "model.pt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if args.base:
        save_model(dest, loaded.model, loaded.meta, base=CHECKPOINT_DIR / args.base / "model.pt")
    elif Path(args.model).resolve() != dest.resolve():
        save_model(dest, loaded.model, loaded.meta)  # whole, even if the source was a delta
    manifest = export_model(load_model(dest), ZOO_DIR / args.name, _check_image(), force=True)
    if args.base:
        share_analysis(ZOO_DIR / args.name, ZOO_DIR / args.base)
    runs = [summarize(Path(r)) for r in args.run]
    meta = loaded.meta
    entry = {
        "name": args.name,
        "quality": args.quality,
        "lmbda": meta.lmbda,
        "stage": meta.stage,
        "finetuned_for": meta.finetuned_for,
        "model_dir": args.name,
        "checkpoint": f"{args.name}/model.pt",
        "architecture": {"N": loaded.model.config.N, "M": loaded.model.config.M},
        "fingerprint": manifest.fingerprint,
        "base": args.base,
        "training": history
        + [
            {
                "run": r["run"],
                "steps": r["steps"],
                "wall_min": round(r["wall_min"], 1),
                "lr": r["config"]["lr"],
                "lmbda": r["config"].get("lmbda"),
                "batch": r["config"]["batch"],
                "crop": r["config"]["crop"],
                # where it started, without this machine's folders
                "init_from": _short(r["config"].get("init_from") or r["config"].get("ckpt")),
            }
            for r in runs
        ],
    }
    entries = [e for e in entries if e["name"] != args.name] + [entry]
    entries.sort(key=lambda e: (e["stage"], e["quality"], e["name"]))
    INDEX.write_text(json.dumps(entries, indent=2) + "\n")
    print(f"{args.name}: {dest} ({dest.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
