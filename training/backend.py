"""The PyTorch backend of :class:`qaft.runtime.codec.Networks`."""

from __future__ import annotations

import numpy as np
import torch

from qaft.runtime.backends.products import OrtProducts
from qaft.runtime.codec import Codec
from qaft.runtime.model import Model
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
            z = self.model.hyper_analysis(y)
        return y.cpu().numpy(), z.cpu().numpy()

    def synthesis(self, y_hat: np.ndarray) -> np.ndarray:
        return self._run(self.model.g_s, y_hat).cpu().numpy()


def _products() -> OrtProducts:
    """The exact hyper-synthesis's products on ONNX Runtime, as the runtime's codecs run
    them (NumPy's OpenBLAS workers spin on after each product, on the cores PyTorch's
    synthesis needs next: a Kodak decode took 239 ms with them, 173 ms without)."""
    return OrtProducts(torch.get_num_threads())


def codec_from_loaded(loaded: LoadedModel, device: str = "cpu") -> Codec:
    """A codec running a loaded model file through PyTorch."""
    return Codec(TorchNetworks(loaded.model.to(device).eval(), device), loaded.runtime, _products())


def codec_from_model(model: MeanScaleHyperprior) -> Codec:
    """A codec for a model in training: freezes its current tables (on the CPU)."""
    model = model.eval()
    tables = model.build_tables()
    device = next(model.parameters()).device
    hyper = model.integer_hyper_synthesis()
    return Codec(
        TorchNetworks(model, device),
        Model(tables, hyper, model_fingerprint(model, tables, hyper)),
        _products(),
    )
