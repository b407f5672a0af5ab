"""Codec architectures."""

from qaft.training.models.hyperprior import MeanScaleHyperprior, ModelConfig

__all__ = ["MeanScaleHyperprior", "ModelConfig"]
