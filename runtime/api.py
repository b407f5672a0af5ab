"""The Python API: images in, ``.qaft`` bytes out, and back, without a subprocess.

::

    import qaft.runtime as qr

    codec = qr.load("q3")              # a bundled model's name, or a model folder
    data = codec.compress(rgb)         # (H, W, 3) uint8 -> the bytes of a .qaft file
    rgb = codec.decompress(data)       # -> (H, W, 3) uint8

    data = qr.compress(rgb, quality=3)           # the model chosen as `qaft-run compress` does
    rgb = qr.decompress(data)                    # the bundled model the header names
    qr.info(data)                                # the header's fields, no model loaded

Everything here codes the bytes ``qaft-run`` writes with the same options (the model choice,
quantizer and settings are decided by the functions below, which ``qaft-run`` calls too).
Failures raise :class:`~qaft.runtime.errors.QaftError` with the one-line message the command
line prints (options named as keywords here, as flags there); a quantizer that a model was
not finetuned for, asked for anyway, gives a :class:`UserWarning`.

This module imports neither PyTorch nor, until a model is loaded, ONNX Runtime.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from qaft.runtime.errors import QaftError

#: How messages name the options: the API's keywords; ``qaft-run`` passes its flags.
KEYWORDS = {
    "model": "model",
    "quality": "quality",
    "target_bpp": "target_bpp",
    "target_psnr": "target_psnr",
    "step": "step",
    "q_lmbda": "q_lmbda",
}
FLAGS = {key: "--" + key.replace("_", "-") for key in KEYWORDS}
#: The quantizer a target search codes with unless another is asked for: its step moves the
#: rate continuously within a model.
TARGET_QUANTIZER = "tcq"


@dataclass(frozen=True)
class Setting:
    """How one model codes: its folder, the quantizer and its settings, and the warnings
    the choice gives (``warning: …`` lines, said once)."""

    model_dir: Any  # a verified qaft.runtime.model_dir.ModelDir
    quantizer: str
    params: Any  # QuantizerParams
    warnings: tuple[str, ...] = ()


def _is_number(value: Any) -> bool:
    """Whether ``value`` is a real number (a NumPy scalar included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def open_model(spec: str | os.PathLike) -> Any:
    """A bundled model's name or a model folder's path -> its verified ``ModelDir``."""
    from qaft.runtime.model_dir import open_model_dir
    from qaft.runtime.zoo import resolve

    if not isinstance(spec, (str, os.PathLike)):
        raise QaftError(
            f"a model is a bundled model's name or a folder's path, not {type(spec).__name__}"
        )
    if not os.fspath(spec):  # Path("") is the current folder: never meant
        raise QaftError("a model is a bundled model's name or a folder's path, not ''")
    return open_model_dir(resolve(os.fspath(spec)))


def check_encoder(model_dir, precision: str = "fp32") -> None:
    """A model must have its analysis graph to encode: a stage-2 folder whose parent is
    absent (it decodes) says so once, before any image."""
    graphs = "fp16" if precision == "fp16" else "fp32"  # bf16 (OpenVINO) runs the fp32 graphs
    if graphs in model_dir.precisions:
        model_dir.graph_bytes("analysis", graphs)


def choose_model(
    model: str | os.PathLike | None = None,
    quality: int | None = None,
    target_bpp: float | None = None,
    target_psnr: float | None = None,
    quantizer: str | None = None,
    step: float | None = None,
    q_lmbda: float | None = None,
    names: dict[str, str] = KEYWORDS,
) -> str | os.PathLike | None:
    """The model a compression codes with, as ``qaft-run compress`` chooses it: ``model``
    (a name or a folder), the zoo's model of rate ``quality`` (finetuned for ``quantizer``
    where the zoo has one), else the default model; None where a target (``target_bpp``
    or ``target_psnr``) chooses per image.  ``names`` are the options' names in messages."""
    from qaft.runtime.zoo import DEFAULT_MODEL, model_for_quality

    given = {"model": model, "quality": quality, "target_bpp": target_bpp}
    given["target_psnr"] = target_psnr
    chosen = [names[key] for key, value in given.items() if value is not None]
    if len(chosen) > 1:
        raise QaftError(f"{' and '.join(chosen)} each choose the model: give one of them")
    if target_bpp is not None or target_psnr is not None:
        if step is not None or q_lmbda is not None:
            raise QaftError(
                f"{names['step']} and {names['q_lmbda']} are what a target search sets: "
                "leave them out"
            )
        key = "target_bpp" if target_bpp is not None else "target_psnr"
        value = given[key]
        if not (_is_number(value) and math.isfinite(value) and value > 0):
            raise QaftError(f"{names[key]} must be a positive number, not {value!r}")
        return None
    if quality is not None:
        if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
            raise QaftError(f"{names['quality']} must be an integer, not {quality!r}")
        return model_for_quality(int(quality), quantizer)
    return DEFAULT_MODEL if model is None else model


def coding_setting(
    model_dir,
    quantizer: str | None = None,
    step: float | None = None,
    q_lmbda: float | None = None,
    precision: str = "fp32",
    names: dict[str, str] = KEYWORDS,
) -> Setting:
    """The quantizer (the model's own unless another is asked for) and its settings (the
    model's measured ones, with ``step``/``q_lmbda`` applied) with which ``model_dir``
    encodes, as ``qaft-run compress`` decides them."""
    from qaft.runtime.quantizers import QUANTIZERS, quantizer_for

    check_encoder(model_dir, precision)
    if quantizer is not None and quantizer not in QUANTIZERS:
        raise QaftError(f"unknown quantizer {quantizer!r}; choose from {sorted(QUANTIZERS)}")
    for key, value in (("step", step), ("q_lmbda", q_lmbda)):
        if value is not None and not _is_number(value):
            raise QaftError(f"{names[key]} must be a number, not {value!r}")
    # NumPy scalars as Python floats: the settings (and the header's step) are the same
    step, q_lmbda = (None if v is None else float(v) for v in (step, q_lmbda))
    name = model_dir.path.name
    quantizer, warning = quantizer_for(name, model_dir.model.meta.finetuned_for, quantizer)
    said = [warning] if warning else []
    params = model_dir.model.params(quantizer, step, q_lmbda)
    if step is not None and not QUANTIZERS[quantizer].uses_delta:
        users = " and ".join(n for n, q in QUANTIZERS.items() if q.uses_delta)
        said.append(f"warning: {names['step']} is for {users}; {quantizer} does not use it")
    return Setting(model_dir, quantizer, params, tuple(said))


def not_bundled(fingerprint: bytes, option: str = "model=") -> QaftError:
    """The error for a stream whose model is not bundled (so it cannot be picked by its
    fingerprint): the caller names the model with ``option``."""
    return QaftError(f"written by model {fingerprint.hex()}, which is not bundled: pass {option}")


def as_image(image: Any) -> np.ndarray:
    """``image`` checked to be an (H, W, 3) uint8 array, or a :class:`QaftError` that says
    how to make one."""
    if not isinstance(image, np.ndarray):
        raise QaftError(f"expected an (H, W, 3) uint8 NumPy array, not {type(image).__name__}")
    if image.dtype.kind == "f":
        raise QaftError(
            f"a floating-point image ({image.dtype}) has no agreed 8-bit mapping: convert it "
            "to uint8 first, e.g. (np.clip(x, 0, 1) * 255).round().astype(np.uint8)"
        )
    if image.dtype != np.uint8:
        hint = " (16-bit samples: keep the top 8 bits, (x >> 8).astype(np.uint8))"
        raise QaftError(
            f"a {image.dtype} image: expected uint8 samples"
            + (hint if image.dtype in (np.uint16, np.int32, np.uint32) else "")
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise QaftError(
            f"expected an (H, W, 3) RGB image, got shape {image.shape} (grayscale: "
            "np.repeat(x[..., None], 3, axis=2); RGBA: x[..., :3])"
        )
    return image


def as_stream(data: Any) -> bytes:
    """``data`` checked to be the bytes of a file (bytes, bytearray or memoryview)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, (str, os.PathLike)):
        raise QaftError(
            "expected the bytes of a .qaft file, not a path: read it first "
            "(pathlib.Path(path).read_bytes())"
        )
    raise QaftError(f"expected the bytes of a .qaft file, not {type(data).__name__}")


def _warn(setting: Setting) -> None:
    for line in setting.warnings:
        warnings.warn(line.removeprefix("warning: "), UserWarning, stacklevel=3)


@dataclass(frozen=True)
class ImageCodec:
    """A loaded model, ready to code images (what :func:`load` returns).

    Thread safety: :meth:`compress` and :meth:`decompress` may run in several threads at
    once on one codec (ONNX Runtime sessions run concurrently, the model's derived tables
    are built under a lock, and nothing else is shared); each call's result is the same
    as alone."""

    model_dir: Any  # the verified ModelDir
    codec: Any  # qaft.runtime.codec.Codec
    precision: str = "fp32"

    @property
    def name(self) -> str:
        """The model's folder name (a bundled model's name)."""
        return self.model_dir.path.name

    def setting(
        self, quantizer: str | None = None, step: float | None = None, q_lmbda: float | None = None
    ) -> Setting:
        """The quantizer and settings :meth:`compress` codes with for these options."""
        return coding_setting(self.model_dir, quantizer, step, q_lmbda, self.precision)

    def compress(
        self,
        image: np.ndarray,
        *,
        quantizer: str | None = None,
        step: float | None = None,
        q_lmbda: float | None = None,
    ) -> bytes:
        """The ``.qaft`` bytes of an (H, W, 3) uint8 RGB image, those ``qaft-run compress
        --model M`` writes with the same options: ``quantizer`` (default: the one the
        model was finetuned for, else sq), ``step`` (Δ) and ``q_lmbda`` (default: the
        model's measured settings)."""
        from qaft.runtime.codec import encode

        image = as_image(image)
        setting = self.setting(quantizer, step, q_lmbda)
        _warn(setting)
        return encode(self.codec, image, setting.quantizer, setting.params).data

    def decompress(self, data: bytes) -> np.ndarray:
        """The (H, W, 3) uint8 image of a ``.qaft`` stream written by this model."""
        from qaft.runtime.codec import decode

        return decode(self.codec, as_stream(data)).image


def load(
    model: str | os.PathLike | None = None,
    *,
    backend: str = "auto",
    threads: int = 0,
    precision: str = "auto",
) -> ImageCodec:
    """Loads a model for coding: a bundled model's name (``qaft-run models`` lists them;
    default: the default model) or a model folder's path; ``backend`` (auto, cpu, cuda,
    tensorrt, openvino), the backend's ``threads`` (0: its default) and the graphs'
    ``precision`` (fp32, fp16, bf16 on openvino, auto) as ``qaft-run``'s options of the
    same names."""
    from qaft.runtime.backends.onnx import onnx_codec
    from qaft.runtime.zoo import DEFAULT_MODEL

    model_dir = open_model(DEFAULT_MODEL if model is None else model)
    if precision not in ("auto", "fp32", "fp16", "bf16"):
        raise QaftError(f"unknown precision {precision!r}; choose from auto, fp32, fp16, bf16")
    return ImageCodec(model_dir, onnx_codec(model_dir, backend, threads, precision), precision)


def compress(
    image: np.ndarray,
    *,
    model: str | os.PathLike | None = None,
    quality: int | None = None,
    target_bpp: float | None = None,
    target_psnr: float | None = None,
    quantizer: str | None = None,
    step: float | None = None,
    q_lmbda: float | None = None,
    backend: str = "auto",
    threads: int = 0,
    precision: str = "auto",
) -> bytes:
    """The ``.qaft`` bytes of an (H, W, 3) uint8 RGB image, those ``qaft-run compress``
    writes with the same options: one of ``model``, ``quality`` (the zoo's rate 0..6),
    ``target_bpp`` or ``target_psnr`` (per image, the model and step that meet it) chooses
    the model (default: the default model).  Loads the model(s) on each call: for many
    images, :func:`load` one and call its ``compress``."""
    from qaft.runtime.rate_control import encode_to_target, zoo_candidates

    image = as_image(image)
    spec = choose_model(model, quality, target_bpp, target_psnr, quantizer, step, q_lmbda)
    if spec is not None:
        coder = load(spec, backend=backend, threads=threads, precision=precision)
        return coder.compress(image, quantizer=quantizer, step=step, q_lmbda=q_lmbda)
    candidates = zoo_candidates(
        quantizer or TARGET_QUANTIZER, backend=backend, threads=threads, precision=precision
    )
    return encode_to_target(image, candidates, target_bpp=target_bpp, target_psnr=target_psnr).data


def decompress(
    data: bytes,
    *,
    model: str | os.PathLike | None = None,
    backend: str = "auto",
    threads: int = 0,
    precision: str = "auto",
) -> np.ndarray:
    """The (H, W, 3) uint8 image of a ``.qaft`` stream, decoded by the bundled model that
    wrote it (named by the header's fingerprint), or by ``model``, as ``qaft-run
    decompress`` decodes it.  Loads the model on each call: for many files, :func:`load`
    it once."""
    from qaft.runtime.codec import read_header
    from qaft.runtime.zoo import find_by_fingerprint

    data = as_stream(data)
    if model is None:
        fingerprint = read_header(data).fingerprint
        model = find_by_fingerprint(fingerprint)
        if model is None:
            raise not_bundled(fingerprint)
    coder = load(model, backend=backend, threads=threads, precision=precision)
    return coder.decompress(data)


def info(data: bytes) -> dict[str, Any]:
    """What a stream's header says (verified; no model loaded): ``bytes``,
    ``format_version``, ``width``, ``height``, ``bpp``, ``quantizer``, ``step``,
    ``model_fingerprint`` (hex) and ``bundled_model`` (the bundled model of that
    fingerprint, else None), as ``qaft-run info --json`` reports them."""
    from qaft.runtime.codec import read_header
    from qaft.runtime.quantizers import QUANTIZER_NAMES
    from qaft.runtime.zoo import bundled_name

    data = as_stream(data)
    h = read_header(data)
    return {
        "bytes": len(data),
        "format_version": h.version,
        "width": h.width,
        "height": h.height,
        "bpp": 8 * len(data) / (h.width * h.height),
        "quantizer": QUANTIZER_NAMES.get(h.quantizer_id, f"unknown ({h.quantizer_id})"),
        "step": h.step,
        "model_fingerprint": h.fingerprint.hex(),
        "bundled_model": bundled_name(h.fingerprint),
    }


__all__ = ["ImageCodec", "compress", "decompress", "info", "load"]
