"""A loaded model, whatever it was loaded from: tables, exact hyper-synthesis, identity and
metadata (:class:`Model`), and the metadata's one typed form (:class:`ModelMeta`).

The same metadata travels in a PyTorch model file (``meta``) and, in part, in a model
folder's ``manifest.json``: :meth:`ModelMeta.from_dict` is the one parser of both (it
checks what the runtime relies on, since a model folder may come from anywhere) and
:meth:`ModelMeta.to_dict` the one writer of a model file's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from qaft.runtime.entropy.tables import scale_to_id
from qaft.runtime.errors import FormatError, QaftError
from qaft.runtime.model_tables import ModelTables
from qaft.runtime.quantizers import QUANTIZERS, Prior, QuantizerParams
from qaft.runtime.quantizers.base import DELTA_RANGE
from qaft.runtime.quantizers.base import distortion_weights as weights_from_gain

#: Largest N or M an architecture may declare.
MAX_CHANNELS = 1 << 16


class MetadataError(QaftError):
    """Model metadata with a field of the wrong type or out of range."""


def show(value: Any) -> str:
    """A short rendering of a (JSON) value for a one-line message."""
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else "nan"
    return text if len(text) <= 40 else text[:37] + "..."


def is_int(v: Any) -> bool:
    """An integer and not a bool (JSON's true is Python's 1)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A finite int or float, not a bool."""
    return (isinstance(v, int | float) and not isinstance(v, bool)) and math.isfinite(v)


def field_error(where: object, name: str, expected: str, value: Any = None, missing: bool = False):
    """The one-line message of a bad field: ``where: field 'name': expected ..., got ...``."""
    got = "it is missing" if missing else f"got {show(value)}"
    return f"{where}: field {name!r}: expected {expected}, {got}"


#: The keys of a model file's metadata, in the order qaft writes them when it adds them
#: (keys read from a file keep that file's order, :attr:`ModelMeta.keys`).
META_KEYS = (
    "lmbda",
    "stage",
    "finetuned_for",
    "stand_in",
    "steps",
    "source",
    "source_file",
    "name",
    "N",
    "M",
    "init_from",
    "calibration",
    "synthesis_gain",
    "parent_fingerprint",
    "finetune_steps",
    "finetune_parts",
    "finetune_lr",
    "quantizers",
)
#: Keys written even when null: they say something (no λ known, not finetuned, trained from
#: scratch, imported without a name).  Other null keys are left out.
_NULLABLE = ("lmbda", "finetuned_for", "init_from", "name")
#: Always written, whatever the layout read.
_ALWAYS = ("lmbda", "stage", "finetuned_for")
_TRAINED_KEYS = ("lmbda", "stage", "finetuned_for", "stand_in", "steps", "N", "M", "init_from")
_IMPORTED_KEYS = ("lmbda", "stage", "finetuned_for", "source", "source_file", "name", "N", "M")


@dataclass
class ModelMeta:
    """What a model file says about its model besides the weights and tables.

    Read by the runtime: ``lmbda`` (the training λ, None if unknown), ``stage`` (1: trained
    end to end; 2: finetuned for the quantizer ``finetuned_for``), ``quantizers`` (the
    settings measured for it), ``synthesis_gain`` (per latent channel, for the distortion
    weights), ``N`` and ``M``.  The rest is provenance, kept as written: how it was
    trained (``stand_in``, ``steps``, ``init_from``), imported (``source``, ``source_file``,
    ``name``), finetuned (``parent_fingerprint``, ``finetune_*``) and calibrated
    (``calibration``), and any key this qaft does not know (``extra``).
    """

    lmbda: float | None = None
    stage: int = 1
    finetuned_for: str | None = None
    N: int | None = None
    M: int | None = None
    quantizers: dict[str, QuantizerParams] = field(default_factory=dict)
    synthesis_gain: list[float] | None = None
    calibration: dict[str, Any] | None = None
    stand_in: str | None = None
    steps: int | None = None
    init_from: str | None = None
    source: str | None = None
    source_file: str | None = None
    name: str | None = None
    parent_fingerprint: str | None = None
    finetune_steps: int | None = None
    finetune_parts: list[str] | None = None
    finetune_lr: float | None = None
    #: Keys this qaft does not interpret, kept as they are.
    extra: dict[str, Any] = field(default_factory=dict)
    #: The keys in the order they are written (a file's own order survives a rewrite);
    #: keys set later follow in :data:`META_KEYS` order.
    keys: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def trained(
        cls, lmbda: float, N: int, M: int, stand_in: str, steps: int, init_from: str | None
    ) -> ModelMeta:
        """The metadata of a stage-1 model trained by qaft."""
        return cls(
            lmbda=lmbda,
            N=N,
            M=M,
            stand_in=stand_in,
            steps=steps,
            init_from=init_from,
            keys=_TRAINED_KEYS,
        )

    @classmethod
    def imported(
        cls, lmbda: float | None, N: int, M: int, source: str, source_file: str, name: str | None
    ) -> ModelMeta:
        """The metadata of a model converted from another library's checkpoint."""
        return cls(
            lmbda=lmbda,
            N=N,
            M=M,
            source=source,
            source_file=source_file,
            name=name,
            keys=_IMPORTED_KEYS,
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: object = "model metadata") -> ModelMeta:
        """Parses metadata (a model file's ``meta``, or a manifest's model fields), refusing
        with a one-line :class:`MetadataError` naming the field (prefixed by ``where``)
        any value the runtime relies on that has the wrong type or range."""
        if not isinstance(d, Mapping):
            raise MetadataError(f"{where}: metadata is not an object")

        def bad(name: str, expected: str, value: Any) -> MetadataError:
            return MetadataError(field_error(where, name, expected, value))

        channels = {}
        for key in ("N", "M"):
            v = d.get(key)
            if v is not None and not (is_int(v) and 1 <= v <= MAX_CHANNELS):
                raise bad(key, f"an integer 1 .. {MAX_CHANNELS}", v)
            channels[key] = v
        lmbda = d.get("lmbda")
        if lmbda is not None and not (is_number(lmbda) and lmbda > 0):
            raise bad("lmbda", "a number > 0 or null", lmbda)
        stage = d.get("stage", 1)
        if not (is_int(stage) and stage >= 1):
            raise bad("stage", "an integer >= 1", stage)
        tuned = d.get("finetuned_for")
        if tuned is not None and not isinstance(tuned, str):
            raise bad("finetuned_for", "a quantizer name or null", tuned)
        quantizers = _parse_quantizers(d.get("quantizers") or {}, bad)
        gain = d.get("synthesis_gain")
        if gain is not None:
            m = channels["M"]
            expected = (
                f"null or a list of {m} numbers >= 0 (one per latent channel)"
                if m is not None
                else "null or a list of numbers >= 0 (one per latent channel)"
            )
            if not (
                isinstance(gain, list)
                and (m is None or len(gain) == m)
                and all(is_number(g) and g >= 0 for g in gain)
            ):
                raise bad("synthesis_gain", expected, gain)
        calibration = d.get("calibration")
        if calibration is not None and not isinstance(calibration, dict):
            raise bad("calibration", "an object or null", calibration)
        known = {k: d[k] for k in META_KEYS if k in d}
        known.update(channels, lmbda=lmbda, stage=stage, finetuned_for=tuned)
        known.update(quantizers=quantizers, synthesis_gain=gain, calibration=calibration)
        extra = {k: v for k, v in d.items() if k not in META_KEYS}
        return cls(**known, extra=extra, keys=tuple(d))

    def _present(self, key: str) -> bool:
        value = getattr(self, key)
        if key == "quantizers":
            return bool(value) or key in self.keys
        return value is not None or key in _ALWAYS or (key in _NULLABLE and key in self.keys)

    def to_dict(self) -> dict[str, Any]:
        """The metadata as a model file stores it (JSON types; the keys in :attr:`keys`
        order, then the others set, in :data:`META_KEYS` order)."""
        order = [k for k in self.keys if k in META_KEYS or k in self.extra]
        order += [k for k in META_KEYS if k not in self.keys]
        order += [k for k in self.extra if k not in order]
        out: dict[str, Any] = {}
        for key in order:
            if key in self.extra and key not in META_KEYS:
                out[key] = self.extra[key]
            elif self._present(key):
                value = getattr(self, key)
                out[key] = quantizers_to_dict(value) if key == "quantizers" else value
        return out

    def quantizer_params(self) -> dict[str, QuantizerParams]:
        """The quantizer settings measured for the model (float), by quantizer name."""
        return {
            q: QuantizerParams(float(p.delta), float(p.rdo_lambda))
            for q, p in self.quantizers.items()
        }

    def distortion_weights(self) -> np.ndarray | None:
        """Bits per unit squared error of each latent channel, (1, M, 1, 1), from the
        measured synthesis gain; None (all channels alike) without a gain or a λ."""
        if self.synthesis_gain is None or not self.lmbda:
            return None
        return weights_from_gain(self.lmbda, self.synthesis_gain)


def _parse_quantizers(value: Any, bad) -> dict[str, QuantizerParams]:
    if not isinstance(value, dict):
        raise bad("quantizers", "an object of quantizer settings", value)
    out = {}
    expected = (
        f"an object with a number step in [{DELTA_RANGE[0]:g}, {DELTA_RANGE[1]:g}] "
        "and a number lmbda >= 0"
    )
    for q, v in value.items():
        if not isinstance(v, dict):
            raise bad(f"quantizers.{q}", expected, v)
        step, ql = v.get("step"), v.get("lmbda")
        if not (
            is_number(step)
            and DELTA_RANGE[0] <= step <= DELTA_RANGE[1]
            and is_number(ql)
            and ql >= 0
        ):
            raise bad(f"quantizers.{q}", expected, v)
        # as written (an int stays an int): the writer gives back the same JSON
        out[q] = QuantizerParams(step, ql)
    return out


def quantizers_to_dict(quantizers: Mapping[str, QuantizerParams]) -> dict[str, dict]:
    """Quantizer settings as files store them: ``{name: {"step": Δ, "lmbda": λ}}``."""
    return {q: {"step": p.delta, "lmbda": p.rdo_lambda} for q, p in quantizers.items()}


def resolve_params(
    defaults: Mapping[str, QuantizerParams],
    quantizer: str,
    delta: float | None = None,
    rdo_lambda: float | None = None,
) -> QuantizerParams:
    """A model's measured settings for ``quantizer`` (``defaults``, else the quantizer's
    fallback), with overrides applied."""
    base = defaults.get(quantizer, QUANTIZERS[quantizer].fallback)
    return QuantizerParams(
        base.delta if delta is None else delta,
        base.rdo_lambda if rdo_lambda is None else rdo_lambda,
    )


def z_table_ids(shape: tuple[int, ...]) -> np.ndarray:
    """The table of each element of z, shaped like it: every element uses its channel's."""
    return np.broadcast_to(np.arange(shape[1]).reshape(1, -1, 1, 1), shape)


@dataclass
class Latents:
    """What the analysis side gives for a (padded) image or a batch of them, before any
    quantizer: y, the hyper-latent z as coded (its indices around the medians, and ẑ), and
    the prior of y that ẑ gives (means, scale ids, tables, distortion weights)."""

    y: np.ndarray  # (n, M, h, w) float32
    z_indices: np.ndarray  # (n, N, h/4, w/4) int32
    z_hat: np.ndarray  # float32, shaped like z_indices
    prior: Prior | None  # None: left to the encoder to compute band by band

    @property
    def means(self) -> np.ndarray:
        """The mean of each latent (float32, shaped like y)."""
        return self.prior.means

    @property
    def scale_ids(self) -> np.ndarray:
        """The scale id of each latent (int32, shaped like y)."""
        return self.prior.scale_ids


def no_hyper_latent(y: np.ndarray) -> np.ndarray:
    """The hyper-latent of a model without one (CompressAI's ``FactorizedPrior``): zero
    channels, but the geometry of a hyper-latent (a quarter of y's rows and columns), which
    the bands of a file are counted in."""
    n, _, h, w = y.shape
    return np.zeros((n, 0, -(-h // 4), -(-w // 4)), np.float32)


@dataclass(frozen=True)
class ChannelPrior:
    """The prior of a model without a hyperprior (CompressAI's ``FactorizedPrior``): every
    channel of y has one learned density, the same at every position.  It stands where a
    hyperprior's :class:`HyperSynthesis` stands: from ẑ (of no channels: only its geometry
    counts) it gives each latent its table, channel c's (the model's "scale levels" are
    1 … M, labels of its M channel tables, :class:`ModelTables` ``channel_tables``), and
    its mean, the channel's median, around which y is rounded."""

    medians: np.ndarray  # (M,) float32

    def __post_init__(self) -> None:
        m = np.asarray(self.medians)
        if not (m.ndim == 1 and len(m) and np.all(np.isfinite(m)) and np.all(np.abs(m) < 1e4)):
            raise FormatError("channel medians must be a non-empty list of finite numbers")

    @property
    def y_channels(self) -> int:
        """M: the channels of y."""
        return len(self.medians)

    def __call__(self, z_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(levels, means), each (B, M, 4h, 4w) float32, for a ẑ of (B, 0, h, w)."""
        nb, _, h, w = z_hat.shape
        shape = (nb, self.y_channels, 4 * h, 4 * w)
        levels = np.arange(1, self.y_channels + 1, dtype=np.float32).reshape(1, -1, 1, 1)
        means = np.asarray(self.medians, np.float32).reshape(1, -1, 1, 1)
        return np.broadcast_to(levels, shape).copy(), np.broadcast_to(means, shape).copy()

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for an ``.npz`` (no pickles)."""
        return {"channel_medians": np.asarray(self.medians, np.float32)}

    @classmethod
    def from_arrays(cls, arrays) -> ChannelPrior:
        return cls(np.asarray(arrays["channel_medians"], np.float32))


class HyperSynthesis(Protocol):
    """ẑ -> (scales, means) of y; :class:`IntegerHyperSynthesis` is the one that codes (its
    ``y_channels``, M, lets the decoder refuse a y section too short for the declared size
    before running it)."""

    def __call__(self, z_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class Model:
    """A model ready to code, from a model folder or a model file: its frozen tables, the
    exact integer hyper-synthesis, its fingerprint (the identity every file carries) and
    its metadata (quantizer settings, synthesis gain).  The float networks are apart
    (:class:`qaft.runtime.codec.Networks`): any backend runs them."""

    tables: ModelTables
    hyper: HyperSynthesis
    fingerprint: bytes
    meta: ModelMeta = field(default_factory=ModelMeta)

    @property
    def quantizer_defaults(self) -> dict[str, QuantizerParams]:
        """The quantizer settings measured for this model."""
        return self.meta.quantizer_params()

    @property
    def distortion_weights(self) -> np.ndarray | None:
        """Encoder only: cost in bits of a unit squared error of each latent channel,
        (1, M, 1, 1); None weighs all channels alike."""
        return self.meta.distortion_weights()

    def params(
        self, quantizer: str, delta: float | None = None, rdo_lambda: float | None = None
    ) -> QuantizerParams:
        """The model's settings for ``quantizer``, with explicit overrides applied."""
        return resolve_params(self.quantizer_defaults, quantizer, delta, rdo_lambda)

    def entropy_parameters(
        self, z_hat: np.ndarray, hyper: HyperSynthesis | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scale ids int32, means float32) of y from ẑ: what both sides must agree on.

        ``hyper`` replaces the model's own hyper-synthesis (finetuning the hyper-decoder
        passes the integer network built from its current weights)."""
        scales, means = (hyper or self.hyper)(z_hat)
        return scale_to_id(scales, self.tables.scale_table), means

    def z_indices(self, z: np.ndarray) -> np.ndarray:
        """The coded indices of the hyper-latent ``z``: rounded around the medians (int32)."""
        return np.rint(z - self.tables.z_medians.reshape(1, -1, 1, 1)).astype(np.int32)

    def z_hat(self, z_indices: np.ndarray) -> np.ndarray:
        """ẑ of the indices of z (float32): what the decoder rebuilds and both sides run
        the hyper-synthesis on."""
        return (z_indices + self.tables.z_medians.reshape(1, -1, 1, 1)).astype(np.float32)

    def latents(self, y: np.ndarray, z: np.ndarray, hyper: HyperSynthesis | None = None) -> Latents:
        """The pipeline from the analysis' float outputs ``y`` and ``z`` (NCHW, any batch
        size) to what the quantizer needs: z rounded around the medians, ẑ, and the prior
        of y from the exact hyper-synthesis (or ``hyper``, see :meth:`entropy_parameters`)."""
        z_indices = self.z_indices(z)
        z_hat = self.z_hat(z_indices)
        scale_ids, means = self.entropy_parameters(z_hat, hyper)
        return Latents(y, z_indices, z_hat, self.prior(means, scale_ids))

    def prior(self, means: np.ndarray, scale_ids: np.ndarray) -> Prior:
        """The :class:`Prior` of latents with these entropy parameters under this model
        (with its distortion weights, which only the encoder uses)."""
        return Prior(means, scale_ids, self.tables, self.distortion_weights)
