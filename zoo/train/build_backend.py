"""PEP 517 build backend of qaft-zoo-train: the zoo's own (``../build_backend.py``) for the
PyTorch files.  A project's backend-path cannot reach outside its folder, so that module is
loaded from its file here."""

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "qaft_zoo_build_backend", Path(__file__).resolve().parent.parent / "build_backend.py"
)
_zoo = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _zoo  # dataclasses look their module up there
_spec.loader.exec_module(_zoo)

UnsupportedOperation = _zoo.UnsupportedOperation
_backend = _zoo.Backend(_zoo.TRAIN)
get_requires_for_build_wheel = _backend.get_requires_for_build_wheel
get_requires_for_build_sdist = _backend.get_requires_for_build_sdist
prepare_metadata_for_build_wheel = _backend.prepare_metadata_for_build_wheel
build_wheel = _backend.build_wheel
build_sdist = _backend.build_sdist
