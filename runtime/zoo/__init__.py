"""The bundled model zoo: one index for both forms of each model.

``index.json`` lists every bundled model once.  The exported model folder (what
``qaft-run`` loads) lives next to the index; the PyTorch model file (what ``qaft`` trains,
finetunes and evaluates) lives in ``qaft/training/zoo``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from qaft.runtime.errors import QaftError

ZOO_DIR = Path(__file__).resolve().parent
CHECKPOINT_DIR = ZOO_DIR.parent.parent / "training" / "zoo"
INDEX = ZOO_DIR / "index.json"
DEFAULT_MODEL = "q3"


class UnknownModelError(QaftError):
    """A model name that is not in the zoo."""


def _entries() -> list[dict]:
    if not INDEX.is_file():
        return []
    return json.loads(INDEX.read_text())


def list_models(form: str = "model_dir") -> list[dict]:
    """The zoo's entries (``name``, ``quality``, ``lmbda``, ``stage``, ``finetuned_for``,
    provenance) with ``path`` set to the exported folder (``form="model_dir"``) or to the
    PyTorch file (``form="checkpoint"``), sorted by stage, then quality."""
    out = []
    for e in _entries():
        e = dict(e)
        e["path"] = str(
            ZOO_DIR / e["model_dir"] if form == "model_dir" else CHECKPOINT_DIR / e["checkpoint"]
        )
        out.append(e)
    return sorted(out, key=lambda e: (e["stage"], e["quality"], e["name"]))


def model_path(name: str, form: str = "model_dir") -> Path:
    """Path of a bundled model by name, or a clear error naming the models there are."""
    entries = list_models(form)
    for e in entries:
        if e["name"] == name:
            return Path(e["path"])
    names = ", ".join(e["name"] for e in entries) or "none bundled"
    raise UnknownModelError(f"unknown model {name!r} (available: {names})")


def resolve(spec: str, form: str = "model_dir") -> Path:
    """The model ``spec`` names (its exported folder, or with ``form="checkpoint"`` its
    PyTorch file): a bundled model's name always means that model (a file or folder of the
    same name in the working directory does not replace it, not even as the default); a
    path with a separator (``./q3``, ``models/q3``) or any other existing name means that
    path."""
    names = {e["name"] for e in _entries()}
    if spec in names and "/" not in spec and os.sep not in spec:
        return model_path(spec, form)
    if Path(spec).exists() or "/" in spec or os.sep in spec:
        return Path(spec)
    return model_path(spec, form)  # an unknown name: the error lists the bundled ones


def model_for_quality(quality: int, quantizer: str | None = None) -> str:
    """The bundled model of rate ``quality``: the one finetuned for ``quantizer`` where the
    zoo has it (its decoder expects that quantizer's latents), else the stage-1 model."""
    entries = [e for e in _entries() if e["quality"] == quality]
    for e in entries:
        if quantizer and e["stage"] == 2 and e.get("finetuned_for") == quantizer:
            return e["name"]
    for e in entries:
        if e["stage"] == 1:
            return e["name"]
    qualities = sorted({e["quality"] for e in _entries()})
    raise UnknownModelError(f"no bundled model of quality {quality} (there are {qualities})")


def find_by_fingerprint(fingerprint: bytes) -> Path | None:
    """The exported folder of the bundled model with this fingerprint, if any."""
    for e in list_models():
        if e.get("fingerprint") == fingerprint.hex():
            return Path(e["path"])
    return None


def bundled_manifest(fingerprint_hex: str) -> tuple[str, dict] | None:
    """(name, manifest) of the bundled model with this fingerprint, where its folder is
    installed: what a folder claiming that identity must match.  None for any other
    fingerprint, or where the package lacks the folder (nothing to compare with then)."""
    for e in _entries():
        if e.get("fingerprint") == fingerprint_hex:
            try:
                manifest = json.loads((ZOO_DIR / e["model_dir"] / "manifest.json").read_bytes())
            except (OSError, ValueError, KeyError):
                return None
            return (e["name"], manifest) if isinstance(manifest, dict) else None
    return None
