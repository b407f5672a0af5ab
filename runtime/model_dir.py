"""Model folders written by ``qaft export``: manifest, graphs and tables, verified on open.

Every file the runtime uses is read once, hashed, checked against the manifest and then
used from those same bytes (the graphs go to ONNX Runtime as bytes, never as a path), so
nothing can change between the check and the use, and no file the manifest does not list
is ever read.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import stat
import struct
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qaft.runtime.entropy.integer_hyper import IntegerHyperError, IntegerHyperSynthesis
from qaft.runtime.errors import FormatError, QaftError
from qaft.runtime.model import (
    MAX_CHANNELS,
    ChannelPrior,
    MetadataError,
    Model,
    ModelMeta,
    field_error,
    is_int,
    quantizers_to_dict,
)
from qaft.runtime.model_tables import ModelTables

MODEL_DIR_FORMAT = "qaft-model-dir"
#: 2: the hyper-synthesis is an integer network (``hyper_synthesis.npz``), no ONNX graph.
#: 3: ``tables.npz`` may carry a calibrated residual density (``y_calibration``), from which
#: the trellis quantizers' tables derive: a version-2 reader would derive other tables.
#: 4: the architecture may be a scale-only hyperprior (``scale_only``, ReLU layers) or a
#: factorized prior (``channel_medians``, ``y_channel_cdf``): a version-3 reader would
#: misread them.
MODEL_DIR_VERSION = 4
#: The version a calibrated model's folder needs.
CALIBRATED_VERSION = 3
#: Oldest version still read (2 and 3 differ only in what version 3 may add).
MODEL_DIR_OLDEST = 2
MANIFEST = "manifest.json"
TABLES = "tables.npz"
#: The prior's file: a hyperprior's integer hyper-synthesis, or a factorized prior's
#: channel medians (:class:`ChannelPrior`).
HYPER = "hyper_synthesis.npz"
#: The architecture name of a model without a hyperprior (CompressAI's ``FactorizedPrior``).
FACTORIZED = "factorized-prior"
#: Every architecture a folder may name, and the oldest folder version that can hold it.
ARCHITECTURE_VERSIONS = {"mean-scale-hyperprior": 2, "scale-hyperprior": 4, FACTORIZED: 4}
#: The float graphs, per precision; fp32 is always there, fp16 where export wrote it.
GRAPHS = {"analysis": "analysis.onnx", "synthesis": "synthesis.onnx"}
GRAPHS_FP16 = {"analysis": "analysis_fp16.onnx", "synthesis": "synthesis_fp16.onnx"}
PRECISIONS = ("fp32", "fp16")
#: Every file a manifest may list; anything else in the folder is never read.
KNOWN_FILES = (*GRAPHS.values(), *GRAPHS_FP16.values(), HYPER, TABLES)
#: The graphs a stage-2 folder may take from its parent model rather than carry copies of
#: them (stage 2 retrains only the decoder side): see :func:`_read_from_parent`.
FROM_PARENT = (GRAPHS["analysis"], GRAPHS_FP16["analysis"])

#: Size bounds, checked before anything is read or allocated.  The zoo's largest files are a
#: few MB; these leave room for models a hundred times larger, not for amplification attacks.
MAX_MANIFEST_BYTES = 1 << 20
#: ONNX's protobuf cannot exceed 2 GiB anyway.
MAX_GRAPH_BYTES = 1 << 31
MAX_NPZ_BYTES = 512 << 20
#: Largest uncompressed array in an ``.npz``, and largest central directory of one.
MAX_ARRAY_BYTES = 256 << 20
MAX_ZIP_DIRECTORY = 1 << 20
#: Integer hyper-synthesis layers at most (the zoo's have 3).
MAX_HYPER_LAYERS = 32
#: ONNX subgraphs nest (If, Loop): deeper than this is refused rather than recursed into.
MAX_GRAPH_DEPTH = 64

_HEX16 = re.compile(r"[0-9a-f]{16}")
_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class ModelDirError(QaftError):
    """A model folder that is missing, incomplete, corrupt or of an unknown format."""


class ParentMissingError(ModelDirError):
    """The analysis graph of a model that takes it from its parent, which is absent: the
    model decodes, but cannot encode."""


@dataclass
class ModelDir:
    """A verified model folder: its graphs (as verified bytes), tables and settings.

    Trust: every file is read once, checked against the SHA-256 hashes in
    ``manifest.json`` and used from those bytes; graphs must be self-contained (no ONNX
    external data); nothing the manifest does not list is read.  The manifest's
    ``fingerprint`` (the model identity every .qaft file carries, and by which
    ``qaft-run decompress`` picks a bundled model) digests the PyTorch weights together
    with the tables and the integer hyper-synthesis.  Where the runtime knows better, the
    claim is checked: a folder claiming the fingerprint of a bundled model (``index.json``)
    must hold exactly that model's files (by the hashes of the bytes read) and settings
    (architecture, lmbda, quantizers, synthesis_gain), or it is refused; and any folder's
    architecture, tables and hyper-synthesis must agree in shape.

    Residual limit: any other fingerprint is taken as claimed.  The weights are not all in
    the folder, so the fingerprint cannot be recomputed, and a digest of the folder's own
    files stated in its manifest would be rewritten by whoever forged the rest, so it
    would prove nothing.  A folder from an untrusted source can therefore carry any
    fingerprint with any graphs and tables: passed with ``--model``, it writes files that
    claim another model's identity, and decodes that model's files with its own networks
    (wrong pixels, no error).  Such a folder is exactly as trustworthy as its source, like
    the PyTorch model file it claims to be exported from.  (Exporting the weights too,
    listed in the manifest, would let the runtime recompute the fingerprint and so bind
    the tables and hyper-synthesis, which decide the decoded latents; the float graphs
    would still be bound only by their hashes.)
    """

    path: Path
    manifest: Manifest
    model: Model
    #: The verified bytes of ``manifest.json`` and of every file it lists.
    blobs: dict[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def precisions(self) -> list[str]:
        """The precisions this folder has graphs for."""
        have = ["fp32"]
        if all(f in self.manifest.files for f in GRAPHS_FP16.values()):
            have.append("fp16")
        return have

    def _graph_name(self, name: str, precision: str) -> str:
        if precision not in self.precisions:
            raise ModelDirError(
                f"{self.path}: no {precision} graphs in this model folder "
                f"(it has {', '.join(self.precisions)}; `qaft export --fp16` writes them)"
            )
        return (GRAPHS_FP16 if precision == "fp16" else GRAPHS)[name]

    def graph(self, name: str, precision: str = "fp32") -> Path:
        """Where a graph lies (for messages: the runtime loads :meth:`graph_bytes`)."""
        return self.path / self._graph_name(name, precision)

    def graph_bytes(self, name: str, precision: str = "fp32") -> bytes:
        """The verified, self-contained ONNX graph: what ONNX Runtime must be given, so
        that it never reads the file (or anything beside it) again."""
        fname = self._graph_name(name, precision)
        if fname not in self.blobs:  # only a graph taken from an absent parent
            raise ParentMissingError(
                f"{self.path}: encoding needs the {name} graph of its parent model "
                f"{self.manifest.analysis_from}, which is not installed (neither "
                "beside this folder nor bundled); decoding does not"
            )
        return self.blobs[fname]

    def files(self) -> dict[str, bytes]:
        """``manifest.json`` and the files it lists, as verified: what a copy of this model
        (a cluster worker's) is built from with :func:`model_dir_from_files`."""
        return dict(self.blobs)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_once(path: Path, limit: int) -> bytes:
    """The whole of a regular file, at most ``limit`` bytes, through one descriptor."""
    try:
        # O_NONBLOCK: a FIFO planted under a listed name must not block the open
        # O_NOFOLLOW: a model's files are its own, not links to files elsewhere
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ModelDirError(f"{path}: missing from the model folder") from None
    except OSError as exc:
        if path.is_symlink():
            raise ModelDirError(f"{path}: a symlink, not a file of the model folder") from None
        raise ModelDirError(f"{path}: unreadable ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ModelDirError(f"{path}: missing from the model folder (not a regular file)")
        if st.st_size > limit:
            raise ModelDirError(f"{path}: {st.st_size} bytes, above the limit of {limit}")
        try:
            # st_size + 1, not limit: read() allocates all it is asked for up front
            data = f.read(st.st_size + 1)
        except OSError as exc:
            raise ModelDirError(f"{path}: unreadable ({exc.strerror or exc})") from None
    if len(data) != st.st_size:
        raise ModelDirError(f"{path}: changed while it was read")
    return data


# --- the manifest's schema ----------------------------------------------------------------


@dataclass
class Manifest:
    """``manifest.json``: what a model folder holds and claims (the format, the model's
    identity and metadata, the export's checks, the SHA-256 of every file)."""

    fingerprint: str  # 16 lowercase hex digits
    architecture: str
    #: The model's metadata; ``N`` and ``M`` are the architecture's.
    meta: ModelMeta
    files: dict[str, str]
    check: dict[str, Any] = field(default_factory=dict)
    version: int = MODEL_DIR_VERSION
    #: A stage-2 model of the zoo: the folder name of the stage-1 model whose analysis
    #: graphs it shares (stage 2 leaves them as they were), or None for a self-contained one.
    analysis_from: str | None = None

    @classmethod
    def from_dict(cls, m: Any, where: object = MANIFEST) -> Manifest:
        """Parses a manifest, refusing with a one-line :class:`ModelDirError` naming the
        field anything the rest of the runtime could trip on."""

        def bad(name: str, expected: str, value: Any = None, missing: bool = False):
            return ModelDirError(field_error(where, name, expected, value, missing))

        def need(obj: dict, key: str, name: str, expected: str) -> Any:
            if key not in obj:
                raise bad(name, expected, missing=True)
            return obj[key]

        if not isinstance(m, dict) or m.get("format") != MODEL_DIR_FORMAT:
            raise ModelDirError(f"{where}: not a qaft model manifest")
        version = need(m, "version", "version", "an integer")
        if not is_int(version):
            raise bad("version", "an integer", version)
        if version > MODEL_DIR_VERSION:
            raise ModelDirError(
                f"{where}: model format version {version} is newer than "
                f"this qaft ({MODEL_DIR_VERSION}); upgrade qaft"
            )
        if version < MODEL_DIR_OLDEST:
            raise ModelDirError(
                f"{where}: model format version {version} predates exact entropy parameters; "
                "export the model again with `qaft export`"
            )
        fp = need(m, "fingerprint", "fingerprint", "16 lowercase hex digits")
        if not (isinstance(fp, str) and _HEX16.fullmatch(fp)):
            raise bad("fingerprint", "16 lowercase hex digits", fp)

        arch = need(m, "architecture", "architecture", "an object with name, N and M")
        if not isinstance(arch, dict):
            raise bad("architecture", "an object with name, N and M", arch)
        known = ", ".join(ARCHITECTURE_VERSIONS)
        name = need(arch, "name", "architecture.name", f"one of {known}")
        if name not in ARCHITECTURE_VERSIONS:
            raise bad("architecture.name", f"one of {known}", name)
        if version < ARCHITECTURE_VERSIONS[name]:
            raise bad("version", f"{ARCHITECTURE_VERSIONS[name]} or above for a {name}", version)
        for key in ("N", "M"):
            v = need(arch, key, f"architecture.{key}", f"an integer 1 .. {MAX_CHANNELS}")
            if not (is_int(v) and 1 <= v <= MAX_CHANNELS):
                raise bad(f"architecture.{key}", f"an integer 1 .. {MAX_CHANNELS}", v)

        need(m, "lmbda", "lmbda", "a number > 0 or null")
        fields = {k: m[k] for k in _META_FIELDS if k in m}
        try:
            meta = ModelMeta.from_dict({**fields, "N": arch["N"], "M": arch["M"]}, where)
        except MetadataError as exc:
            raise ModelDirError(str(exc)) from None

        check = m.get("check", {})
        if not isinstance(check, dict):
            raise bad("check", "an object", check)

        files = need(m, "files", "files", "an object of file name -> SHA-256")
        if not isinstance(files, dict):
            raise bad("files", "an object of file name -> SHA-256", files)
        for fname, digest in files.items():
            if fname not in KNOWN_FILES:
                raise bad("files", f"only {', '.join(KNOWN_FILES)}", fname)
            if not (isinstance(digest, str) and _HEX64.fullmatch(digest)):
                raise bad(f"files.{fname}", "a SHA-256 (64 lowercase hex digits)", digest)
        for fname in (*GRAPHS.values(), HYPER, TABLES):
            if fname not in files:
                raise bad(f"files.{fname}", "a SHA-256 (64 lowercase hex digits)", missing=True)
        if 0 < sum(f in files for f in GRAPHS_FP16.values()) < len(GRAPHS_FP16):
            raise bad("files", "both fp16 graphs or neither", sorted(files))
        parent = m.get("analysis_from")
        if parent is not None and not (isinstance(parent, str) and _FOLDER_NAME.fullmatch(parent)):
            raise bad("analysis_from", "a model folder's name", parent)
        return cls(fp, name, meta, dict(files), check, version, parent)

    def to_dict(self) -> dict[str, Any]:
        """The manifest as ``manifest.json`` holds it."""
        meta = self.meta
        return {
            "format": MODEL_DIR_FORMAT,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "architecture": {"name": self.architecture, "N": meta.N, "M": meta.M},
            "lmbda": meta.lmbda,
            "stage": meta.stage,
            "finetuned_for": meta.finetuned_for,
            **({"analysis_from": self.analysis_from} if self.analysis_from else {}),
            "quantizers": quantizers_to_dict(meta.quantizers),
            "synthesis_gain": meta.synthesis_gain,
            "check": self.check,
            "files": self.files,
        }

    def to_json(self) -> str:
        """The text of ``manifest.json``."""
        return json.dumps(self.to_dict(), indent=2) + "\n"


#: The model metadata a manifest carries (besides the architecture's N and M).
_META_FIELDS = ("lmbda", "stage", "finetuned_for", "quantizers", "synthesis_gain")


# --- graphs: ONNX protobuf, scanned for external data ---------------------------------------

# Which length-delimited fields of which ONNX messages hold messages that can (transitively)
# hold tensors; field numbers from onnx.proto.
_MODEL = {7: "graph", 20: "training", 25: "function"}
_SUBMESSAGES = {
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node", 11: "attribute"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "model": _MODEL,
}
_TENSOR_EXTERNAL_DATA = 13
_TENSOR_DATA_LOCATION = 14


def _varint(buf: memoryview, i: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= end or shift > 63:
            raise FormatError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(buf: memoryview, start: int, end: int):
    """(field number, wire type, value or (start, end) of a length-delimited payload)."""
    i = start
    while i < end:
        key, i = _varint(buf, i, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i, end)
            yield number, wire, value
        elif wire == 2:
            n, i = _varint(buf, i, end)
            if i + n > end:
                raise FormatError("truncated field")
            yield number, wire, (i, i + n)
            i += n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
            if i > end:
                raise FormatError("truncated field")
        else:  # groups (3, 4) are not used by ONNX
            raise FormatError(f"wire type {wire}")


def external_data_in(graph: bytes) -> bool:
    """Whether a serialized ONNX model holds any tensor stored outside it (``data_location``
    EXTERNAL or ``external_data`` entries), in its graph, subgraphs, node attributes,
    functions or training graphs.  Raises ValueError on a malformed protobuf."""
    buf = memoryview(graph)
    stack = [("model", 0, len(buf), 0)]
    while stack:
        kind, start, end, depth = stack.pop()
        if depth > MAX_GRAPH_DEPTH:
            raise FormatError("graphs nested too deep")
        for number, wire, value in _fields(buf, start, end):
            if kind == "tensor":
                if number == _TENSOR_EXTERNAL_DATA or (
                    number == _TENSOR_DATA_LOCATION and wire == 0 and value != 0
                ):
                    return True
                continue
            sub = _SUBMESSAGES[kind].get(number)
            if sub is not None and wire == 2:
                stack.append((sub, value[0], value[1], depth + 1))
    return False


def _check_graph(data: bytes, where: Path) -> None:
    try:
        external = external_data_in(data)
    except ValueError as exc:
        raise ModelDirError(f"{where}: not a valid ONNX graph ({exc})") from None
    if external:
        raise ModelDirError(
            f"{where}: refers to external data files, which the manifest's hashes do not "
            "cover; a model folder's graphs must be self-contained"
        )


# --- npz: only the members needed, bounded before they are read -----------------------------


def _zip_directory_ok(data: bytes) -> None:
    """Bounds the central directory zipfile would parse eagerly (millions of tiny entries
    from a small file would cost gigabytes of Python objects)."""
    pos = len(data) - 22
    if not (pos >= 0 and data[pos : pos + 4] == b"PK\x05\x06"):
        pos = data.rfind(b"PK\x05\x06", max(0, len(data) - 22 - 0xFFFF))
    if pos < 0 or pos + 22 > len(data):
        raise FormatError("not a zip archive")
    if pos >= 20 and data[pos - 20 : pos - 16] == b"PK\x06\x07":
        raise FormatError("zip64 archive directory")
    size = struct.unpack_from("<I", data, pos + 12)[0]
    if size > MAX_ZIP_DIRECTORY:
        raise FormatError(f"zip directory of {size} bytes")


class _Npz:
    """Reads chosen arrays of an in-memory ``.npz`` (never pickles), each checked, from its
    header, for dtype kind, rank and size before its data is read."""

    def __init__(self, data: bytes):
        _zip_directory_ok(data)
        self.zip = zipfile.ZipFile(io.BytesIO(data))
        self.names = {n[:-4] for n in self.zip.namelist() if n.endswith(".npy")}
        self.total = 0

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def array(self, name: str, kinds: str, ndim: int) -> np.ndarray:
        """Member ``name``: dtype kind in ``kinds`` ("f", "iu"), ``ndim`` dimensions."""
        if name not in self.names:
            raise KeyError(name)
        info = self.zip.getinfo(name + ".npy")
        if info.file_size > MAX_ARRAY_BYTES + 65536:
            raise FormatError(f"{name}: {info.file_size} bytes uncompressed")
        with self.zip.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise FormatError(f"{name}: npy format {version}")
            if dtype.hasobject or dtype.kind not in kinds or dtype.itemsize > 8:
                raise FormatError(f"{name}: unexpected dtype {dtype}")
            if len(shape) != ndim:
                raise FormatError(f"{name}: {len(shape)} dimensions, expected {ndim}")
            nbytes = math.prod(shape) * dtype.itemsize
            self.total += nbytes
            if nbytes > MAX_ARRAY_BYTES or self.total > MAX_ARRAY_BYTES:
                raise FormatError(f"{name}: {nbytes} bytes of data, above the limit")
            if info.file_size != f.tell() + nbytes:
                raise FormatError(f"{name}: member size does not match its header")
            buf = bytearray(nbytes)
            if f.readinto(buf) != nbytes:
                raise FormatError(f"{name}: truncated")
        arr = np.frombuffer(buf, dtype=dtype)
        return arr.reshape(shape, order="F" if fortran else "C")


def _load_tables(data: bytes) -> ModelTables:
    npz = _Npz(data)
    arrays = {
        name: npz.array(name, kinds, ndim)
        for name, kinds, ndim in (
            ("z_pmfs", "f", 2),
            ("z_lengths", "iu", 1),
            ("z_offsets", "iu", 1),
            ("z_medians", "f", 1),
            ("y_pmfs", "f", 2),
            ("y_lengths", "iu", 1),
            ("y_offsets", "iu", 1),
            ("scale_levels", "f", 1),
        )
    }
    if "y_calibration" in npz:
        arrays["y_calibration"] = npz.array("y_calibration", "f", 2)
    if "y_channel_cdf" in npz:
        arrays["y_channel_cdf"] = npz.array("y_channel_cdf", "f", 2)
        arrays["y_channel_cdf_grid"] = npz.array("y_channel_cdf_grid", "f", 1)
    return ModelTables.from_arrays(arrays)


def _load_hyper(data: bytes) -> IntegerHyperSynthesis | ChannelPrior:
    npz = _Npz(data)
    if "channel_medians" in npz:  # a model without a hyperprior
        return ChannelPrior.from_arrays({"channel_medians": npz.array("channel_medians", "f", 1)})
    arrays = {"act_bits": npz.array("act_bits", "iu", 0)}
    if "scale_only" in npz:
        arrays["scale_only"] = npz.array("scale_only", "iu", 0)
    i = 0
    while f"{i}.weight" in npz:
        if i >= MAX_HYPER_LAYERS:
            raise IntegerHyperError(f"more than {MAX_HYPER_LAYERS} layers")
        arrays[f"{i}.weight"] = npz.array(f"{i}.weight", "iu", 4)
        for part in ("shift", "bias", "spec"):
            arrays[f"{i}.{part}"] = npz.array(f"{i}.{part}", "iu", 1)
        if arrays[f"{i}.spec"].shape != (4,):
            raise IntegerHyperError(f"layer {i}: spec of shape {arrays[f'{i}.spec'].shape}")
        i += 1
    return IntegerHyperSynthesis.from_arrays(arrays)


# --- identity --------------------------------------------------------------------------------

#: The settings a folder claiming a bundled model's fingerprint must share with it.
_IDENTITY_SETTINGS = ("architecture", "lmbda", "quantizers", "synthesis_gain")


def _check_identity(manifest: Manifest, hashes: dict[str, str], where: Path) -> None:
    """A folder claiming a bundled model's fingerprint must be that model: the same file
    hashes (of the bytes read, not the ones its manifest states) and the same settings."""
    from qaft.runtime.zoo import bundled_manifest

    found = bundled_manifest(manifest.fingerprint)
    if found is None:
        return
    name, ref = found
    ref_files = ref.get("files", {})
    claim = f"{where}: claims the fingerprint {manifest.fingerprint} of the bundled model {name}"
    for fname, digest in hashes.items():
        if ref_files.get(fname) != digest:
            raise ModelDirError(
                f"{claim}, but its {fname} is not that model's (a model folder cannot take "
                "another model's identity)"
            )
    ours = manifest.to_dict()
    for key in _IDENTITY_SETTINGS:
        if ours[key] != ref.get(key):
            raise ModelDirError(f"{claim}, but its {key} differs from that model's")


def _check_shapes(
    manifest: Manifest,
    tables: ModelTables,
    hyper: IntegerHyperSynthesis | ChannelPrior,
    where: Path,
) -> None:
    """The architecture, the tables and the hyper-synthesis must describe one model: a folder
    put together from several is refused here rather than failing mid-image."""
    n, m = manifest.meta.N, manifest.meta.M
    factorized = isinstance(hyper, ChannelPrior)
    n_z = 0 if factorized else n  # a factorized prior has no hyper-latent
    problems = []
    kind = (
        FACTORIZED
        if factorized
        else ("mean-scale-hyperprior" if hyper.with_means else "scale-hyperprior")
    )
    if manifest.architecture != kind or factorized != tables.channel_tables:
        problems.append(f"a {manifest.architecture} with the tables or prior of another kind")
    if len(tables.z_medians) != n_z or tables.z_tables.num_tables != n_z:
        problems.append(f"z tables for {len(tables.z_medians)} channels, {n_z} expected")
    if tables.y_tables.num_tables != len(tables.scale_table):
        problems.append(
            f"{tables.y_tables.num_tables} y tables for {len(tables.scale_table)} scale levels"
        )
    if factorized:
        if hyper.y_channels != m or tables.y_tables.num_tables != m:
            problems.append(
                f"a prior of {hyper.y_channels} channels, {tables.y_tables.num_tables} "
                f"tables, M = {m}"
            )
    else:
        first, last = hyper.layers[0], hyper.layers[-1]
        cin = first.weight.shape[0] if first.kind == "deconv" else first.weight.shape[1]
        if cin != n or hyper.y_channels != m:
            problems.append(
                f"hyper-synthesis {cin} -> {last.out_channels} channels, N = {n}, M = {m}"
            )
    if problems:
        raise ModelDirError(f"{where}: parts of different models ({'; '.join(problems)})")


# --- opening ---------------------------------------------------------------------------------


def _read_from_parent(
    path: Path, parent: str, name: str, limit: int, read: Callable[[str, int], bytes]
) -> tuple[Path, bytes] | None:
    """(where, bytes) of a graph of :data:`FROM_PARENT` that the folder takes from its
    parent model (``parent``, the folder name in the manifest's ``analysis_from``): a copy of
    its own (or among the files of :func:`model_dir_from_files`) first, then the parent
    folder beside it (the same zoo), then the bundled model of that name.  The caller
    checks the bytes against the hash this manifest lists, as for its own files.  None
    where the parent is absent: the model then decodes but cannot encode."""
    try:
        return path / name, read(name, limit)
    except ModelDirError:
        pass  # no copy of its own: the usual case
    folders = [path.parent / parent]
    from qaft.runtime.zoo import model_path

    try:
        folders.append(model_path(parent))
    except QaftError:
        pass  # not a bundled model, or not installed
    for folder in folders:
        if (folder / MANIFEST).is_file():
            return folder / name, _read_once(folder / name, limit)
    return None


def _open(
    path: Path, manifest_bytes: bytes, read: Callable[[str, int], bytes], verify: bool
) -> ModelDir:
    mpath = path / MANIFEST
    manifest = _parse_manifest(manifest_bytes, mpath)
    files = manifest.files
    blobs = {MANIFEST: manifest_bytes}
    hashes = {}
    for name in files:  # only listed files, each read once
        limit = MAX_GRAPH_BYTES if name.endswith(".onnx") else MAX_NPZ_BYTES
        if name in FROM_PARENT and manifest.analysis_from:
            found = _read_from_parent(path, manifest.analysis_from, name, limit, read)
            if found is None:
                continue  # graph_bytes says what is missing, when encoding asks for it
            where, data = found
        else:
            where, data = path / name, read(name, limit)
        hashes[name] = _sha256(data)
        if verify and hashes[name] != files[name]:
            why = "corrupt or replaced"
            if where.parent != path:  # a parent's graph: the folder of that name may be another
                why = f"listed by {mpath}: {where.parent} is another model, or corrupt"
            raise ModelDirError(f"{where}: does not match the manifest's hash ({why})")
        if name.endswith(".onnx"):
            _check_graph(data, where)
        blobs[name] = data
    _check_identity(manifest, hashes, mpath)
    unreadable = (ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError, FormatError)
    try:
        tables = _load_tables(blobs[TABLES])
    except unreadable as exc:
        raise ModelDirError(f"{path / TABLES}: unreadable tables ({exc})") from None
    try:
        hyper = _load_hyper(blobs[HYPER])
    except unreadable as exc:
        raise ModelDirError(f"{path / HYPER}: unusable prior ({exc})") from None
    _check_shapes(manifest, tables, hyper, path)
    model = Model(tables, hyper, bytes.fromhex(manifest.fingerprint), manifest.meta)
    return ModelDir(path, manifest, model, blobs)


def _parse_manifest(data: bytes, mpath: Path) -> Manifest:
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ModelDirError(f"{mpath}: unreadable manifest ({str(exc)[:100]})") from None
    return Manifest.from_dict(manifest, mpath)


def read_manifest(path: str | Path) -> Manifest:
    """The validated manifest of the model folder at ``path`` (nothing else is read)."""
    mpath = Path(path) / MANIFEST
    return _parse_manifest(_read_once(mpath, MAX_MANIFEST_BYTES), mpath)


def open_model_dir(path: str | Path, verify: bool = True) -> ModelDir:
    """Reads and checks a model folder; any problem is a one-line :class:`ModelDirError`.

    Only ``manifest.json`` and the files it lists are read, each once; ``verify=False``
    skips comparing them with the manifest's hashes (every other check stays).
    """
    path = Path(path)
    mpath = path / MANIFEST
    if path.is_file() and path.suffix == ".pt":
        raise ModelDirError(
            f"{path}: a PyTorch model file; `qaft export --ckpt {path} --out DIR` makes the "
            "model folder that qaft-run runs"
        )
    if not path.is_dir():
        raise ModelDirError(f"{path}: no such model folder")
    try:
        manifest_bytes = _read_once(mpath, MAX_MANIFEST_BYTES)
    except ModelDirError as exc:
        if "missing from the model folder" in str(exc):
            raise ModelDirError(
                f"{mpath}: missing (not a model folder written by `qaft export`)"
            ) from None
        raise
    return _open(path, manifest_bytes, lambda name, limit: _read_once(path / name, limit), verify)


def model_dir_from_files(files: Mapping[str, bytes], label: str | Path) -> ModelDir:
    """A model from the bytes of its manifest and files (:meth:`ModelDir.files`), checked
    exactly as :func:`open_model_dir` checks a folder; ``label`` names it in messages."""
    path = Path(label)

    def read(name: str, limit: int) -> bytes:
        data = files.get(name)
        if not isinstance(data, bytes):
            raise ModelDirError(f"{path / name}: missing from the model's files")
        if len(data) > limit:
            raise ModelDirError(f"{path / name}: {len(data)} bytes, above the limit of {limit}")
        return data

    manifest_bytes = files.get(MANIFEST)
    if not isinstance(manifest_bytes, bytes) or len(manifest_bytes) > MAX_MANIFEST_BYTES:
        raise ModelDirError(f"{path / MANIFEST}: missing or too large")
    return _open(path, manifest_bytes, read, verify=True)
