"""The PyTorch files of the bundled models; the index is the runtime's (qaft.runtime.zoo)."""

from __future__ import annotations

from pathlib import Path

from qaft.runtime import zoo as _zoo
from qaft.runtime.zoo import DEFAULT_MODEL, UnknownModelError

__all__ = ["DEFAULT_MODEL", "UnknownModelError", "list_models", "model_path"]


def list_models() -> list[dict]:
    """Zoo entries with ``path`` pointing at each model's PyTorch file."""
    return _zoo.list_models("checkpoint")


def model_path(name: str) -> Path:
    """The PyTorch file of a bundled model by name."""
    return _zoo.model_path(name, "checkpoint")
