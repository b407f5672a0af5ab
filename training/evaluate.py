"""Rate-distortion evaluation with real files: every point is a file written and read back.

Results use CompressAI's JSON layout (``name``, ``description``, ``results`` with lists
``bpp``, ``psnr-rgb``, ``ms-ssim``, ``encoding_time``, ``decoding_time``), one point per
model, with per-image figures under the extra key ``per_image``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from pytorch_msssim import ms_ssim

from qaft.runtime import codec as codec_mod
from qaft.runtime.codec import Codec
from qaft.runtime.image import load_rgb
from qaft.runtime.metrics import psnr
from qaft.runtime.quantizers import QuantizerParams
from qaft.training.backend import codec_from_model
from qaft.training.data import list_images

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_kodak() -> str | None:
    """``../shared/data/kodak`` next to the working directory or the repository, if present."""
    for base in (Path.cwd(), REPO_ROOT):
        cand = base.parent / "shared" / "data" / "kodak"
        if cand.is_dir():
            return str(cand)
    return None


@dataclass
class ImageResult:
    name: str
    bytes: int
    bpp: float
    psnr: float
    ms_ssim: float
    encoding_time: float
    decoding_time: float


def msssim_rgb(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two (H, W, 3) uint8 images; nan when too small for five scales."""
    if min(a.shape[:2]) < 161:
        return float("nan")
    ta = torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float()
    tb = torch.from_numpy(np.array(b)).permute(2, 0, 1)[None].float()
    return float(ms_ssim(ta, tb, data_range=255.0))


def evaluate_image(
    codec: Codec,
    path: Path,
    workdir: Path,
    quantizer: str = "sq",
    params: QuantizerParams | None = None,
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
        raise RuntimeError(f"{path.name}: decoded indices differ from the encoder's")
    n_bytes = out.stat().st_size
    h, w = image.shape[:2]
    return ImageResult(
        path.name,
        n_bytes,
        8.0 * n_bytes / (h * w),
        psnr(image, dec.image),
        msssim_rgb(image, dec.image),
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
) -> list[ImageResult]:
    """Evaluates a codec on images; files go to ``keep_dir`` or a temporary folder."""
    from tqdm import tqdm

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(keep_dir) if keep_dir else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        return [
            evaluate_image(codec, p, workdir, quantizer, params)
            for p in tqdm(images, disable=not progress, desc="images", leave=False)
        ]


def summarize(results: list[ImageResult]) -> dict[str, float]:
    """Means over images, as CompressAI reports them (PSNR averaged per image)."""
    keys = ("bpp", "psnr", "ms_ssim", "encoding_time", "decoding_time")
    return {k: float(np.nanmean([getattr(r, k) for r in results])) for k in keys}


def results_json(name: str, description: str, points: list[dict]) -> dict:
    """CompressAI's results layout; ``points`` holds one dict per model."""
    return {
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


def make_validator(folder: str, max_images: int):
    """A training hook: codes the first ``max_images`` images of ``folder`` to real files."""
    images = list_images(folder)
    if max_images:
        images = images[:max_images]

    def validate(model) -> dict:
        return summarize(evaluate_codec(codec_from_model(model), images))

    return validate
