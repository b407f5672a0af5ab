"""Generalized divisive normalization (Ballé et al. 2016).

Buffer and parameter names follow CompressAI's ``GDN`` so that its checkpoints load
unchanged (``beta``, ``gamma``, ``beta_reparam.pedestal``, ``…lower_bound.bound``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _LowerBoundFn(torch.autograd.Function):
    """max(x, bound) whose gradient still flows when it would push x back above bound.

    A plain ``torch.maximum`` kills the gradient of clamped parameters for good; GDN's
    reparametrized weights would then get stuck at the bound.
    """

    @staticmethod
    def forward(ctx, x, bound):
        ctx.save_for_backward(x, bound)
        return torch.max(x, bound)

    @staticmethod
    def backward(ctx, grad_output):
        x, bound = ctx.saved_tensors
        pass_through = (x >= bound) | (grad_output < 0)
        return pass_through.type(grad_output.dtype) * grad_output, None


class LowerBound(nn.Module):
    """Lower-bounds its input with a gradient that can lift it off the bound."""

    bound: torch.Tensor

    def __init__(self, bound: float):
        super().__init__()
        self.register_buffer("bound", torch.tensor([float(bound)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return torch.max(x, self.bound)
        return _LowerBoundFn.apply(x, self.bound)


class NonNegativeParametrizer(nn.Module):
    """Keeps a parameter non-negative by storing its (offset) square root."""

    pedestal: torch.Tensor

    def __init__(self, minimum: float = 0.0, reparam_offset: float = 2**-18):
        super().__init__()
        self.register_buffer("pedestal", torch.tensor([reparam_offset**2]))
        self.lower_bound = LowerBound((minimum + reparam_offset**2) ** 0.5)

    def init(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.max(x + self.pedestal, self.pedestal))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lower_bound(x) ** 2 - self.pedestal


class GDN(nn.Module):
    """y = x / sqrt(beta + gamma * x^2); ``inverse=True`` multiplies instead (IGDN)."""

    def __init__(
        self, channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1
    ):
        super().__init__()
        self.inverse = inverse
        self.beta_reparam = NonNegativeParametrizer(minimum=beta_min)
        self.beta = nn.Parameter(self.beta_reparam.init(torch.ones(channels)))
        self.gamma_reparam = NonNegativeParametrizer()
        self.gamma = nn.Parameter(self.gamma_reparam.init(gamma_init * torch.eye(channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        beta = self.beta_reparam(self.beta)
        gamma = self.gamma_reparam(self.gamma).reshape(c, c, 1, 1)
        norm = F.conv2d(x * x, gamma, beta)
        return x * (torch.sqrt(norm) if self.inverse else torch.rsqrt(norm))
