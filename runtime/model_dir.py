"""Model folders written by ``qaft export``: manifest, graphs and tables, verified on open."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qaft.runtime.errors import QaftError
from qaft.runtime.model_tables import ModelTables
from qaft.runtime.quantizers import QuantizerParams
from qaft.runtime.quantizers.base import distortion_weights

MODEL_DIR_FORMAT = "qaft-model-dir"
MODEL_DIR_VERSION = 1
MANIFEST = "manifest.json"
TABLES = "tables.npz"
GRAPHS = {
    "analysis": "analysis.onnx",
    "hyper_synthesis": "hyper_synthesis.onnx",
    "synthesis": "synthesis.onnx",
}


class ModelDirError(QaftError):
    """A model folder that is missing, incomplete, corrupt or of an unknown format."""


@dataclass
class ModelDir:
    """A verified model folder: where its graphs are, its tables and its settings."""

    path: Path
    manifest: dict
    tables: ModelTables
    fingerprint: bytes
    quantizer_defaults: dict[str, QuantizerParams] = field(default_factory=dict)
    distortion_weights: np.ndarray | None = None

    def graph(self, name: str) -> Path:
        return self.path / GRAPHS[name]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def open_model_dir(path: str | Path, verify: bool = True) -> ModelDir:
    """Reads and checks a model folder; any problem is a one-line :class:`ModelDirError`."""
    path = Path(path)
    mpath = path / MANIFEST
    if not path.is_dir():
        raise ModelDirError(f"{path}: no such model folder")
    if not mpath.is_file():
        raise ModelDirError(f"{mpath}: missing (not a model folder written by `qaft export`)")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as exc:
        raise ModelDirError(f"{mpath}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MODEL_DIR_FORMAT:
        raise ModelDirError(f"{mpath}: not a qaft model manifest")
    if manifest.get("version", 0) > MODEL_DIR_VERSION:
        raise ModelDirError(
            f"{mpath}: model format version {manifest['version']} is newer than "
            f"this qaft ({MODEL_DIR_VERSION}); upgrade qaft"
        )
    files = manifest.get("files", {})
    for name in [*GRAPHS.values(), TABLES]:
        f = path / name
        if not f.is_file():
            raise ModelDirError(f"{f}: missing from the model folder")
        if verify and files.get(name) != _sha256(f):
            raise ModelDirError(f"{f}: does not match the manifest's hash (corrupt or replaced)")
    try:
        with np.load(path / TABLES, allow_pickle=False) as npz:
            tables = ModelTables.from_arrays({k: npz[k] for k in npz.files})
        fingerprint = bytes.fromhex(manifest["fingerprint"])
    except (OSError, ValueError, KeyError) as exc:
        raise ModelDirError(f"{path / TABLES}: unreadable tables ({exc})") from None
    defaults = {
        q: QuantizerParams(float(v["step"]), float(v["lmbda"]))
        for q, v in (manifest.get("quantizers") or {}).items()
    }
    weights = None
    if manifest.get("synthesis_gain") and manifest.get("lmbda"):
        weights = distortion_weights(manifest["lmbda"], manifest["synthesis_gain"])
    return ModelDir(path, manifest, tables, fingerprint, defaults, weights)
