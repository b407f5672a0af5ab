"""Bundled trained models, listed in ``index.json`` next to their folders."""

from __future__ import annotations

import json
from pathlib import Path

from qaft.runtime.errors import QaftError

ZOO_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = "q3"


class UnknownModelError(QaftError):
    """A model name that is not in the zoo."""


def list_models() -> list[dict]:
    """The zoo's entries (``name``, ``quality``, ``lmbda``, ``stage``, ``finetuned_for``,
    ``path`` and training provenance), sorted by stage then quality."""
    index = ZOO_DIR / "index.json"
    if not index.is_file():
        return []
    entries = json.loads(index.read_text())
    for e in entries:
        e["path"] = str(ZOO_DIR / e["file"])
    return sorted(entries, key=lambda e: (e["stage"], e["quality"], e["name"]))


def model_path(name: str) -> Path:
    """Path of a bundled model by name, or a clear error listing the names there are."""
    for e in list_models():
        if e["name"] == name:
            return Path(e["path"])
    names = ", ".join(e["name"] for e in list_models()) or "none bundled"
    raise UnknownModelError(f"unknown model {name!r} (available: {names})")
