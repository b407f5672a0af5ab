"""Model files: weights, architecture, frozen coding tables and provenance in one ``.pt``.

Training checkpoints (with optimizer state, for ``--resume``) live in run folders and are
written by :mod:`qaft.training.train`; this module handles the finished model a user loads.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qaft.runtime.entropy.integer_hyper import IntegerHyperSynthesis
from qaft.runtime.model_tables import ModelTables, fingerprint
from qaft.training.models import MeanScaleHyperprior, ModelConfig

MODEL_FORMAT = "qaft-model"
MODEL_VERSION = 1
#: Files that store only the tensors that differ from a base model file.
DELTA_VERSION = 2


class CheckpointError(ValueError):
    """A file that is not a usable qaft model."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def model_fingerprint(
    model: MeanScaleHyperprior, tables: ModelTables, hyper: IntegerHyperSynthesis
) -> bytes:
    """The digest files carry: the weights, the coding tables and the integer hyper-synthesis
    the weights convert to (so a stream is tied to the entropy parameters that wrote it,
    even if the conversion changes)."""
    arrays = {f"w.{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    arrays.update({f"t.{k}": v for k, v in tables.to_arrays().items()})
    arrays.update({f"h.{k}": v for k, v in hyper.to_arrays().items()})
    return fingerprint(arrays)


def save_model(
    path: str | Path,
    model: MeanScaleHyperprior,
    meta: dict[str, Any],
    base: str | Path | None = None,
) -> None:
    """Freezes the entropy tables and writes a loadable model file.

    With ``base`` (another model file, normally its stage-1 model) only the tensors that
    differ from it are stored, with the base's relative path and SHA-256: a stage-2 model
    that retrained the decoder side costs a fraction of a full file.  The base is checked by
    the digest of its weights, so updating its metadata (say, tuned quantizer settings) does
    not orphan the files built on it.
    """
    model = model.cpu().eval()
    tables = model.build_tables().to_arrays()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    blob = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "config": model.config.to_dict(),
        "state_dict": state,
        "tables": tables,
        "meta": dict(meta),
    }
    if base is not None:
        base = Path(base)
        if base.resolve() == Path(path).resolve():
            raise CheckpointError(f"{path}: a model file cannot be its own base")
        ref = _read_blob(base)
        same = {
            k
            for k, v in state.items()
            if k in ref["state_dict"] and torch.equal(v, ref["state_dict"][k])
        }
        blob["state_dict"] = {k: v for k, v in state.items() if k not in same}
        # The tables are always stored whole: a base recalibrated later must not change them.
        blob["base"] = {
            "path": os.path.relpath(base.resolve(), Path(path).resolve().parent),
            "weights_sha256": _weights_digest(ref["state_dict"]),
        }
        blob["version"] = DELTA_VERSION
    atomic_save(blob, path)


def _weights_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the weights alone (a base file's metadata may change, its weights not)."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _read_blob(path: Path, _seen: frozenset = frozenset()) -> dict[str, Any]:
    if path.resolve() in _seen:
        raise CheckpointError(f"{path}: its chain of base models loops back to itself")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for corrupt archives
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        hint = (
            " (a CompressAI checkpoint? convert it with `qaft import-compressai`)"
            if isinstance(blob, dict)
            else ""
        )
        raise CheckpointError(f"{path}: not a qaft model file{hint}")
    if blob.get("version", 0) > DELTA_VERSION:
        raise CheckpointError(f"{path}: model format {blob['version']} is newer than this qaft")
    base = blob.get("base")
    if base:  # a file that stores only what differs from its base model
        bpath = path.resolve().parent / base["path"]
        if not bpath.is_file():
            raise CheckpointError(f"{path}: its base model {bpath} is missing")
        ref = _read_blob(bpath, _seen | {path.resolve()})
        if _weights_digest(ref["state_dict"]) != base["weights_sha256"]:
            raise CheckpointError(f"{path}: its base model {bpath} has other weights than its own")
        blob = {**blob, "state_dict": {**ref["state_dict"], **blob["state_dict"]}}
        if blob["tables"] is None:
            blob["tables"] = ref["tables"]
    return blob


class LoadedModel:
    """A model ready to code: network, frozen tables, fingerprint and metadata."""

    def __init__(self, model: MeanScaleHyperprior, tables: ModelTables, meta: dict[str, Any]):
        self.model = model
        self.tables = tables
        self.meta = meta
        # converted once: the fingerprint, the codec and export all use this one
        self.hyper = model.integer_hyper_synthesis()
        self.fingerprint = model_fingerprint(model, tables, self.hyper)


def load_model(path: str | Path, device: str = "cpu") -> LoadedModel:
    """Loads a file written by :func:`save_model`, or fails with a one-line reason."""
    path = Path(path)
    blob = _read_blob(path)
    try:
        config = ModelConfig(**blob["config"])
        model = MeanScaleHyperprior(config)
        model.load_state_dict(blob["state_dict"])
        tables = ModelTables.from_arrays({k: np.asarray(v) for k, v in blob["tables"].items()})
        model.gaussian_conditional.calibration = tables.calibration
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: inconsistent model file ({str(exc).splitlines()[0]})"
        ) from None
    return LoadedModel(model.to(device).eval(), tables, dict(blob.get("meta", {})))


def update_meta(path: str | Path, changes: dict[str, Any]) -> None:
    """Updates a model file's metadata in place (weights and tables untouched)."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{path}: not a qaft model file")
    blob["meta"] = {**blob.get("meta", {}), **changes}
    atomic_save(blob, path)


def read_run_checkpoint(path: str | Path) -> dict[str, Any]:
    """The training state of a run folder's ``last.pt``, for ``--resume``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--resume: no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # corrupt archives raise many types
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
