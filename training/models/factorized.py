"""The factorized prior (Ballé et al. 2018): no hyperprior, one learned density per channel of
y.  Names follow CompressAI's ``FactorizedPrior`` (``bmshj2018-factorized``)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from qaft.runtime.entropy.tables import TableSet
from qaft.runtime.model import ChannelPrior
from qaft.runtime.model_tables import ModelTables
from qaft.training.entropy_models import EntropyBottleneck
from qaft.training.models.hyperprior import STAND_INS, ModelConfig, transforms


class FactorizedPrior(nn.Module):
    """No hyperprior: ``g_a``/``g_s`` as the hyperpriors', and y coded under one learned
    density per channel (an :class:`EntropyBottleneck` of M channels, rounded around its
    medians).  Its hyper-latent has no channels (:meth:`hyper_analysis`); the runtime's
    prior is a :class:`~qaft.runtime.model.ChannelPrior`."""

    downsampling = 64  # as the hyperpriors: the runtime pads every model alike

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        config = config or ModelConfig(architecture="factorized-prior")
        self.config = config
        N, M = config.N, config.M
        self.g_a, self.g_s = transforms(N, M)
        self.entropy_bottleneck = EntropyBottleneck(M)

    def hyper_analysis(self, y: torch.Tensor) -> torch.Tensor:
        """A hyper-latent of no channels: only its geometry (a quarter of y's) counts."""
        n, _, h, w = y.shape
        return y.new_zeros((n, 0, -(-h // 4), -(-w // 4)))

    def integer_hyper_synthesis(self) -> ChannelPrior:
        """The runtime's prior: each channel's table and median."""
        return ChannelPrior(self.entropy_bottleneck.medians().detach().float().cpu().numpy())

    def forward(self, x: torch.Tensor, stand_in: str = "mixed") -> dict[str, torch.Tensor]:
        """Training pass, the stand-ins as :meth:`MeanScaleHyperprior.forward`'s."""
        if stand_in not in STAND_INS:
            raise ValueError(f"unknown stand-in {stand_in!r}; choose from {STAND_INS}")
        eb = self.entropy_bottleneck
        y = self.g_a(x).float()
        y_hat = eb.quantize(y, "noise" if stand_in == "noise" else "ste")
        y_rate = y + torch.empty_like(y).uniform_(-0.5, 0.5) if stand_in == "mixed" else y_hat
        x_hat = self.g_s(y_hat)
        with torch.autocast(x.device.type, enabled=False):
            return {
                "x_hat": x_hat.float(),
                "y_likelihood": eb.likelihood(y_rate.float()),
                "z_likelihood": y.new_ones((y.shape[0], 0, 1, 1)),
            }

    def aux_loss(self) -> torch.Tensor:
        return self.entropy_bottleneck.loss()

    def build_tables(self) -> ModelTables:
        """y's per-channel tables (scale levels 1 … M label them) and no z tables."""
        y_tables, _ = self.entropy_bottleneck.build_tables()
        m = self.config.M
        return ModelTables(
            z_tables=TableSet(np.zeros((0, 1)), np.zeros(0, np.int32), np.zeros(0, np.int32)),
            z_medians=np.zeros(0, np.float32),
            y_tables=y_tables,
            scale_table=np.arange(1, m + 1, dtype=np.float64),
            channel_cdf=self.entropy_bottleneck.sampled_cdf(),
        )

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(main parameters, auxiliary ``quantiles``): they use separate optimizers."""
        aux = [self.entropy_bottleneck.quantiles]
        main = [p for n, p in self.named_parameters() if not n.endswith("quantiles")]
        return main, aux
