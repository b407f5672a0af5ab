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
from qaft.runtime.entropy.integer_hyper import HALO, Products
from qaft.runtime.errors import QaftError
from qaft.runtime.image import load_rgb
from qaft.runtime.limits import PAD_MULTIPLE, check_memory, padded, size_error, size_ok
from qaft.runtime.model import HyperSynthesis, Latents, Model, z_table_ids
from qaft.runtime.quantizers import (
    QUANTIZER_NAMES,
    QUANTIZERS,
    Prior,
    QuantizerParams,
    quantizer_for_file,
)
from qaft.runtime.quantizers.base import DELTA_RANGE


class Networks(Protocol):
    """The float transforms of a hyperprior codec on float32 NCHW arrays (analysis = g_a and
    h_a).  The hyper-synthesis is not among them: it selects probability tables, so it runs
    on the exact integer path (:mod:`qaft.runtime.entropy.integer_hyper`) for every backend."""

    def analysis(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...  # image -> y, z

    def synthesis(self, y_hat: np.ndarray) -> np.ndarray: ...  # y_hat -> image in [0, 1]


class ModelMismatchError(QaftError):
    """A stream written by another model than the one decoding it."""


@dataclass
class Codec:
    """A model ready to code: the networks of a backend and the loaded :class:`Model`
    (tables, exact hyper-synthesis, fingerprint, measured settings); ``products`` runs the
    exact hyper-synthesis' matrix products (None: NumPy's)."""

    networks: Networks
    model: Model
    products: Products | None = None

    @property
    def hyper(self) -> HyperSynthesis:
        """The model's hyper-synthesis, its products run by :attr:`products`."""
        return self.bind(self.model.hyper)

    def bind(self, hyper: HyperSynthesis) -> HyperSynthesis:
        """``hyper`` with its products run by :attr:`products` (a prior without products,
        or a codec without its own, as it is)."""
        if self.products is None or not hasattr(hyper, "with_products"):
            return hyper
        return hyper.with_products(self.products)


def header_delta(quant, params: QuantizerParams) -> float:
    """The step Δ a file of ``quant`` (a quantizer object) records: float32, 1 where unused."""
    return float(np.float32(params.delta)) if quant.uses_delta else 1.0


@dataclass
class Encoded:
    """A compressed image and what the encoder knows about it."""

    data: bytes
    y_indices: np.ndarray
    z_indices: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    reconstruction: np.ndarray | None = None  # what the decoder will output, if asked for
    y_hat: np.ndarray | None = None  # the decoder's latent, for a later synthesis (see
    # encode_latents' keep_y_hat)


def pad_image(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H', W', 3) uint8, edge-padded to multiples of PAD_MULTIPLE (the
    image itself, not a copy, when it needs no padding)."""
    h, w = image.shape[:2]
    if not (h % PAD_MULTIPLE or w % PAD_MULTIPLE):
        return image
    return np.pad(image, ((0, -h % PAD_MULTIPLE), (0, -w % PAD_MULTIPLE), (0, 0)), mode="edge")


def network_input(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (1, 3, H', W') float32 in [0, 1], edge-padded to PAD_MULTIPLE:
    what the analysis networks take for a whole image."""
    return tiling.to_float(pad_image(image))


#: Latents (channels x rows x columns of y) a band holds at most where the image is tall
#: enough: the quantizer's and the entropy coder's arrays, some 100 bytes a latent, are
#: held for one band at a time.  The encoder's choice: the file records the band height.
BAND_LATENTS = 1 << 22
#: Most bands a file may have: two sections each, and the two of z, within the
#: container's 255 (a band is then taller than BAND_LATENTS asks for).
MAX_BANDS = 126
#: y rows per ẑ row (h_s upsamples by 4).
Y_PER_Z = PAD_MULTIPLE // 16


def band_height(z_rows: int, z_cols: int, channels: int) -> int:
    """ẑ rows per band the encoder writes for a ẑ of ``z_rows`` x ``z_cols`` and a y of
    ``channels`` channels: at most :data:`BAND_LATENTS` latents a band, and at most
    :data:`MAX_BANDS` bands; ``z_rows`` or more means one band (the whole latent)."""
    rows = max(1, BAND_LATENTS // (channels * Y_PER_Z * Y_PER_Z * z_cols))
    return max(rows, -(-z_rows // MAX_BANDS))


def bands(z_rows: int, band_rows: int) -> list[tuple[int, int]]:
    """The ẑ rows (start, stop) of each band; ``band_rows`` 0 is one band."""
    step = band_rows or z_rows
    return [(a, min(a + step, z_rows)) for a in range(0, z_rows, step)]


def band_prior(codec: Codec, z_hat: np.ndarray, start: int, stop: int) -> Prior:
    """The prior of the y rows under ẑ rows ``start:stop``, from those rows and the
    hyper-synthesis' context of :data:`HALO` rows on each side: the integer
    hyper-synthesis is exact, so these are the bits the whole frame would give."""
    s0, s1 = max(0, start - HALO), min(z_hat.shape[2], stop + HALO)
    scale_ids, means = codec.model.entropy_parameters(z_hat[:, :, s0:s1], codec.hyper)
    rows = slice(Y_PER_Z * (start - s0), Y_PER_Z * (stop - s0))
    return codec.model.prior(means[:, :, rows], scale_ids[:, :, rows])


def latents(
    codec: Codec, image: np.ndarray, timings: dict | None = None, prior: bool = True
) -> Latents:
    """Runs the analysis and the exact entropy parameters on an (H, W, 3) uint8 image;
    ``timings`` (if given) receives the seconds of each.  ``prior=False`` leaves the prior
    out (None): :func:`encode_latents` then computes it band by band."""
    t0 = time.perf_counter()
    y, z = tiling.analyze(codec.networks.analysis, pad_image(image))
    t1 = time.perf_counter()
    if prior:
        lat = codec.model.latents(y, z, codec.hyper)
    else:
        z_indices = codec.model.z_indices(z)
        lat = Latents(y, z_indices, codec.model.z_hat(z_indices), None)
    if timings is not None:
        timings["analysis"] = t1 - t0
        timings["hyper_synthesis"] = time.perf_counter() - t1
    return lat


def code_z(codec: Codec, lat: Latents) -> list[bytes]:
    """The file's two z sections (stream, escapes) for ``lat``: no quantizer setting changes
    them, so a search over settings codes them once."""
    z = lat.z_indices
    if not z.shape[1]:  # a model without a hyper-latent: two empty sections
        return [b"", b""]
    z_code = coder.encode(z, z_table_ids(z.shape), codec.model.tables.z_tables)
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
    keep_y_hat: bool = True,
) -> Encoded:
    """The ``.qaft`` bytes of a height x width image from its :func:`latents`: what
    :func:`encode` writes, for callers that code one analysis with several settings (rate
    control).  ``z_sections`` reuses :func:`code_z` of the same latents; without
    ``keep_y_hat`` or ``reconstruct`` the result's ``y_hat`` is None (not held whole)."""
    if quantizer not in QUANTIZERS:
        raise QaftError(f"unknown quantizer {quantizer!r}; choose from {sorted(QUANTIZERS)}")
    quant = QUANTIZERS[quantizer]
    params = params or codec.model.params(quantizer)
    t = timings if timings is not None else {}
    delta = header_delta(quant, params)
    channels = lat.y.shape[1]
    z_rows, z_cols = lat.z_hat.shape[2:]
    band_rows = band_height(z_rows, z_cols, channels)
    banded = band_rows < z_rows
    y_idx = np.empty(lat.y.shape, np.int32)
    y_hat = np.empty(lat.y.shape, np.float32) if keep_y_hat or reconstruct else None
    y_sections: list[bytes] = []
    t["quantization"] = t["entropy_encode"] = 0.0
    for start, stop in bands(z_rows, band_rows if banded else 0):
        rows = slice(Y_PER_Z * start, Y_PER_Z * stop)
        t0 = time.perf_counter()
        if lat.prior is None:
            prior = band_prior(codec, lat.z_hat, start, stop)
            t["hyper_synthesis"] = t.get("hyper_synthesis", 0.0) + time.perf_counter() - t0
        else:
            prior = lat.prior.rows(rows)
        t0 = time.perf_counter()
        y_idx[:, :, rows], band_hat = quant.quantize(lat.y[:, :, rows], prior, params)
        if y_hat is not None:
            y_hat[:, :, rows] = band_hat
        del band_hat
        t1 = time.perf_counter()
        y_sections += quant.code(y_idx[:, :, rows], prior, delta)
        t["quantization"] += t1 - t0
        t["entropy_encode"] += time.perf_counter() - t1

    t0 = time.perf_counter()
    z_sections = z_sections if z_sections is not None else code_z(codec, lat)
    header = container.Header(
        quant.id,
        codec.model.fingerprint,
        height,
        width,
        delta,
        container.BANDED_VERSION if banded else quant.format_version,
        band_rows if banded else 0,
    )
    data = container.pack(header, [*z_sections, *y_sections])
    t["entropy_encode"] += time.perf_counter() - t0
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
        raise QaftError(size_error(h, w))
    z_rows, z_cols = padded(h) // PAD_MULTIPLE, padded(w) // PAD_MULTIPLE
    m = getattr(codec.model.hyper, "y_channels", 1)  # a test's float stand-in has none
    check_memory(h, w, "encode" if band_height(z_rows, z_cols, m) < z_rows else "encode-whole")
    t: dict[str, float] = {}
    lat = latents(codec, image, t, prior=False)
    return encode_latents(
        codec, lat, h, w, quantizer, params, reconstruct, timings=t, keep_y_hat=False
    )


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
    model = codec.model
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    header, sections = container.unpack(data)
    if header.fingerprint != model.fingerprint:
        raise ModelMismatchError(
            f"the stream was written by model {header.fingerprint.hex()}, "
            f"not by this one ({model.fingerprint.hex()})"
        )
    if header.quantizer_id not in QUANTIZER_NAMES:
        raise container.ContainerError(f"unknown quantizer id {header.quantizer_id}")
    quant = quantizer_for_file(header.quantizer_id, header.version)
    if not (DELTA_RANGE[0] <= header.step <= DELTA_RANGE[1]) or (
        not quant.uses_delta and header.step != 1.0
    ):
        raise container.ContainerError(f"invalid quantizer step {header.step!r} in the header")
    ph, pw = padded(header.height), padded(header.width)
    n_z = model.tables.z_medians.shape[0]
    z_shape = (1, n_z, ph // PAD_MULTIPLE, pw // PAD_MULTIPLE)
    band_list = bands(z_shape[2], header.band_rows)
    if header.band_rows and len(band_list) < 2:
        raise container.ContainerError(f"a banded file of one band ({header.band_rows} rows)")
    if len(sections) != 2 + 2 * len(band_list):
        raise container.ContainerError(
            f"expected {2 + 2 * len(band_list)} sections, found {len(sections)}"
        )
    z_stream, z_esc = sections[:2]
    if len(z_esc) % 4:
        raise container.ContainerError("escape section is not a whole number of values")
    if n_z:
        z_bits = model.tables.cached(
            "z_min_bits", lambda: coder.min_bits_per_table(model.tables.z_tables)
        )
        needed = float(z_bits[:n_z].sum()) * z_shape[2] * z_shape[3]
        _check_carries([z_stream], needed, "z", header)
    elif z_stream or z_esc:
        raise container.ContainerError("z sections in a file of a model without a hyper-latent")
    y_streams = sections[2::2]
    # before the hyper-synthesis runs over the declared size: the y sections must hold at
    # least the cheapest latent's bits for every latent (each scale id's check comes after)
    m = getattr(model.hyper, "y_channels", 0)  # a test's float stand-in has none: no floor
    n_y = m * (ph // 16) * (pw // 16)
    _check_carries(y_streams, n_y * quant.floor_bits(model.tables, header.step), "y", header)
    check_memory(header.height, header.width, "decode" if header.band_rows else "decode-whole")
    z_idx = (
        coder.decode(
            z_stream, np.frombuffer(z_esc, "<i4"), z_table_ids(z_shape), model.tables.z_tables
        )
        if n_z
        else np.zeros(z_shape, np.int32)
    )
    z_hat = model.z_hat(z_idx)
    t["entropy_decode"] = time.perf_counter() - t0
    t["hyper_synthesis"] = 0.0

    y_idx = y_hat = None
    for i, (start, stop) in enumerate(band_list):
        t0 = time.perf_counter()
        prior = band_prior(codec, z_hat, start, stop)
        t1 = time.perf_counter()
        t["hyper_synthesis"] += t1 - t0
        band_sections = sections[2 + 2 * i : 4 + 2 * i]
        _check_carries(band_sections[:1], quant.min_bits(prior, header.step), "y", header)
        idx, band_hat = quant.decode(band_sections, prior, header.step)
        if y_idx is None:
            shape = (1, idx.shape[1], Y_PER_Z * z_shape[2], Y_PER_Z * z_shape[3])
            y_idx, y_hat = np.empty(shape, np.int32), np.empty(shape, np.float32)
        rows = slice(Y_PER_Z * start, Y_PER_Z * stop)
        y_idx[:, :, rows], y_hat[:, :, rows] = idx, band_hat
        t["entropy_decode"] += time.perf_counter() - t1

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


def _check_carries(streams: list[bytes], needed_bits: float, what: str, header) -> None:
    """Refuses sections too short to hold what the header declares, before the work that
    the declared size would cost (a 49-byte file must not decode to 16384 x 16384)."""
    if not all(streams):
        raise container.ContainerError(f"the {what} section is empty")
    size = sum(map(len, streams))
    if 8 * size < _BOUND_FRACTION * needed_bits - _BOUND_SLACK_BITS:
        raise container.ContainerError(
            f"the {what} section ({size:,} bytes) cannot hold a "
            f"{header.width}x{header.height} image (at least {needed_bits / 8:,.0f} bytes)"
        )


def read_header(data: bytes) -> container.Header:
    """The header of a stream (verified), without any model."""
    return container.unpack(data)[0]
