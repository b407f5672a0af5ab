"""Image <-> ``.qaft`` bytes, for any backend that runs the networks.

The same code serves the PyTorch path (evaluation during training) and the exported
runtime: a backend only has to implement :class:`Networks` on NumPy arrays.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from qaft.runtime import container, tiling
from qaft.runtime.entropy import coder
from qaft.runtime.entropy.tables import scale_to_level
from qaft.runtime.errors import QaftError
from qaft.runtime.image import load_rgb
from qaft.runtime.limits import PAD_MULTIPLE, check_memory, limit_text, padded, size_ok
from qaft.runtime.model_tables import ModelTables
from qaft.runtime.quantizers import QUANTIZER_NAMES, QUANTIZERS, QuantizerParams
from qaft.runtime.quantizers.base import STEP_RANGE


class Networks(Protocol):
    """The float transforms of a hyperprior codec on float32 NCHW arrays (analysis = g_a and
    h_a).  The hyper-synthesis is not among them: it selects probability tables, so it runs
    on the exact integer path (:mod:`qaft.runtime.entropy.integer_hyper`) for every backend."""

    def analysis(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...  # image -> y, z

    def synthesis(self, y_hat: np.ndarray) -> np.ndarray: ...  # y_hat -> image in [0, 1]


class HyperSynthesis(Protocol):
    """ẑ -> (scales, means) of y; :class:`IntegerHyperSynthesis` is the one that codes (its
    ``y_channels``, M, lets the decoder refuse a y section too short for the declared size
    before running it)."""

    def __call__(self, z_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class ModelMismatchError(QaftError):
    """A stream written by another model than the one decoding it."""


#: Quantizer settings for models that carry no measured defaults of their own.
FALLBACK_PARAMS = {
    "sq": QuantizerParams(1.0, 0.0),
    "rdoq": QuantizerParams(1.0, 0.05),
    "tcq": QuantizerParams(0.6, 0.1),
    "tcq8": QuantizerParams(0.6, 0.1),
}


@dataclass
class Codec:
    """A model ready to code: its networks, its frozen tables and its fingerprint, and
    the quantizer settings measured for it (``quantizer_defaults``)."""

    networks: Networks
    hyper: HyperSynthesis
    tables: ModelTables
    fingerprint: bytes
    quantizer_defaults: dict[str, QuantizerParams] = field(default_factory=dict)
    #: Encoder only: cost in bits of a unit squared error of each latent channel, (1, M, 1, 1);
    #: None weighs all channels alike.
    distortion_weights: np.ndarray | None = None

    def params(
        self, quantizer: str, step: float | None = None, lmbda: float | None = None
    ) -> QuantizerParams:
        """The model's settings for ``quantizer``, with explicit overrides applied."""
        return resolve_params(self.quantizer_defaults, quantizer, step, lmbda)

    def entropy_parameters(self, z_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scale levels int32, means float32) of y from ẑ: what both sides must agree on."""
        scales, means = self.hyper(z_hat)
        return scale_to_level(scales, self.tables.scale_levels), means


def resolve_params(
    defaults: dict[str, QuantizerParams],
    quantizer: str,
    step: float | None = None,
    lmbda: float | None = None,
) -> QuantizerParams:
    """A model's measured settings for ``quantizer`` (``defaults``), with overrides applied."""
    base = defaults.get(quantizer, FALLBACK_PARAMS[quantizer])
    return QuantizerParams(
        base.step if step is None else step, base.lmbda if lmbda is None else lmbda
    )


def header_step(quant, params: QuantizerParams) -> float:
    """The step Δ a file of ``quant`` (a quantizer object) records: float32, 1 where unused."""
    return float(np.float32(params.step)) if quant.uses_step else 1.0


@dataclass
class Encoded:
    """A compressed image and what the encoder knows about it."""

    data: bytes
    y_indices: np.ndarray
    z_indices: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    reconstruction: np.ndarray | None = None  # what the decoder will output, if asked for
    y_hat: np.ndarray | None = None  # the decoder's latent, for a later synthesis


def pad_image(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H', W', 3) uint8, edge-padded to multiples of PAD_MULTIPLE."""
    h, w = image.shape[:2]
    return np.pad(image, ((0, -h % PAD_MULTIPLE), (0, -w % PAD_MULTIPLE), (0, 0)), mode="edge")


def _pad(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (1, 3, H', W') float32 in [0, 1], edge-padded to PAD_MULTIPLE."""
    return tiling._to_float(pad_image(image))


def _z_table_ids(shape: tuple[int, ...]) -> np.ndarray:
    """Every element of z uses its channel's table."""
    return np.broadcast_to(np.arange(shape[1]).reshape(1, -1, 1, 1), shape)


def _code_z(codec: Codec, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    medians = codec.tables.z_medians.reshape(1, -1, 1, 1)
    z_idx = np.rint(z - medians).astype(np.int32)
    return z_idx, (z_idx + medians).astype(np.float32)


@dataclass
class Latents:
    """What the analysis side gives for one (padded) image, before any quantizer."""

    y: np.ndarray  # (1, M, h, w) float32
    z_indices: np.ndarray  # (1, N, h/4, w/4) int32
    levels: np.ndarray  # scale level of each latent, int32, shaped like y
    means: np.ndarray  # float32, shaped like y


def latents(codec: Codec, image: np.ndarray, timings: dict | None = None) -> Latents:
    """Runs the analysis and the exact entropy parameters on an (H, W, 3) uint8 image;
    ``timings`` (if given) receives the seconds of each."""
    t0 = time.perf_counter()
    y, z = tiling.analyze(codec.networks.analysis, pad_image(image))
    t1 = time.perf_counter()
    z_idx, z_hat = _code_z(codec, z)
    levels, means = codec.entropy_parameters(z_hat)
    if timings is not None:
        timings["analysis"] = t1 - t0
        timings["hyper_synthesis"] = time.perf_counter() - t1
    return Latents(y, z_idx, levels, means)


def code_z(codec: Codec, lat: Latents) -> list[bytes]:
    """The file's two z sections (stream, escapes) for ``lat``: no quantizer setting changes
    them, so a search over settings codes them once."""
    z = lat.z_indices
    z_code = coder.encode(z, _z_table_ids(z.shape), codec.tables.z_tables)
    return [z_code.stream, z_code.escapes_bytes()]


def encode_latents(
    codec: Codec,
    lat: Latents,
    height: int,
    width: int,
    quantizer: str = "sq",
    params: QuantizerParams | None = None,
    reconstruct: bool = False,
    z_sections: list[bytes] | None = None,
    timings: dict | None = None,
) -> Encoded:
    """The ``.qaft`` bytes of a height x width image from its :func:`latents`: what
    :func:`encode` writes, for callers that code one analysis with several settings (rate
    control).  ``z_sections`` reuses :func:`code_z` of the same latents."""
    if quantizer not in QUANTIZERS:
        raise QaftError(f"unknown quantizer {quantizer!r}; choose from {sorted(QUANTIZERS)}")
    quant = QUANTIZERS[quantizer]
    params = params or codec.params(quantizer)
    t = timings if timings is not None else {}
    t0 = time.perf_counter()
    y_idx, y_hat = quant.quantize(
        lat.y, lat.means, lat.levels, codec.tables, params, codec.distortion_weights
    )
    t["quantization"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    step = header_step(quant, params)
    y_sections = quant.code(y_idx, lat.levels, codec.tables, step)
    z_sections = z_sections if z_sections is not None else code_z(codec, lat)
    header = container.Header(quant.id, codec.fingerprint, height, width, step)
    data = container.pack(header, [*z_sections, *y_sections])
    t["entropy_encode"] = time.perf_counter() - t0
    rec = tiling.synthesize(codec.networks.synthesis, y_hat, height, width) if reconstruct else None
    return Encoded(data, y_idx, lat.z_indices, t, rec, y_hat)


def encode(
    codec: Codec,
    image: np.ndarray,
    quantizer: str = "sq",
    params: QuantizerParams | None = None,
    reconstruct: bool = False,
) -> Encoded:
    """Compresses an (H, W, 3) uint8 image into the bytes of a ``.qaft`` file.

    ``params`` defaults to the model's measured settings for the quantizer.  With
    ``reconstruct`` the encoder also runs the synthesis on its own indices, giving the
    image any decoder of the file must produce (an encode-side check, at extra cost).
    """
    if quantizer not in QUANTIZERS:
        raise QaftError(f"unknown quantizer {quantizer!r}; choose from {sorted(QUANTIZERS)}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise QaftError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    if not size_ok(h, w):
        raise QaftError(f"a {w}x{h} image is over the {limit_text()}")
    check_memory(h, w, "encode")
    t: dict[str, float] = {}
    lat = latents(codec, image, t)
    return encode_latents(codec, lat, h, w, quantizer, params, reconstruct, timings=t)


def encode_file(
    codec: Codec, path: str | Path, quantizer: str = "sq", params: QuantizerParams | None = None
) -> bytes:
    """The bytes of the ``.qaft`` file for the image file at ``path``, as ``qaft-run
    compress`` writes it on one machine or many."""
    return encode(codec, load_rgb(path), quantizer, params).data


@dataclass
class Decoded:
    """A decompressed image and the indices the decoder recovered."""

    image: np.ndarray | None  # None when decoded with synthesize=False
    y_indices: np.ndarray
    z_indices: np.ndarray
    header: container.Header
    timings: dict[str, float] = field(default_factory=dict)


def decode(codec: Codec, data: bytes, synthesize: bool = True) -> Decoded:
    """Decompresses the bytes of a ``.qaft`` file to an (H, W, 3) uint8 image.

    ``synthesize=False`` stops after the entropy decoding (indices only): the part that
    must agree bit for bit with the encoder; the synthesis is a float function of them."""
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    header, sections = container.unpack(data)
    if header.fingerprint != codec.fingerprint:
        raise ModelMismatchError(
            f"the stream was written by model {header.fingerprint.hex()}, "
            f"not by this one ({codec.fingerprint.hex()})"
        )
    if header.quantizer_id not in QUANTIZER_NAMES:
        raise container.ContainerError(f"unknown quantizer id {header.quantizer_id}")
    quant = QUANTIZERS[QUANTIZER_NAMES[header.quantizer_id]]
    if not (STEP_RANGE[0] <= header.step <= STEP_RANGE[1]) or (
        not quant.uses_step and header.step != 1.0
    ):
        raise container.ContainerError(f"invalid quantizer step {header.step!r} in the header")
    if len(sections) != 4:
        raise container.ContainerError(f"expected 4 sections, found {len(sections)}")
    z_stream, z_esc = sections[:2]
    if len(z_esc) % 4:
        raise container.ContainerError("escape section is not a whole number of values")
    ph, pw = padded(header.height), padded(header.width)
    n_z = codec.tables.z_medians.shape[0]
    z_shape = (1, n_z, ph // PAD_MULTIPLE, pw // PAD_MULTIPLE)
    z_bits = codec.tables.cached(
        "z_min_bits", lambda: coder.min_bits_per_table(codec.tables.z_tables)
    )
    _check_carries(z_stream, float(z_bits[:n_z].sum()) * z_shape[2] * z_shape[3], "z", header)
    if not sections[2]:
        raise container.ContainerError("the y section is empty")
    # before the hyper-synthesis runs over the declared size: the y section must hold at
    # least the cheapest latent's bits for every latent (each level's check comes after)
    m = getattr(codec.hyper, "y_channels", 0)  # a test's float stand-in has none: no floor
    n_y = m * (ph // 16) * (pw // 16)
    _check_carries(sections[2], n_y * quant.floor_bits(codec.tables, header.step), "y", header)
    check_memory(header.height, header.width, "decode")
    z_idx = coder.decode(
        z_stream, np.frombuffer(z_esc, "<i4"), _z_table_ids(z_shape), codec.tables.z_tables
    )
    medians = codec.tables.z_medians.reshape(1, -1, 1, 1)
    z_hat = (z_idx + medians).astype(np.float32)
    t["entropy_decode"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    levels, means = codec.entropy_parameters(z_hat)
    t["hyper_synthesis"] = time.perf_counter() - t0

    _check_carries(sections[2], quant.min_bits(levels, codec.tables, header.step), "y", header)

    t0 = time.perf_counter()
    y_idx, y_hat = quant.decode(sections[2:], means, levels, codec.tables, header.step)
    t["entropy_decode"] += time.perf_counter() - t0

    if not synthesize:
        return Decoded(None, y_idx, z_idx, header, t)
    t0 = time.perf_counter()
    image = tiling.synthesize(codec.networks.synthesis, y_hat, header.height, header.width)
    t["synthesis"] = time.perf_counter() - t0
    return Decoded(image, y_idx, z_idx, header, t)


#: Range coding writes at least the information content of what it codes, less under a word
#: of rounding; the margin also covers constriction's quantization of the probabilities.
_BOUND_SLACK_BITS = 64
_BOUND_FRACTION = 0.98


def _check_carries(stream: bytes, needed_bits: float, what: str, header) -> None:
    """Refuses a section too short to hold what the header declares, before the work that
    the declared size would cost (a 49-byte file must not decode to 16384 x 16384)."""
    if not stream:
        raise container.ContainerError(f"the {what} section is empty")
    if 8 * len(stream) < _BOUND_FRACTION * needed_bits - _BOUND_SLACK_BITS:
        raise container.ContainerError(
            f"the {what} section ({len(stream):,} bytes) cannot hold a "
            f"{header.width}x{header.height} image (at least {needed_bits / 8:,.0f} bytes)"
        )


def read_header(data: bytes) -> container.Header:
    """The header of a stream (verified), without any model."""
    return container.unpack(data)[0]
