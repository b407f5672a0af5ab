"""Evaluation on the PyTorch side: the runtime's real-file evaluation plus MS-SSIM, and the
validation hook of training."""

from __future__ import annotations

import functools

import numpy as np
import torch
from pytorch_msssim import ms_ssim

from qaft.runtime.tools.rate_distortion import ImageResult, default_images, results_json, summarize
from qaft.runtime.tools.rate_distortion import evaluate_codec as _evaluate_codec
from qaft.training.backend import codec_from_model
from qaft.training.data import list_images


def msssim_rgb(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two (H, W, 3) uint8 images; nan when too small for five scales."""
    if min(a.shape[:2]) < 161:
        return float("nan")
    ta = torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float()
    tb = torch.from_numpy(np.array(b)).permute(2, 0, 1)[None].float()
    return float(ms_ssim(ta, tb, data_range=255.0))


#: The runtime's real-file evaluation, with MS-SSIM from pytorch-msssim.
evaluate_codec = functools.partial(_evaluate_codec, ms_ssim=msssim_rgb)


def make_validator(folder: str, max_images: int):
    """A training hook: codes the first ``max_images`` images of ``folder`` to real files."""
    images = list_images(folder)
    if max_images:
        images = images[:max_images]

    def validate(model) -> dict:
        return summarize(evaluate_codec(codec_from_model(model), images))

    return validate


__all__ = [
    "ImageResult",
    "default_images",
    "evaluate_codec",
    "make_validator",
    "msssim_rgb",
    "results_json",
    "summarize",
]
