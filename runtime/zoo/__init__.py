"""The bundled model zoo: one index for both forms of each model.

``index.json`` lists every bundled model once.  Each form of a model lies on a
:class:`Shelf`: the exported folder (what ``qaft-run`` loads) next to the index, or, for the
models the base distribution leaves out, in the ``qaft_zoo`` package (``pip install
./zoo``); the PyTorch model file (what ``qaft`` trains) on the training package's own shelf
(``qaft.training.zoo``).  A model of the index whose files are not installed is listed as
such, and asking for it names what to install.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from qaft.runtime.errors import QaftError

ZOO_DIR = Path(__file__).resolve().parent
INDEX = ZOO_DIR / "index.json"
#: The model the base distribution carries (pyproject.toml's package data names it too).
DEFAULT_MODEL = "q3"


class UnknownModelError(QaftError):
    """A model name that is not in the zoo."""


class ModelNotInstalledError(QaftError):
    """A model of the zoo whose files are not installed here."""


@dataclass(frozen=True)
class Shelf:
    """Where one form of the bundled models is installed: ``own`` (the folder of the package
    that declares the shelf: in a checkout it holds every model), then the package
    ``addon`` (imported by name: a separate distribution, ``install`` says how to get it)."""

    #: The index field with the entry's path relative to a shelf folder.
    field: str
    own: Path
    addon: str
    install: str

    def folders(self) -> list[Path]:
        """The folders looked in, in order (the add-on only where it is installed)."""
        spec = importlib.util.find_spec(self.addon)
        extra = spec.submodule_search_locations if spec is not None else None
        return [self.own, *(Path(p) for p in extra or ())]

    def find(self, entry: dict, folders: list[Path] | None = None) -> Path | None:
        """Where the entry's file or folder is installed (in ``folders``, by default
        :meth:`folders`), or None."""
        for folder in self.folders() if folders is None else folders:
            path = folder / entry[self.field]
            if path.exists():
                return path
        return None

    def not_installed(self, name: str) -> ModelNotInstalledError:
        """The one-line error for a model of the index that this shelf lacks."""
        return ModelNotInstalledError(f"model {name} is not installed: {self.install}")


#: The exported model folders.
EXPORTED = Shelf(
    "model_dir", ZOO_DIR, "qaft_zoo", "`pip install ./zoo` from a qaft checkout (or `make demo`)"
)


def _entries() -> list[dict]:
    if not INDEX.is_file():
        return []
    return json.loads(INDEX.read_text())


def list_models(shelf: Shelf = EXPORTED) -> list[dict]:
    """The zoo's entries (``name``, ``quality``, ``lmbda``, ``stage``, ``finetuned_for``,
    provenance) with ``installed`` and ``path``: where the shelf's form of the model
    (by default the exported folder) is installed, else None; sorted by stage, then
    quality."""
    out, folders = [], shelf.folders()
    for e in _entries():
        path = shelf.find(e, folders)
        out.append({**e, "installed": path is not None, "path": str(path) if path else None})
    return sorted(out, key=lambda e: (e["stage"], e["quality"], e["name"]))


def model_path(name: str, shelf: Shelf = EXPORTED) -> Path:
    """Path of a bundled model by name, or a clear error: naming the models there are, or
    what to install where the model's files are not installed."""
    entries = list_models(shelf)
    for e in entries:
        if e["name"] == name:
            if e["path"] is None:
                raise shelf.not_installed(name)
            return Path(e["path"])
    names = ", ".join(e["name"] for e in entries) or "none bundled"
    raise UnknownModelError(f"unknown model {name!r} (available: {names})")


def is_bundled_name(spec: str) -> bool:
    """Whether ``spec`` names a bundled model (as :func:`resolve` reads it), not a path."""
    return spec in {e["name"] for e in _entries()} and "/" not in spec and os.sep not in spec


def resolve(spec: str, shelf: Shelf = EXPORTED) -> Path:
    """The model ``spec`` names (its exported folder, or on another shelf, such as
    ``qaft.training.zoo``'s, that form of it): a bundled model's name always means that
    model (a file or folder of the same name in the working directory does not replace
    it, not even as the default); a path with a separator (``./q3``, ``models/q3``) or any
    other existing name means that path."""
    if is_bundled_name(spec):
        return model_path(spec, shelf)
    if Path(spec).exists() or "/" in spec or os.sep in spec:
        return Path(spec)
    return model_path(spec, shelf)  # an unknown name: the error lists the bundled ones


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


def bundled_name(fingerprint: bytes) -> str | None:
    """The name of the bundled model with this fingerprint, installed or not."""
    for e in _entries():
        if e.get("fingerprint") == fingerprint.hex():
            return e["name"]
    return None


def find_by_fingerprint(fingerprint: bytes) -> Path | None:
    """The exported folder of the bundled model with this fingerprint; None where no
    bundled model has it, :class:`ModelNotInstalledError` where that model's folder is not
    installed."""
    name = bundled_name(fingerprint)
    return None if name is None else model_path(name)


def bundled_manifest(fingerprint_hex: str) -> tuple[str, dict] | None:
    """(name, manifest) of the bundled model with this fingerprint, where its folder is
    installed: what a folder claiming that identity must match.  None for any other
    fingerprint, or where the folder is not installed (nothing to compare with then)."""
    for e in _entries():
        if e.get("fingerprint") == fingerprint_hex:
            folder = EXPORTED.find(e)
            try:
                manifest = json.loads((folder / "manifest.json").read_bytes()) if folder else None
            except (OSError, ValueError):
                return None
            return (e["name"], manifest) if isinstance(manifest, dict) else None
    return None
