"""Model files: weights, architecture, frozen coding tables and provenance in one ``.pt``.

Training checkpoints (with optimizer state, for ``--resume``) live in run folders and are
written by :mod:`qaft.training.loop`; this module handles the finished model a user loads.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qaft.runtime.entropy.integer_hyper import IntegerHyperSynthesis
from qaft.runtime.errors import QaftError
from qaft.runtime.files import write_file
from qaft.runtime.model import MetadataError, Model, ModelMeta
from qaft.runtime.model_tables import ModelTables, fingerprint
from qaft.training.models import MeanScaleHyperprior, ModelConfig, build_model

MODEL_FORMAT = "qaft-model"
MODEL_VERSION = 1
#: Files that store only the tensors that differ from a base model file.
DELTA_VERSION = 2


class CheckpointError(QaftError, ValueError):
    """A file that is not a usable qaft model."""


# Model files written before the tables were stored as tensors hold them as NumPy arrays of
# these dtypes; rebuilding such an array runs no code of the file's choosing.  Nothing else
# beyond torch's own weights-only set is accepted.
_NUMPY_CORE = getattr(np, "_core", None) or np.core
_SAFE_GLOBALS = [
    _NUMPY_CORE.multiarray._reconstruct,
    np.ndarray,
    np.dtype,
    *(
        type(np.dtype(t))
        for t in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                  "uint64", "float16", "float32", "float64")
    ),
]  # fmt: skip


_REFUSALS = ("GLOBAL", "allowlisted", "reduce for unrecognized")


def load_blob(path: str | Path) -> Any:
    """Reads any ``.pt`` file qaft deals with (model files, run checkpoints, CompressAI
    checkpoints), never running code stored in it.

    The one place that calls ``torch.load``: weights-only unpickling, widened only to the
    NumPy arrays older model files hold.  A file that needs anything else (a pickled object
    whose rebuilding would call arbitrary functions) is refused with a one-line
    :class:`CheckpointError`, as is a file that is not a readable checkpoint at all.
    """
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's refusals of a function or class, as against bytes that are no pickle at all
        if any(m in str(exc) for m in _REFUSALS):
            raise CheckpointError(
                f"{path}: not a plain checkpoint (refusing to run code from it)"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint (UnpicklingError)") from None
    except Exception as exc:  # torch raises many types for corrupt archives
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None


def plain_tables(arrays: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Coding tables as tensors, for a file: readable by a plain weights-only ``torch.load``
    (``np.asarray`` gives back the same arrays, dtypes and so fingerprints included)."""
    return {
        k: v.detach().cpu().clone()
        if isinstance(v, torch.Tensor)
        else torch.from_numpy(np.array(v, copy=True))
        for k, v in arrays.items()
    }


def base_path(path: Path, ref: str) -> Path:
    """Where the base model ``ref`` of the delta model file ``path`` lies.

    ``ref`` is relative to the file's folder and must stay inside the file's grandparent
    folder: the zoo's stage-2 files name their stage-1 sibling (``../q3/model.pt`` from
    ``zoo/q3-sq/model.pt``), and nothing else is needed.  An absolute path, or one that
    climbs out (``../../../home/…``), is refused: a downloaded model file must not make
    qaft open (or report on) arbitrary files of the machine.
    """
    if not isinstance(ref, str) or not ref or Path(ref).is_absolute():
        raise CheckpointError(f"{path}: its base model path {ref!r} is not a relative path")
    folder = path.resolve().parent
    target = (folder / ref).resolve()
    if not target.is_relative_to(folder.parent):
        raise CheckpointError(
            f"{path}: its base model {ref!r} lies outside {folder.parent} (refused)"
        )
    return target


def restore_run_state(ckpt_path: Path, state: dict, parts: dict[str, Any]) -> None:
    """Hands each ``state[key]`` of a run checkpoint to ``parts[key]`` (a ``load_state_dict``
    or ``set_state`` function); a checkpoint that does not fit the run is one line."""
    try:
        for key, load in parts.items():
            load(state[key])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{ckpt_path}: does not fit this run ({str(exc).splitlines()[0]})"
        ) from None


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save through :func:`qaft.runtime.files.write_file` (an unpredictable temporary
    file, then a rename): a crash never leaves half a file, and a symlink planted at a
    temporary name is never followed."""
    write_file(path, lambda f: torch.save(obj, f), replace=True)


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
    meta: ModelMeta,
    base: str | Path | None = None,
) -> None:
    """Freezes the entropy tables and writes a loadable model file.

    With ``base`` (another model file, normally its stage-1 model) only the tensors that
    differ from it are stored, with the base's relative path and SHA-256: a stage-2 model
    that retrained the decoder side costs a fraction of a full file.  The base is checked by
    the digest of its weights, so updating its metadata (say, tuned quantizer settings) does
    not orphan the files built on it.  The base must lie inside ``path``'s grandparent
    folder (:func:`base_path`: the zoo's ``q3-sq/model.pt`` on ``../q3/model.pt``), as
    only such files load.
    """
    model = model.cpu().eval()
    tables = plain_tables(model.build_tables().to_arrays())
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    blob = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "config": model.config.to_dict(),
        "state_dict": state,
        "tables": tables,
        "meta": meta.to_dict(),
    }
    if base is not None:
        base = Path(base)
        if base.resolve() == Path(path).resolve():
            raise CheckpointError(f"{path}: a model file cannot be its own base")
        rel = os.path.relpath(base.resolve(), Path(path).resolve().parent)
        base_path(Path(path), rel)  # written only where load_model will accept it
        ref = _read_blob(base)
        same = {
            k
            for k, v in state.items()
            if k in ref["state_dict"] and torch.equal(v, ref["state_dict"][k])
        }
        blob["state_dict"] = {k: v for k, v in state.items() if k not in same}
        # The tables are always stored whole: a base recalibrated later must not change them.
        blob["base"] = {
            "path": rel,
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
    blob = load_blob(path)
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        hint = ""
        if isinstance(blob, dict) and {"model", "opt", "step"} <= blob.keys():
            hint = (
                " (a training checkpoint of a run: `qaft snapshot --run "
                f"{path.parent} --out model.pt` writes its model file)"
            )
        elif isinstance(blob, dict):
            hint = " (a CompressAI checkpoint? convert it with `qaft import-compressai`)"
        raise CheckpointError(f"{path}: not a qaft model file{hint}")
    version = blob.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path}: malformed model file (version {version!r})")
    if version > DELTA_VERSION:
        raise CheckpointError(f"{path}: model format {version} is newer than this qaft")
    if not isinstance(blob.get("state_dict"), dict) or not isinstance(
        blob.get("tables"), dict | type(None)
    ):
        raise CheckpointError(f"{path}: malformed model file (no state_dict or tables)")
    base = blob.get("base")
    if base:  # a file that stores only what differs from its base model
        if not isinstance(base, dict):
            raise CheckpointError(f"{path}: malformed base model reference")
        bpath = base_path(path, base.get("path"))
        if not bpath.is_file():
            raise CheckpointError(f"{path}: its base model {bpath} is missing")
        ref = _read_blob(bpath, _seen | {path.resolve()})
        if _weights_digest(ref["state_dict"]) != base.get("weights_sha256"):
            raise CheckpointError(f"{path}: its base model {bpath} has other weights than its own")
        blob = {**blob, "state_dict": {**ref["state_dict"], **blob["state_dict"]}}
        if blob["tables"] is None:
            blob["tables"] = ref["tables"]
    return blob


class LoadedModel:
    """A model file loaded: the PyTorch network (``model``) and the :class:`Model` the
    runtime codes with (``runtime``: frozen tables, integer hyper-synthesis, fingerprint,
    metadata)."""

    def __init__(self, model: MeanScaleHyperprior, tables: ModelTables, meta: ModelMeta):
        self.model = model
        # converted once: the fingerprint, the codec and export all use this one
        hyper = model.integer_hyper_synthesis()
        self.runtime = Model(tables, hyper, model_fingerprint(model, tables, hyper), meta)

    @property
    def tables(self) -> ModelTables:
        """The frozen coding tables."""
        return self.runtime.tables

    @property
    def hyper(self) -> IntegerHyperSynthesis:
        """The integer hyper-synthesis converted from the weights."""
        return self.runtime.hyper

    @property
    def fingerprint(self) -> bytes:
        """The model's identity (weights, tables and integer hyper-synthesis)."""
        return self.runtime.fingerprint

    @property
    def meta(self) -> ModelMeta:
        """The model file's metadata."""
        return self.runtime.meta


def load_model(path: str | Path, device: str = "cpu") -> LoadedModel:
    """Loads a file written by :func:`save_model`, or fails with a one-line reason."""
    path = Path(path)
    blob = _read_blob(path)
    try:
        config = ModelConfig(**blob["config"])
        model = build_model(config)
        model.load_state_dict(blob["state_dict"])
        tables = ModelTables.from_arrays({k: np.asarray(v) for k, v in blob["tables"].items()})
        if tables.calibration is not None:
            model.gaussian_conditional.calibration = tables.calibration
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: inconsistent model file ({str(exc).splitlines()[0]})"
        ) from None
    return LoadedModel(model.to(device).eval(), tables, _meta(blob.get("meta", {}), path))


def _meta(raw: Any, path: Path) -> ModelMeta:
    try:
        return ModelMeta.from_dict(raw, path)
    except MetadataError as exc:
        raise CheckpointError(str(exc)) from None


def update_meta(path: str | Path, changes: dict[str, Any]) -> None:
    """Updates a model file's metadata in place (weights and tables untouched)."""
    blob = load_blob(path)
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{path}: not a qaft model file")
    old = blob.get("meta", {})
    blob["meta"] = _meta(
        {**(old if isinstance(old, dict) else {}), **changes}, Path(path)
    ).to_dict()
    if blob.get("tables") is not None:  # rewritten anyway: in the plain form new files use
        blob["tables"] = plain_tables(blob["tables"])
    atomic_save(blob, path)


def read_run_checkpoint(path: str | Path) -> dict[str, Any]:
    """The training state of a run folder's ``last.pt``, for ``--resume``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--resume: no checkpoint at {path}")
    state = load_blob(path)
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a training checkpoint of a qaft run")
    return state
