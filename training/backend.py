"""The PyTorch backend of :class:`qaft.runtime.codec.Networks`."""

from __future__ import annotations

import numpy as np
import torch

from qaft.runtime.codec import Codec
from qaft.runtime.quantizers import QuantizerParams
from qaft.runtime.quantizers.base import distortion_weights as weights_from_gain
from qaft.training.checkpoint import LoadedModel, model_fingerprint
from qaft.training.models import MeanScaleHyperprior


class TorchNetworks:
    """Runs a model's float transforms (analysis, synthesis) in fp32 on NumPy arrays."""

    def __init__(self, model: MeanScaleHyperprior, device: str | torch.device = "cpu"):
        self.model = model
        self.device = torch.device(device)

    def _run(self, module, x: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))

    def analysis(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = self._run(self.model.g_a, x)
        with torch.no_grad():
            z = self.model.h_a(y)
        return y.cpu().numpy(), z.cpu().numpy()

    def synthesis(self, y_hat: np.ndarray) -> np.ndarray:
        return self._run(self.model.g_s, y_hat).cpu().numpy()


def quantizer_defaults(meta: dict) -> dict[str, QuantizerParams]:
    """The quantizer settings measured for a model (``meta["quantizers"]``)."""
    return {
        name: QuantizerParams(float(v["step"]), float(v["lmbda"]))
        for name, v in meta.get("quantizers", {}).items()
    }


def distortion_weights(meta: dict) -> np.ndarray | None:
    """Per-channel distortion weights from a model's measured synthesis gain, if any."""
    if meta.get("synthesis_gain") is None or not meta.get("lmbda"):
        return None
    return weights_from_gain(meta["lmbda"], meta["synthesis_gain"])


def codec_from_loaded(loaded: LoadedModel, device: str = "cpu") -> Codec:
    """A codec running a loaded model file through PyTorch."""
    return Codec(
        TorchNetworks(loaded.model.to(device).eval(), device),
        loaded.hyper,
        loaded.tables,
        loaded.fingerprint,
        quantizer_defaults(loaded.meta),
        distortion_weights(loaded.meta),
    )


def codec_from_model(model: MeanScaleHyperprior) -> Codec:
    """A codec for a model in training: freezes its current tables (on the CPU)."""
    model = model.eval()
    tables = model.build_tables()
    device = next(model.parameters()).device
    hyper = model.integer_hyper_synthesis()
    return Codec(
        TorchNetworks(model, device), hyper, tables, model_fingerprint(model, tables, hyper)
    )
