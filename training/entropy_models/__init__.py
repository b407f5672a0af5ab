"""Differentiable entropy models used in training (likelihoods), and their tables."""

from qaft.training.entropy_models.bottleneck import EntropyBottleneck
from qaft.training.entropy_models.gaussian import GaussianConditional

__all__ = ["EntropyBottleneck", "GaussianConditional"]
