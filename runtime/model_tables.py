"""Everything the entropy coder needs from a model, frozen into arrays."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qaft.runtime.entropy.calibration import Calibration
from qaft.runtime.entropy.channel_cdf import ChannelCdf
from qaft.runtime.entropy.tables import TableSet
from qaft.runtime.errors import FormatError

#: Largest scale a model's scale table may hold (CompressAI's default table ends at 256).
MAX_SCALE = 1e4
#: Derived table sets kept per model (a few steps per quantizer in practice).
MAX_DERIVED = 16
_MISSING = object()


@dataclass(frozen=True)
class ModelTables:
    """Tables of the factorized prior (``z``) and of the Gaussian conditional (``y``)."""

    z_tables: TableSet
    z_medians: np.ndarray  # (N,) float32, centre of z's quantization
    y_tables: TableSet
    scale_table: np.ndarray  # (L,) float64, scale of each y table (npz key "scale_levels")
    #: The residual density of each level, when fitted after training (``y_tables`` are then
    #: built from it, and so are the trellis quantizers' tables); None: plain Gaussians.
    calibration: Calibration | None = None
    #: A factorized prior's (:class:`~qaft.runtime.model.ChannelPrior`): y's tables are one
    #: per channel, not Gaussians of the scales in ``scale_table`` (which then number the
    #: channels), and the trellis quantizers' tables integrate these sampled CDFs.
    channel_cdf: ChannelCdf | None = None
    # Derived tables (per quantizer step, code lengths), built on first use per model.
    _derived: dict = field(default_factory=dict, repr=False, compare=False)
    # One model is coded from several threads (qaft-run --jobs, the Python API): each
    # derived set is built once, and the eviction never iterates a dict being changed.
    # Reentrant: a build may look up another derived set of the same model.
    _lock: Any = field(default_factory=threading.RLock, repr=False, compare=False)

    def __post_init__(self) -> None:
        lv = self.scale_table
        # crafted levels (infinite, huge, unordered) would give degenerate or giant tables
        if not (
            lv.ndim == 1
            and len(lv) > 0
            and np.all(np.isfinite(lv))
            and np.all((lv > 0) & (lv <= MAX_SCALE))
            and np.all(np.diff(lv) > 0)
        ):
            raise FormatError("scale levels must be increasing, positive and at most 1e4")
        if self.channel_tables and self.calibration is not None:
            raise FormatError("channel tables cannot be calibrated (they are not Gaussians)")
        if self.channel_tables and self.channel_cdf.channels != self.y_tables.num_tables:
            raise FormatError("a channel CDF for each channel table")
        if self.calibration is not None and len(self.calibration.scale) != len(self.scale_table):
            raise FormatError(
                f"calibration has {len(self.calibration.scale)} levels, "
                f"the model {len(self.scale_table)}"
            )

    @property
    def channel_tables(self) -> bool:
        """Whether y's tables are a factorized prior's, one per channel."""
        return self.channel_cdf is not None

    def cached(self, key: Any, build: Callable[[], Any]) -> Any:
        """``build()``, computed once for this model and ``key`` while it stays among the
        :data:`MAX_DERIVED` most recently used (files choose their step, so a decoder fed
        many different steps must not keep a table set for each)."""
        with self._lock:
            value = self._derived.pop(key, _MISSING)
            if value is _MISSING:
                value = build()
            self._derived[key] = value  # most recent last
            while len(self._derived) > MAX_DERIVED:
                self._derived.pop(next(iter(self._derived)), None)
            return value

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            **self.z_tables.to_arrays("z_"),
            **self.y_tables.to_arrays("y_"),
            "z_medians": self.z_medians,
            "scale_levels": self.scale_table,
        }
        # absent when uncalibrated: such models keep the arrays, hence the fingerprints,
        # they had before calibration existed
        if self.calibration is not None:
            arrays["y_calibration"] = self.calibration.to_array()
        if self.channel_cdf is not None:  # absent otherwise: hyperprior models keep their
            arrays.update(self.channel_cdf.to_arrays())  # fingerprints
        return arrays

    @classmethod
    def from_arrays(cls, arrays) -> ModelTables:
        medians = np.asarray(arrays["z_medians"], dtype=np.float64)
        # z indices are int32 offsets from the medians: a median out of that range (or not
        # finite) would code garbage without an error
        if not np.all(np.isfinite(medians) & (np.abs(medians) < MAX_MEDIAN)):
            raise FormatError(f"z_medians must be finite and within ±{MAX_MEDIAN:g}")
        return cls(
            z_tables=TableSet.from_arrays(arrays, "z_"),
            z_medians=np.asarray(arrays["z_medians"], dtype=np.float32),
            y_tables=TableSet.from_arrays(arrays, "y_"),
            scale_table=np.asarray(arrays["scale_levels"], dtype=np.float64),
            calibration=(
                Calibration.from_array(arrays["y_calibration"])
                if "y_calibration" in arrays
                else None
            ),
            channel_cdf=ChannelCdf.from_arrays(arrays) if "y_channel_cdf" in arrays else None,
        )


#: Bound on the hyper-latent medians (trained models stay within a few units).
MAX_MEDIAN = 1e4


def fingerprint(arrays: dict[str, np.ndarray]) -> bytes:
    """8-byte digest of named arrays (weights, tables, integer hyper-synthesis), independent
    of dict order.

    Written into every file so a decoder can refuse a stream made by another model.
    """
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype.str).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.digest()[:8]
