"""Codec architectures."""

from qaft.training.models.factorized import FactorizedPrior
from qaft.training.models.hyperprior import (
    ARCHITECTURES,
    MeanScaleHyperprior,
    ModelConfig,
    ScaleHyperprior,
)

#: Any of the models (they share the training, finetuning and export code).
AnyModel = MeanScaleHyperprior | FactorizedPrior


def build_model(config: ModelConfig) -> AnyModel:
    """The untrained model of an architecture."""
    if config.architecture == "scale-hyperprior":
        return ScaleHyperprior(config)
    if config.architecture == "factorized-prior":
        return FactorizedPrior(config)
    return MeanScaleHyperprior(config)


__all__ = [
    "ARCHITECTURES",
    "AnyModel",
    "FactorizedPrior",
    "MeanScaleHyperprior",
    "ModelConfig",
    "ScaleHyperprior",
    "build_model",
]
