"""Converting checkpoints written by CompressAI's ``MeanScaleHyperprior`` (``mbt2018-mean``),
``ScaleHyperprior`` (``bmshj2018-hyperprior``) and ``FactorizedPrior``
(``bmshj2018-factorized``).

Weights and the learned densities carry over unchanged (the names are CompressAI's).
CompressAI's own coder tables (``_quantized_cdf``, ``_offset``, ``_cdf_length``) are read
and replaced: qaft derives its tables from the same learned densities and the checkpoint's
own ``scale_table``, so no information is lost and the stored CDFs are not needed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from qaft.runtime.model import ModelMeta
from qaft.training.checkpoint import CheckpointError, load_blob, save_model
from qaft.training.models import AnyModel, ModelConfig, build_model

#: CompressAI buffers that hold its own integer CDFs; qaft rebuilds its tables instead.
COMPRESSAI_CODER_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length")


def read_compressai_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The model state dict in a CompressAI checkpoint (bare, or under ``state_dict``)."""
    blob = load_blob(path)
    if isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict):
        blob = blob["state_dict"]
    if (
        not isinstance(blob, dict)
        or not all(isinstance(k, str) for k in blob)
        or "g_a.0.weight" not in {k.removeprefix("module.") for k in blob}
    ):
        raise CheckpointError(f"{path}: not a CompressAI checkpoint of a model qaft knows")
    return {k.removeprefix("module."): v for k, v in blob.items()}


def architecture_of(state_dict: dict[str, torch.Tensor]) -> str:
    """Which of CompressAI's models wrote ``state_dict``: no ``h_s`` (``FactorizedPrior``),
    or by the shape of ``h_s``'s last convolution, 2M outputs (scales and means,
    ``MeanScaleHyperprior``) or M (scales, ``ScaleHyperprior``)."""
    if "g_a.6.weight" not in state_dict:
        raise CheckpointError("not a CompressAI model qaft knows (no g_a.6.weight)")
    M = state_dict["g_a.6.weight"].shape[0]
    if not any(k.startswith(("h_a.", "h_s.")) for k in state_dict):
        return "factorized-prior"
    last = state_dict.get("h_s.4.weight", torch.empty(0)).shape[:1]
    if last == (2 * M,):
        return "mean-scale-hyperprior"
    if last == (M,):
        return "scale-hyperprior"
    raise CheckpointError(f"not a hyperprior qaft knows (h_s gives {tuple(last)} channels, M={M})")


def convert(state_dict: dict[str, torch.Tensor]) -> AnyModel:
    """A qaft model holding exactly the weights of a CompressAI state dict."""
    if not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError("not a CompressAI checkpoint (a value is not a tensor)")
    architecture = architecture_of(state_dict)
    N = state_dict["g_a.0.weight"].shape[0]
    M = state_dict["g_a.6.weight"].shape[0]
    try:
        config = ModelConfig(N, M, architecture)
    except ValueError as exc:
        raise CheckpointError(f"not a usable architecture ({exc})") from None
    model = build_model(config)
    kept = {
        k: v for k, v in state_dict.items() if k.rsplit(".", 1)[-1] not in COMPRESSAI_CODER_BUFFERS
    }
    try:
        model.load_state_dict(kept, strict=True)
    except RuntimeError as exc:
        lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
        raise CheckpointError(
            f"checkpoint does not match the architecture: {lines[-1] if lines else exc}"
        ) from None
    return model.eval()


def import_compressai(
    src: str | Path, out: str | Path, lmbda: float | None = None, name: str | None = None
) -> Path:
    """Converts ``src`` (written by CompressAI) into a qaft model file at ``out``."""
    model = convert(read_compressai_state_dict(src))
    meta = ModelMeta.imported(
        lmbda, model.config.N, model.config.M, "compressai", Path(src).name, name
    )
    save_model(out, model, meta)
    return Path(out)
