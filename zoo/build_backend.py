"""PEP 517 build backend of the zoo's distributions: wheels of the model files where the
repository keeps them (``../runtime/zoo``, ``../training/zoo``), read at build time.

No build requirements (only the standard library), so ``pip install ./zoo`` works offline;
the wheel is written by hand (PEP 427: the files, then ``*.dist-info`` with ``METADATA``,
``WHEEL`` and ``RECORD``).  The wheels are reproducible: members sorted, one timestamp.
There is no sdist: the files live outside this folder, in the repository around it.
"""

import base64
import hashlib
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Every member's timestamp (zip's earliest): the same files give the same wheel.
_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
_TAG = "py3-none-any"


class UnsupportedOperation(Exception):
    """PEP 517's answer of a backend that cannot build what is asked (an sdist here)."""


@dataclass(frozen=True)
class Payload:
    """One distribution: its name, the package it installs and the files it takes from
    the repository (``patterns`` under ``source``, less the folders ``leave_out``)."""

    name: str
    package: str
    summary: str
    source: str
    patterns: tuple[str, ...]
    leave_out: tuple[str, ...] = ()

    def files(self) -> list[tuple[str, Path]]:
        """(name in the wheel, file) of every file the distribution carries, sorted."""
        root = REPO / self.source
        if not root.is_dir():
            raise FileNotFoundError(
                f"{root}: missing; {self.name} is built from a qaft checkout (pip install "
                "./zoo from its root, with a pip that builds in place)"
            )
        found = {p for pattern in self.patterns for p in root.glob(pattern) if p.is_file()}
        return sorted(
            (f"{self.package}/{p.relative_to(root).as_posix()}", p)
            for p in found
            if p.relative_to(root).parts[0] not in self.leave_out
        )


#: The exported models but the default one, which the base distribution carries
#: (pyproject.toml's package data and DEFAULT_MODEL in runtime/zoo say which).
ZOO = Payload(
    name="qaft-zoo",
    package="qaft_zoo",
    summary="The exported models of qaft's zoo that the qaft distribution leaves out",
    source="runtime/zoo",
    patterns=("*/manifest.json", "*/*.onnx", "*/*.npz"),
    leave_out=("q3",),
)
#: The PyTorch files of every bundled model (stage-2 files are deltas on their stage-1
#: sibling, so all travel together).
TRAIN = Payload(
    name="qaft-zoo-train",
    package="qaft_zoo_train",
    summary="The PyTorch files of qaft's zoo, for training, finetuning and evaluation",
    source="training/zoo",
    patterns=("*/*.pt",),
)


def _project(field: str) -> str:
    """A string field of the qaft project's pyproject.toml (the zoo goes with its version)."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    match = re.search(rf'^{field}\s*=\s*"([^"]+)"', project, re.MULTILINE)
    if match is None:
        raise ValueError(f"{REPO / 'pyproject.toml'}: no {field} in [project]")
    return match.group(1)


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


class Backend:
    """The PEP 517 hooks for one payload."""

    def __init__(self, payload: Payload):
        self.payload = payload

    def _dist_info(self) -> tuple[str, dict[str, bytes]]:
        p = self.payload
        version = _project("version")
        metadata = (
            "Metadata-Version: 2.1\n"
            f"Name: {p.name}\n"
            f"Version: {version}\n"
            f"Summary: {p.summary}\n"
            f"Requires-Python: {_project('requires-python')}\n"
            f"Requires-Dist: qaft=={version}\n"
        )
        wheel = (
            "Wheel-Version: 1.0\nGenerator: qaft zoo/build_backend.py\n"
            f"Root-Is-Purelib: true\nTag: {_TAG}\n"
        )
        name = f"{p.package}-{version}.dist-info"
        return name, {"METADATA": metadata.encode(), "WHEEL": wheel.encode()}

    def get_requires_for_build_wheel(self, config_settings=None) -> list[str]:
        """Nothing beyond the standard library."""
        return []

    def get_requires_for_build_sdist(self, config_settings=None) -> list[str]:
        """Nothing (and no sdist either)."""
        return []

    def prepare_metadata_for_build_wheel(self, metadata_directory, config_settings=None) -> str:
        """Writes the ``.dist-info`` folder the wheel will hold; returns its name."""
        name, files = self._dist_info()
        folder = Path(metadata_directory) / name
        folder.mkdir(parents=True, exist_ok=True)
        for fname, data in files.items():
            (folder / fname).write_bytes(data)
        return name

    def build_wheel(self, wheel_directory, config_settings=None, metadata_directory=None) -> str:
        """Writes the wheel into ``wheel_directory``; returns its file name."""
        p = self.payload
        info, meta = self._dist_info()
        version = info[len(p.package) + 1 : -len(".dist-info")]
        members = [(f"{p.package}/__init__.py", self._init())]
        members += [(name, path) for name, path in p.files()]
        members += [(f"{info}/{fname}", data) for fname, data in meta.items()]
        wheel_name = f"{p.package}-{version}-{_TAG}.whl"
        target = Path(wheel_directory) / wheel_name
        record = []
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as whl:
            for name, content in members:
                data = content.read_bytes() if isinstance(content, Path) else content
                whl.writestr(self._member(name), data)
                record.append(f"{name},{_digest(data)},{len(data)}")
            record.append(f"{info}/RECORD,,")
            whl.writestr(self._member(f"{info}/RECORD"), "\n".join(record) + "\n")
        return wheel_name

    def build_sdist(self, sdist_directory, config_settings=None) -> str:
        """Refused: the files are the repository's, outside this project folder."""
        raise UnsupportedOperation(
            f"{self.payload.name} has no sdist: its files are the qaft repository's, "
            "outside this folder; build the wheel from a checkout"
        )

    def _init(self) -> bytes:
        p = self.payload
        return (
            f'"""{p.summary} (the distribution {p.name}): qaft finds them by this '
            'package\'s name."""\n'
        ).encode()

    @staticmethod
    def _member(name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, _TIMESTAMP)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        return info


_backend = Backend(ZOO)
get_requires_for_build_wheel = _backend.get_requires_for_build_wheel
get_requires_for_build_sdist = _backend.get_requires_for_build_sdist
prepare_metadata_for_build_wheel = _backend.prepare_metadata_for_build_wheel
build_wheel = _backend.build_wheel
build_sdist = _backend.build_sdist
