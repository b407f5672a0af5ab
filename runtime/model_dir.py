"""Model folders written by ``qaft export``: manifest, graphs and tables, verified on open."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qaft.runtime.entropy.integer_hyper import IntegerHyperError, IntegerHyperSynthesis
from qaft.runtime.errors import QaftError
from qaft.runtime.model_tables import ModelTables
from qaft.runtime.quantizers import QuantizerParams
from qaft.runtime.quantizers.base import distortion_weights

MODEL_DIR_FORMAT = "qaft-model-dir"
#: 2: the hyper-synthesis is an integer network (``hyper_synthesis.npz``), no ONNX graph.
#: 3: ``tables.npz`` may carry a calibrated residual density (``y_calibration``), from which
#: the trellis quantizers' tables derive: a version-2 reader would derive other tables.
MODEL_DIR_VERSION = 3
#: Oldest version still read (2 and 3 differ only in what version 3 may add).
MODEL_DIR_OLDEST = 2
MANIFEST = "manifest.json"
TABLES = "tables.npz"
HYPER = "hyper_synthesis.npz"
#: The float graphs, per precision; fp32 is always there, fp16 where export wrote it.
GRAPHS = {"analysis": "analysis.onnx", "synthesis": "synthesis.onnx"}
GRAPHS_FP16 = {"analysis": "analysis_fp16.onnx", "synthesis": "synthesis_fp16.onnx"}
PRECISIONS = ("fp32", "fp16")


class ModelDirError(QaftError):
    """A model folder that is missing, incomplete, corrupt or of an unknown format."""


@dataclass
class ModelDir:
    """A verified model folder: where its graphs are, its tables and its settings."""

    path: Path
    manifest: dict
    tables: ModelTables
    hyper: IntegerHyperSynthesis
    fingerprint: bytes
    quantizer_defaults: dict[str, QuantizerParams] = field(default_factory=dict)
    distortion_weights: np.ndarray | None = None

    @property
    def precisions(self) -> list[str]:
        """The precisions this folder has graphs for."""
        have = ["fp32"]
        if all(f in self.manifest.get("files", {}) for f in GRAPHS_FP16.values()):
            have.append("fp16")
        return have

    def graph(self, name: str, precision: str = "fp32") -> Path:
        if precision not in self.precisions:
            raise ModelDirError(
                f"{self.path}: no {precision} graphs in this model folder "
                f"(it has {', '.join(self.precisions)}; `qaft export --fp16` writes them)"
            )
        return self.path / (GRAPHS_FP16 if precision == "fp16" else GRAPHS)[name]


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
    version = manifest.get("version", 0)
    if version > MODEL_DIR_VERSION:
        raise ModelDirError(
            f"{mpath}: model format version {manifest['version']} is newer than "
            f"this qaft ({MODEL_DIR_VERSION}); upgrade qaft"
        )
    if version < MODEL_DIR_OLDEST:
        raise ModelDirError(
            f"{mpath}: model format version {version} predates exact entropy parameters; "
            "export the model again with `qaft export`"
        )
    files = manifest.get("files", {})
    optional = [f for f in GRAPHS_FP16.values() if f in files]
    for name in [*GRAPHS.values(), HYPER, TABLES, *optional]:
        f = path / name
        if not f.is_file():
            raise ModelDirError(f"{f}: missing from the model folder")
        if verify and files.get(name) != _sha256(f):
            raise ModelDirError(f"{f}: does not match the manifest's hash (corrupt or replaced)")
    try:
        with np.load(path / TABLES, allow_pickle=False) as npz:
            tables = ModelTables.from_arrays({k: npz[k] for k in npz.files})
        fingerprint = bytes.fromhex(manifest["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelDirError(f"{path / TABLES}: unreadable tables ({exc})") from None
    try:
        with np.load(path / HYPER, allow_pickle=False) as npz:
            hyper = IntegerHyperSynthesis.from_arrays({k: npz[k] for k in npz.files})
    except (OSError, ValueError, IntegerHyperError) as exc:
        raise ModelDirError(f"{path / HYPER}: unusable integer hyper-synthesis ({exc})") from None
    defaults = {
        q: QuantizerParams(float(v["step"]), float(v["lmbda"]))
        for q, v in (manifest.get("quantizers") or {}).items()
    }
    weights = None
    if manifest.get("synthesis_gain") and manifest.get("lmbda"):
        weights = distortion_weights(manifest["lmbda"], manifest["synthesis_gain"])
    return ModelDir(path, manifest, tables, hyper, fingerprint, defaults, weights)
