"""Codec architectures."""

from qaft.training.models.hyperprior import (
    ARCHITECTURES,
    MeanScaleHyperprior,
    ModelConfig,
    ScaleHyperprior,
    build_model,
)

__all__ = ["ARCHITECTURES", "MeanScaleHyperprior", "ModelConfig", "ScaleHyperprior", "build_model"]
