"""Factorized prior for the hyper-latent ``z``, or for ``y`` itself in a factorized-prior
model (Ballé et al. 2018, appendix 6.1).

Parameter names match CompressAI's ``EntropyBottleneck`` (``matrices.0``, ``biases.0``,
``factors.0``, ``quantiles``, ``target``, ``likelihood_lower_bound.bound``); the names of
CompressAI before 1.2 (``_matrix0``, ``_bias0``, ``_factor0``) are accepted on load.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from qaft.runtime.entropy.channel_cdf import SAMPLES_PER_UNIT, ChannelCdf
from qaft.runtime.entropy.tables import TableSet
from qaft.training.layers import LowerBound


class EntropyBottleneck(nn.Module):
    """A learned, per-channel, non-parametric density over the hyper-latent."""

    target: torch.Tensor

    def __init__(
        self,
        channels: int,
        tail_mass: float = 1e-9,
        init_scale: float = 10.0,
        filters: tuple[int, ...] = (3, 3, 3, 3),
    ):
        super().__init__()
        self.channels = channels
        self.filters = tuple(filters)
        self.likelihood_lower_bound = LowerBound(1e-9)
        dims = (1, *self.filters, 1)
        scale = init_scale ** (1 / (len(self.filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(self.filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(torch.full((channels, dims[i + 1], dims[i]), init))
            self.biases.append(torch.rand(channels, dims[i + 1], 1) - 0.5)
            if i < len(self.filters):
                self.factors.append(torch.zeros(channels, dims[i + 1], 1))
        self.quantiles = nn.Parameter(
            torch.tensor([-init_scale, 0.0, init_scale]).repeat(channels, 1, 1)
        )
        t = math.log(2 / tail_mass - 1)
        self.register_buffer("target", torch.tensor([-t, 0.0, t]))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for old, new in (("_matrix", "matrices."), ("_bias", "biases."), ("_factor", "factors.")):
            for key in [k for k in state_dict if re.fullmatch(re.escape(prefix + old) + r"\d+", k)]:
                state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _logits_cumulative(self, x: torch.Tensor, stop_gradient: bool) -> torch.Tensor:
        """Logit of the CDF at x; x is laid out (channels, 1, samples)."""
        logits = x
        for i in range(len(self.filters) + 1):
            matrix = F.softplus(self.matrices[i])
            bias = self.biases[i]
            if stop_gradient:
                matrix, bias = matrix.detach(), bias.detach()
            logits = torch.matmul(matrix, logits) + bias
            if i < len(self.filters):
                factor = torch.tanh(self.factors[i])
                if stop_gradient:
                    factor = factor.detach()
                logits = logits + factor * torch.tanh(logits)
        return logits

    def medians(self) -> torch.Tensor:
        """Per-channel median of the density, the centre of quantization."""
        return self.quantiles[:, 0, 1]

    def loss(self) -> torch.Tensor:
        """Auxiliary loss that moves ``quantiles`` onto the density's tails and median."""
        logits = self._logits_cumulative(self.quantiles, stop_gradient=True)
        return torch.abs(logits - self.target).sum()

    def likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """Probability mass of the unit interval around each value of ``z`` (N, C, H, W)."""
        c = z.shape[1]
        v = z.transpose(0, 1).reshape(c, 1, -1)
        lower = self._logits_cumulative(v - 0.5, stop_gradient=False)
        upper = self._logits_cumulative(v + 0.5, stop_gradient=False)
        # Evaluate on the side of the median where the sigmoid is not saturated.
        sign = -torch.sign(lower + upper).detach()
        lik = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        lik = self.likelihood_lower_bound(lik)
        n, _, h, w = z.shape
        return lik.reshape(c, n, h, w).transpose(0, 1)

    def quantize(self, z: torch.Tensor, mode: str) -> torch.Tensor:
        """Stand-in for quantization in training: uniform noise, or rounding around the
        median with a straight-through gradient."""
        if mode == "noise":
            return z + torch.empty_like(z).uniform_(-0.5, 0.5)
        med = self.medians().detach().reshape(1, -1, 1, 1)
        return z + (torch.round(z - med) + med - z).detach()

    @torch.no_grad()
    def build_tables(self) -> tuple[TableSet, np.ndarray]:
        """Per-channel tables for ``round(z - median)`` and the medians (float32)."""
        medians = self.medians().detach()
        lo = torch.ceil(medians - self.quantiles[:, 0, 0]).clamp(min=0).long()
        hi = torch.ceil(self.quantiles[:, 0, 2] - medians).clamp(min=0).long()
        width = int((lo + hi).max()) + 1
        # One padded grid for all channels: channel c samples median_c + k, k >= -lo_c.
        k = torch.arange(width, dtype=torch.float32).reshape(1, 1, -1) - lo.reshape(-1, 1, 1)
        v = k + medians.reshape(-1, 1, 1)
        lower = self._logits_cumulative(v - 0.5, stop_gradient=True)
        upper = self._logits_cumulative(v + 0.5, stop_gradient=True)
        sign = -torch.sign(lower + upper)
        pmf = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        pmf = pmf[:, 0, :].double().cpu().numpy()
        rows = [pmf[c, : int(lo[c] + hi[c]) + 1] for c in range(self.channels)]
        return TableSet.from_rows(rows, (-lo).tolist()), medians.float().cpu().numpy().copy()

    @torch.no_grad()
    def sampled_cdf(self) -> ChannelCdf:
        """Each channel's CDF of ``z − median`` on a grid of :data:`SAMPLES_PER_UNIT` points
        per unit, one unit beyond its quantiles on either side: what a factorized prior's
        trellis tables integrate (:mod:`qaft.runtime.entropy.channel_cdf`)."""
        medians = self.medians()
        lo = float((medians - self.quantiles[:, 0, 0]).max())
        hi = float((self.quantiles[:, 0, 2] - medians).max())
        lower, upper = -(math.ceil(max(lo, 0.0)) + 1.0), math.ceil(max(hi, 0.0)) + 1.0
        n = int((upper - lower) * SAMPLES_PER_UNIT) + 1
        x = lower + torch.arange(n, dtype=torch.float64) / SAMPLES_PER_UNIT
        v = (medians.double().reshape(-1, 1) + x.reshape(1, -1)).float().unsqueeze(1)
        logits = self._logits_cumulative(v, stop_gradient=True)[:, 0, :]
        cdf = torch.sigmoid(logits).double().cpu().numpy()
        cdf = np.clip(np.maximum.accumulate(cdf, axis=1), 0.0, 1.0)  # float noise, not shape
        return ChannelCdf(lower, 1.0 / SAMPLES_PER_UNIT, cdf)
