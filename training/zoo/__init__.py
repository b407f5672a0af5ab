"""The PyTorch files of the bundled models; the index is the runtime's (qaft.runtime.zoo).

They lie in this package's folder (a checkout has them all), else in the ``qaft_zoo_train``
package (``pip install ./zoo/train``): no distribution of the base package carries them.
"""

from __future__ import annotations

from pathlib import Path

from qaft.runtime import zoo as _zoo
from qaft.runtime.zoo import DEFAULT_MODEL, ModelNotInstalledError, Shelf, UnknownModelError

__all__ = [
    "CHECKPOINTS",
    "CHECKPOINT_DIR",
    "DEFAULT_MODEL",
    "ModelNotInstalledError",
    "UnknownModelError",
    "list_models",
    "model_path",
    "resolve",
]

CHECKPOINT_DIR = Path(__file__).resolve().parent
#: The shelf of the PyTorch files.
CHECKPOINTS = Shelf(
    "checkpoint", CHECKPOINT_DIR, "qaft_zoo_train", "`pip install ./zoo/train` from a qaft checkout"
)


def list_models() -> list[dict]:
    """Zoo entries with ``path`` pointing at each model's PyTorch file (None where it is
    not installed)."""
    return _zoo.list_models(CHECKPOINTS)


def model_path(name: str) -> Path:
    """The PyTorch file of a bundled model by name."""
    return _zoo.model_path(name, CHECKPOINTS)


def resolve(spec: str) -> Path:
    """A PyTorch model file by path, or a bundled model's by name (as
    :func:`qaft.runtime.zoo.resolve` resolves exported folders)."""
    return _zoo.resolve(spec, CHECKPOINTS)
