"""Fitting a model's residual densities (:mod:`qaft.runtime.entropy.calibration`) on training
images and storing them in its model file.

The fit reads the indices the real scalar quantizer gives on full training images (never the
test set) through the same code that writes files, so the tables it yields are the ones the
coder will use.  Only the coding tables change: the networks, and so the reconstruction of
any given indices, stay exactly as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from qaft.runtime import codec as C
from qaft.runtime.entropy import calibration as cal
from qaft.runtime.errors import ConfigError
from qaft.runtime.image import load_rgb
from qaft.training.backend import codec_from_loaded
from qaft.training.checkpoint import (
    CheckpointError,
    atomic_save,
    load_blob,
    load_model,
    plain_tables,
)


@dataclass
class CalibrationReport:
    """The fit and what it changes on the images it was fitted on."""

    calibration: cal.Calibration
    images: int
    symbols: int
    bits_before: float  # y's code length (sq indices) with the tables the model had
    bits_after: float

    @property
    def change(self) -> float:
        """Relative change of y's code length (negative: smaller files)."""
        return self.bits_after / self.bits_before - 1.0


def fit_model(path: str | Path, images: list[str | Path]) -> CalibrationReport:
    """Fits the residual densities of the model file at ``path`` on ``images``."""
    if not images:
        raise ConfigError("calibration needs at least one image")
    loaded = load_model(path)
    if loaded.tables.channel_tables:
        raise ConfigError(
            f"{path}: a factorized prior's tables are its learned densities: nothing to calibrate"
        )
    codec = codec_from_loaded(loaded)
    scale_table = loaded.tables.scale_table
    hist: list[dict[int, int]] = [{} for _ in scale_table]
    for p in images:
        lat = C.latents(codec, load_rgb(p))
        cal.accumulate(hist, np.rint(lat.y - lat.means), lat.scale_ids)
    fitted = cal.fit(hist, scale_table)
    before = loaded.tables.calibration or cal.Calibration.identity(len(scale_table))
    return CalibrationReport(
        fitted,
        len(images),
        sum(sum(h.values()) for h in hist),
        cal.histogram_bits(hist, scale_table, before),
        cal.histogram_bits(hist, scale_table, fitted),
    )


def store(path: str | Path, calibration: cal.Calibration | None, note: dict) -> None:
    """Rewrites the coding tables of the model file at ``path`` for ``calibration`` (None:
    back to plain Gaussians); weights, base model and the rest of the file are kept."""
    path = Path(path)
    loaded = load_model(path)
    loaded.model.gaussian_conditional.calibration = calibration
    tables = plain_tables(loaded.model.build_tables().to_arrays())
    blob = load_blob(path)
    if not isinstance(blob, dict) or "tables" not in blob:
        raise CheckpointError(f"{path}: not a qaft model file")
    blob["tables"] = tables
    blob["meta"] = replace(loaded.meta, calibration=None if calibration is None else note).to_dict()
    atomic_save(blob, path)
