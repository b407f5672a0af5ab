"""Rate-distortion evaluation with real files: every point is a file written and read back.

Results use CompressAI's JSON layout (``name``, ``description``, ``results`` with lists
``bpp``, ``psnr-rgb``, ``ms-ssim``, ``encoding_time``, ``decoding_time``), one point per
model, with per-image figures under the extra key ``per_image``.  MS-SSIM is computed where
a measure is supplied (the PyTorch side supplies pytorch-msssim); otherwise it is null.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from qaft.runtime import codec as codec_mod
from qaft.runtime.codec import Codec
from qaft.runtime.errors import QaftError
from qaft.runtime.image import load_rgb
from qaft.runtime.metrics import psnr
from qaft.runtime.quantizers import QuantizerParams

Measure = Callable[[np.ndarray, np.ndarray], float]
#: The environment variable naming a default folder of test images.
DATA_ENV = "QAFT_DATA"


def default_images() -> str | None:
    """The folder of test images named by the environment variable ``QAFT_DATA``, if set:
    the default of the commands that evaluate or time a model (the library assumes no
    folder of its own).  A variable naming no folder is a :class:`QaftError` that says so
    (a bare path in a message would not tell where it came from)."""
    folder = os.environ.get(DATA_ENV) or None
    if folder is not None and not os.path.isdir(folder):
        what = "not a folder" if os.path.exists(folder) else "no such folder"
        raise QaftError(f"${DATA_ENV}={folder}: {what} (set it to a folder of images)")
    return folder


@dataclass
class ImageResult:
    name: str
    bytes: int
    bpp: float
    psnr: float
    ms_ssim: float
    encoding_time: float
    decoding_time: float


def evaluate_image(
    codec: Codec,
    path: Path,
    workdir: Path,
    quantizer: str = "sq",
    params: QuantizerParams | None = None,
    ms_ssim: Measure | None = None,
) -> ImageResult:
    """Compresses one image to a file on disk, decodes that file, and measures both."""
    image = load_rgb(path)
    t0 = time.perf_counter()
    enc = codec_mod.encode(codec, image, quantizer, params)
    out = workdir / f"{path.stem}.qaft"
    out.write_bytes(enc.data)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    dec = codec_mod.decode(codec, out.read_bytes())
    t_dec = time.perf_counter() - t0
    if not np.array_equal(dec.y_indices, enc.y_indices):
        raise QaftError(f"{path.name}: decoded indices differ from the encoder's")
    n_bytes = out.stat().st_size
    h, w = image.shape[:2]
    return ImageResult(
        path.name,
        n_bytes,
        8.0 * n_bytes / (h * w),
        psnr(image, dec.image),
        ms_ssim(image, dec.image) if ms_ssim else float("nan"),
        t_enc,
        t_dec,
    )


def evaluate_codec(
    codec: Codec,
    images: list[Path],
    quantizer: str = "sq",
    params: QuantizerParams | None = None,
    keep_dir: Path | None = None,
    progress: bool = False,
    ms_ssim: Measure | None = None,
) -> list[ImageResult]:
    """Evaluates a codec on images; files go to ``keep_dir`` or a temporary folder."""
    from tqdm import tqdm

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(keep_dir) if keep_dir else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        return [
            evaluate_image(codec, p, workdir, quantizer, params, ms_ssim)
            for p in tqdm(images, disable=not progress, desc="images", leave=False)
        ]


def summarize(results: list[ImageResult]) -> dict[str, float]:
    """Means over images, as CompressAI reports them (PSNR averaged per image)."""
    keys = ("bpp", "psnr", "ms_ssim", "encoding_time", "decoding_time")
    out = {}
    for k in keys:
        vals = [v for v in (getattr(r, k) for r in results) if not math.isnan(v)]
        out[k] = float(np.mean(vals)) if vals else float("nan")
    return out


def _finite(v):
    """JSON has no NaN: unknown figures become null."""
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def results_json(name: str, description: str, points: list[dict]) -> dict:
    """CompressAI's results layout; ``points`` holds one dict per model."""
    return _finite(
        {
            "name": name,
            "description": description,
            "results": {
                "bpp": [p["summary"]["bpp"] for p in points],
                "psnr-rgb": [p["summary"]["psnr"] for p in points],
                "ms-ssim": [p["summary"]["ms_ssim"] for p in points],
                "encoding_time": [p["summary"]["encoding_time"] for p in points],
                "decoding_time": [p["summary"]["decoding_time"] for p in points],
            },
            "models": [p["model"] for p in points],
            "per_image": [[asdict(r) for r in p["images"]] for p in points],
        }
    )


def curve_point(
    results: list[ImageResult], model: dict, quantizer: str, params: QuantizerParams
) -> dict:
    """One model's point of a curve: its summary, per-image results and description
    (``model``, completed with the quantizer settings it was coded with)."""
    return {
        "summary": summarize(results),
        "images": results,
        "model": {
            **model,
            "quantizer": quantizer,
            "step": params.delta,
            "q_lmbda": params.rdo_lambda,
        },
    }


def read_points(path: str | Path) -> list[dict]:
    """The points of a results JSON that :func:`write_results` wrote (the inverse of
    :func:`results_json`; figures stored as null come back as NaN)."""

    def num(v):
        return float("nan") if v is None else v

    try:
        data = json.loads(Path(path).read_text())
        points = []
        for model, images in zip(data["models"], data["per_image"], strict=True):
            results = [ImageResult(**{k: num(v) for k, v in r.items()}) for r in images]
            points.append({"summary": summarize(results), "images": results, "model": model})
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise QaftError(f"{path}: not a results file with per-image figures ({exc})") from None
    return points


def results_text(name: str, description: str, points: list[dict]) -> str:
    """The points, by increasing rate, as a results JSON in CompressAI's layout."""
    points = sorted(points, key=lambda p: p["summary"]["bpp"])
    return json.dumps(results_json(name, description, points), indent=2)


def is_results(obj) -> bool:
    """Whether a parsed JSON document is a results file of this layout."""
    return isinstance(obj, dict) and isinstance(obj.get("results"), dict)


def write_results(path: str | Path, name: str, description: str, points: list[dict]) -> None:
    """Writes :func:`results_text` to ``path`` (benchmarks into the repository's results)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(results_text(name, description, points))
