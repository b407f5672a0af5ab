"""Gaussian conditional for the latent ``y`` with mean and scale from the hyper-decoder.

Buffer names match CompressAI's ``GaussianConditional`` (``scale_table``, ``scale_bound``,
``likelihood_lower_bound.bound``, ``lower_bound_scale.bound``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from qaft.runtime.entropy.calibration import Calibration
from qaft.runtime.entropy.tables import SCALE_BOUND, SCALE_TABLE, TableSet, gaussian_tables
from qaft.training.layers import LowerBound


class GaussianConditional(nn.Module):
    """Likelihood of ``y`` under N(mean, scale) integrated over unit bins."""

    scale_table: torch.Tensor

    def __init__(self, scale_table: np.ndarray = SCALE_TABLE):
        super().__init__()
        self.register_buffer("scale_table", torch.tensor(scale_table, dtype=torch.float32))
        self.register_buffer("scale_bound", torch.tensor([SCALE_BOUND]))
        self.likelihood_lower_bound = LowerBound(1e-9)
        self.lower_bound_scale = LowerBound(SCALE_BOUND)
        # Fitted after training (``qaft calibrate``), used only for the coding tables; kept in
        # a model file's tables, not among the weights, so CompressAI's names stay as they are.
        self.calibration: Calibration | None = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A checkpoint may carry its own scale levels (CompressAI's ``update(scale_table=…)``):
        # adopt its size so that the coding tables follow the levels it was trained with.
        table = state_dict.get(prefix + "scale_table")
        if table is not None and table.shape != self.scale_table.shape:
            self.scale_table = torch.empty_like(table)
        state_dict.setdefault(prefix + "scale_bound", self.scale_bound.clone())  # pre-1.2 files
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def likelihood(
        self, y: torch.Tensor, scales: torch.Tensor, means: torch.Tensor
    ) -> torch.Tensor:
        scales = self.lower_bound_scale(scales)
        v = torch.abs(y - means)
        upper = _std_cdf((0.5 - v) / scales)
        lower = _std_cdf((-0.5 - v) / scales)
        return self.likelihood_lower_bound(upper - lower)

    @staticmethod
    def quantize(y: torch.Tensor, means: torch.Tensor, mode: str) -> torch.Tensor:
        """``noise``: y + U(-1/2, 1/2); ``ste``: round(y - mean) + mean, gradient passed
        straight through."""
        if mode == "noise":
            return y + torch.empty_like(y).uniform_(-0.5, 0.5)
        return y + (torch.round(y - means) + means - y).detach()

    def build_tables(self) -> TableSet:
        return gaussian_tables(self.scale_table.double().cpu().numpy(), self.calibration)


def _std_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-x * (2**-0.5))
