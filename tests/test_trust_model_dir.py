"""Hostile model folders: what a folder may make the runtime read, allocate, believe or run.

Each test builds its hostile folder by copying a bundled model into tmp_path and editing
the copy (no torch, no binary fixtures)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from qaft.runtime.backends.onnx import check_threads, onnx_codec
from qaft.runtime.errors import QaftError
from qaft.runtime.model_dir import (
    HYPER,
    MANIFEST,
    TABLES,
    ModelDirError,
    model_dir_from_files,
    open_model_dir,
)
from qaft.runtime.zoo import model_path

Q1, Q3 = model_path("q1"), model_path("q3")


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def _manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def _write_manifest(folder: Path, m: dict) -> None:
    (folder / MANIFEST).write_text(json.dumps(m))


def _rehash(folder: Path, *names: str) -> None:
    """What a forger does after changing files: state their new hashes in the manifest."""
    m = _manifest(folder)
    for name in names:
        m["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    _write_manifest(folder, m)


def _analysis(codec, seed: int = 0) -> list[np.ndarray]:
    x = np.random.default_rng(seed).uniform(0, 255, (1, 3, 64, 64)).astype(np.float32)
    return codec.networks.analysis(x)


# --- protobuf, by hand (the runtime has no `onnx` package) ---------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    from qaft.runtime.model_dir import _varint

    return _varint(memoryview(buf), i, len(buf))


def _fields(buf: bytes) -> list[tuple[int, int, bytes | int]]:
    out, i = [], 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _read_varint(buf, i)
        elif wire == 2:
            n, i = _read_varint(buf, i)
            v, i = buf[i : i + n], i + n
        else:
            size = 8 if wire == 1 else 4
            v, i = buf[i : i + size], i + size
        out.append((num, wire, v))
    return out


def _encode(fields: list[tuple[int, int, bytes | int]]) -> bytes:
    out = bytearray()
    for num, wire, v in fields:
        out += _varint(num << 3 | wire)
        if wire == 0:
            out += _varint(v)
        elif wire == 2:
            out += _varint(len(v)) + v
        else:
            out += v
    return bytes(out)


def _externalize_first_initializer(graph_file: Path, data_name: str) -> None:
    """Moves the first initializer's raw_data into ``data_name`` beside the graph, as
    ONNX's external data does (data_location EXTERNAL, location/offset/length)."""
    model = _fields(graph_file.read_bytes())
    gi = next(i for i, f in enumerate(model) if f[0] == 7)
    graph = _fields(model[gi][2])
    ti = next(i for i, f in enumerate(graph) if f[0] == 5)
    tensor = _fields(graph[ti][2])
    raw = next(f[2] for f in tensor if f[0] == 9)
    (graph_file.parent / data_name).write_bytes(raw)
    entries = [("location", data_name), ("offset", "0"), ("length", str(len(raw)))]
    tensor = [f for f in tensor if f[0] != 9]
    for k, v in entries:
        tensor.append((13, 2, _encode([(1, 2, k.encode()), (2, 2, v.encode())])))
    tensor.append((14, 0, 1))
    graph[ti] = (5, 2, _encode(tensor))
    model[gi] = (7, 2, _encode(graph))
    graph_file.write_bytes(_encode(model))


# --- 1. graphs: self-contained, used as verified -------------------------------------------


def test_a_graph_with_external_data_is_refused(tmp_path):
    bad = _copy(Q1, tmp_path / "ext")
    _externalize_first_initializer(bad / "analysis.onnx", "weights.bin")
    _rehash(bad, "analysis.onnx")
    with pytest.raises(ModelDirError, match="external data") as err:
        open_model_dir(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(ModelDirError, match="external data"):
        open_model_dir(bad, verify=False)


def test_the_graphs_run_are_the_bytes_verified(tmp_path):
    """A graph swapped on disk after the folder was opened is never run."""
    folder = _copy(Q1, tmp_path / "m")
    md = open_model_dir(folder)
    for name in ("analysis.onnx", "synthesis.onnx"):
        shutil.copy(Q3 / name, folder / name)
    swapped = onnx_codec(md, "cpu", 1)
    pristine = onnx_codec(open_model_dir(Q1), "cpu", 1)
    for a, b in zip(_analysis(swapped), _analysis(pristine), strict=True):
        np.testing.assert_array_equal(a, b)


def test_unlisted_files_are_never_read_or_passed_on(tmp_path):
    folder = _copy(Q1, tmp_path / "m")
    m = _manifest(folder)
    for name in ("analysis_fp16.onnx", "synthesis_fp16.onnx"):
        del m["files"][name]
        (folder / name).write_bytes(b"not a graph")
    _write_manifest(folder, m)
    (folder / "extra.bin").write_bytes(b"x" * 100)
    md = open_model_dir(folder)
    assert md.precisions == ["fp32"]
    assert set(md.files()) == {MANIFEST, "analysis.onnx", "synthesis.onnx", HYPER, TABLES}


# --- 2. identity -----------------------------------------------------------------------------


def test_a_folder_cannot_claim_a_bundled_models_fingerprint(tmp_path):
    forged = _copy(Q1, tmp_path / "forged")
    m = _manifest(forged)
    m["fingerprint"] = _manifest(Q3)["fingerprint"]
    _write_manifest(forged, m)
    with pytest.raises(ModelDirError, match="bundled model q3"):
        open_model_dir(forged)


def test_a_bundled_models_identity_with_one_file_swapped_is_refused(tmp_path):
    forged = _copy(Q3, tmp_path / "forged")
    shutil.copy(Q1 / "synthesis.onnx", forged / "synthesis.onnx")
    _rehash(forged, "synthesis.onnx")
    with pytest.raises(ModelDirError, match="synthesis.onnx is not that model's"):
        open_model_dir(forged)


def test_a_bundled_models_identity_with_other_settings_is_refused(tmp_path):
    forged = _copy(Q3, tmp_path / "forged")
    m = _manifest(forged)
    m["quantizers"]["tcq"]["step"] = 0.25
    _write_manifest(forged, m)
    with pytest.raises(ModelDirError, match="quantizers differs"):
        open_model_dir(forged)


def test_true_copies_of_bundled_models_open(tmp_path):
    copy = _copy(Q3, tmp_path / "copy")
    assert open_model_dir(copy).model.fingerprint.hex() == _manifest(Q3)["fingerprint"]
    m = _manifest(copy)  # without the optional fp16 graphs: still the same model
    for name in ("analysis_fp16.onnx", "synthesis_fp16.onnx"):
        del m["files"][name]
    _write_manifest(copy, m)
    assert open_model_dir(copy).precisions == ["fp32"]


def test_a_stage2_folder_takes_its_parents_analysis_graphs_by_their_hashes(tmp_path):
    """The zoo's stage-2 folders carry no analysis graphs: their manifest names the parent
    (beside them, else bundled) and lists the hashes its graphs must have."""
    assert not (model_path("q1-sq") / "analysis.onnx").exists()
    zoo = tmp_path / "zoo"
    parent, child = _copy(Q1, zoo / "q1"), _copy(model_path("q1-sq"), zoo / "q1-sq")
    assert _manifest(child)["analysis_from"] == "q1"
    opened = open_model_dir(child)
    assert opened.graph_bytes("analysis") == (Q1 / "analysis.onnx").read_bytes()
    shutil.copy(Q3 / "analysis.onnx", parent / "analysis.onnx")
    _rehash(parent, "analysis.onnx")  # the parent's own manifest cannot vouch for it
    with pytest.raises(ModelDirError, match="does not match the manifest's hash") as err:
        open_model_dir(child)
    assert str(parent / "analysis.onnx") in str(err.value)
    assert f"listed by {child / MANIFEST}: {parent} is another model, or corrupt" in str(err.value)


def test_without_its_parent_a_stage2_model_decodes_but_cannot_encode(tmp_path, png):
    from qaft.runtime import codec as C
    from qaft.runtime.image import load_rgb

    alone = _copy(model_path("q1-sq"), tmp_path / "alone")
    _write_manifest(alone, _set("analysis_from", "q9")(_manifest(alone)))
    image = load_rgb(png)
    data = C.encode(onnx_codec(open_model_dir(model_path("q1-sq"))), image, "sq").data
    codec = onnx_codec(open_model_dir(alone))
    np.testing.assert_array_equal(
        C.decode(codec, data).image,
        C.decode(onnx_codec(open_model_dir(model_path("q1-sq"))), data).image,
    )
    with pytest.raises(QaftError, match="parent model q9, which is not installed"):
        C.encode(codec, image, "sq")
    assert "parent model q9" in _cli_error(alone, png, tmp_path / "o")


def test_parts_of_different_architectures_are_refused(tmp_path):
    bad = _copy(Q1, tmp_path / "bad")
    m = _manifest(bad)
    m["fingerprint"] = "00" * 8  # not bundled: only the folder's own consistency is checked
    m["architecture"]["N"] = 32
    _write_manifest(bad, m)
    with pytest.raises(ModelDirError, match="parts of different models"):
        open_model_dir(bad)


@pytest.mark.parametrize("forge", ["prior", "name", "scale-only"])
def test_a_hyperprior_folder_cannot_pass_for_a_factorized_one(tmp_path, forge):
    """A factorized prior's medians in a hyperprior's folder, or its architecture's name on
    a hyperprior: either way the parts disagree (the runtime would code y with z's tables)."""
    bad = _copy(Q1, tmp_path / "bad")
    m = _manifest(bad)
    m["fingerprint"] = "00" * 8
    if forge == "prior":
        np.savez(bad / HYPER, channel_medians=np.zeros(m["architecture"]["M"], np.float32))
        m["files"][HYPER] = hashlib.sha256((bad / HYPER).read_bytes()).hexdigest()
    elif forge == "name":
        m["architecture"]["name"], m["version"] = "factorized-prior", 4
    else:  # a mean-scale prior under the scale-only name (a current version)
        m["architecture"]["name"], m["version"] = "scale-hyperprior", 4
    _write_manifest(bad, m)
    with pytest.raises(ModelDirError, match="parts of different models"):
        open_model_dir(bad)


def test_residual_limit_an_unknown_fingerprint_is_taken_as_claimed(tmp_path):
    """Documented limit (ModelDir): a fingerprint that no bundled model has cannot be
    checked, since it digests PyTorch weights the folder does not hold."""
    other = _copy(Q1, tmp_path / "other")
    m = _manifest(other)
    m["fingerprint"] = "0123456789abcdef"
    _write_manifest(other, m)
    assert open_model_dir(other).model.fingerprint.hex() == "0123456789abcdef"


# --- 3. the manifest's schema ----------------------------------------------------------------


def _set(path: str, value):
    def edit(m: dict) -> dict:
        *parents, key = path.split("/")
        obj = m
        for p in parents:
            obj = obj[p]
        obj[key] = value
        return m

    return edit


def _drop(path: str):
    def edit(m: dict) -> dict:
        *parents, key = path.split("/")
        obj = m
        for p in parents:
            obj = obj[p]
        del obj[key]
        return m

    return edit


MALFORMED = {
    "version-string": (_set("version", "3"), "'version'"),
    "version-bool": (_set("version", True), "'version'"),
    "version-missing": (_drop("version"), "'version'"),
    "quantizer-number": (_set("quantizers/tcq", 0.7), "'quantizers.tcq'"),
    "quantizer-step-string": (_set("quantizers/tcq/step", "0.7"), "'quantizers.tcq'"),
    "quantizer-step-negative": (_set("quantizers/rdoq/step", -1.0), "'quantizers.rdoq'"),
    "quantizer-step-huge": (_set("quantizers/rdoq/step", 1e30), "'quantizers.rdoq'"),
    "quantizers-list": (_set("quantizers", [1, 2]), "'quantizers'"),
    "lmbda-missing": (_drop("lmbda"), "'lmbda'"),
    "lmbda-string": (_set("lmbda", "0.01"), "'lmbda'"),
    "lmbda-negative": (_set("lmbda", -0.01), "'lmbda'"),
    "files-list": (_set("files", ["analysis.onnx"]), "'files'"),
    "files-missing": (_drop("files"), "'files'"),
    "files-unknown-name": (_set("files/evil.so", "0" * 64), "'files'"),
    "files-hash-number": (_set("files/tables.npz", 5), "'files.tables.npz'"),
    "files-entry-missing": (_drop("files/tables.npz"), "'files.tables.npz'"),
    "files-one-fp16": (_drop("files/analysis_fp16.onnx"), "'files'"),
    "fingerprint-short": (_set("fingerprint", "abc"), "'fingerprint'"),
    "fingerprint-not-hex": (_set("fingerprint", "zz" * 8), "'fingerprint'"),
    "fingerprint-number": (_set("fingerprint", 12), "'fingerprint'"),
    "fingerprint-missing": (_drop("fingerprint"), "'fingerprint'"),
    "gain-short": (_set("synthesis_gain", [1.0, 2.0]), "'synthesis_gain'"),
    "gain-strings": (_set("synthesis_gain", ["1"] * 96), "'synthesis_gain'"),
    "gain-dict": (_set("synthesis_gain", {"a": 1}), "'synthesis_gain'"),
    "architecture-missing": (_drop("architecture"), "'architecture'"),
    "architecture-string": (_set("architecture", "msh"), "'architecture'"),
    "architecture-name-unknown": (_set("architecture/name", "foo-bar"), "'architecture.name'"),
    "architecture-newer-than-its-version": (
        _set("architecture/name", "scale-hyperprior"),
        "'version': expected 4 or above for a scale-hyperprior",
    ),
    "architecture-N-string": (_set("architecture/N", "64"), "'architecture.N'"),
    "architecture-M-zero": (_set("architecture/M", 0), "'architecture.M'"),
    "stage-string": (_set("stage", "1"), "'stage'"),
    "finetuned-number": (_set("finetuned_for", 3), "'finetuned_for'"),
    "check-list": (_set("check", []), "'check'"),
    "parent-a-path": (_set("analysis_from", "../q3"), "'analysis_from'"),
    "parent-number": (_set("analysis_from", 3), "'analysis_from'"),
    "not-an-object": (lambda m: [m], "not a qaft model manifest"),
}


@pytest.fixture(scope="module")
def png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "img.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(path)
    return path


def _cli_error(folder: Path, png: Path, out: Path) -> str:
    from qaft.cli.run import main

    r = CliRunner().invoke(
        main,
        ["compress", str(png), "--model", str(folder), "--out", str(out)],
        catch_exceptions=True,
    )
    text = r.stderr + r.stdout
    assert r.exit_code == 1, text
    assert "Traceback" not in text
    assert r.exception is None or isinstance(r.exception, SystemExit)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), text
    return lines[0]


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_manifest_is_one_line_naming_the_field(tmp_path, png, case):
    edit, needle = MALFORMED[case]
    bad = _copy(Q1, tmp_path / "bad")
    _write_manifest(bad, edit(_manifest(bad)))
    with pytest.raises(ModelDirError) as err:
        open_model_dir(bad)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert needle in _cli_error(bad, png, tmp_path / "o")


@pytest.mark.parametrize(
    "text",
    ["{", "[" * 100_000 + "]" * 100_000, '{"format": "qaft-model-dir", "version": NaN}', ""],
)
def test_an_unparsable_manifest_is_one_line(tmp_path, png, text):
    bad = _copy(Q1, tmp_path / "bad")
    (bad / MANIFEST).write_text(text)
    with pytest.raises(ModelDirError):
        open_model_dir(bad)
    _cli_error(bad, png, tmp_path / "o")


def test_a_huge_manifest_is_refused_unread(tmp_path):
    bad = _copy(Q1, tmp_path / "bad")
    with (bad / MANIFEST).open("r+b") as f:
        f.truncate(64 << 20)  # sparse: no disk, and never read
    with pytest.raises(ModelDirError, match="above the limit"):
        open_model_dir(bad)


# --- 4. npz members: only those needed, bounded before reading ------------------------------


def _add_zeros_member(npz: Path, name: str, nbytes: int) -> None:
    """Appends ``name``.npy, ``nbytes`` of float64 zeros, deflated (a few hundred kB),
    written in chunks so the test itself never holds it."""
    with zipfile.ZipFile(npz, "a", zipfile.ZIP_DEFLATED) as z:
        with z.open(f"{name}.npy", "w", force_zip64=True) as f:
            header = {"descr": "<f8", "fortran_order": False, "shape": (nbytes // 8,)}
            np.lib.format.write_array_header_1_0(f, header)
            chunk = bytes(1 << 20)
            for _ in range(nbytes >> 20):
                f.write(chunk)


@pytest.mark.parametrize("npz", [TABLES, HYPER])
def test_an_unused_compressed_member_is_never_inflated(tmp_path, npz):
    folder = _copy(Q1, tmp_path / "m")
    _add_zeros_member(folder / npz, "padding", 256 << 20)
    assert (folder / npz).stat().st_size < 8 << 20
    _rehash(folder, npz)
    _unbundle(folder)
    tracemalloc.start()
    try:
        md = open_model_dir(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert md.model.tables.scale_table.shape == (64,)
    assert peak < 64 << 20, f"peak {peak >> 20} MiB"


def _unbundle(folder: Path) -> None:
    """Gives a tampered copy a fingerprint of its own, so that the checks below are reached
    rather than the refusal to impersonate the bundled model it was copied from."""
    m = _manifest(folder)
    m["fingerprint"] = "00" * 8
    _write_manifest(folder, m)


def _replace_member(npz: Path, name: str, raw: bytes) -> None:
    with zipfile.ZipFile(npz) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    members[f"{name}.npy"] = raw
    with zipfile.ZipFile(npz, "w", zipfile.ZIP_DEFLATED) as z:
        for k, v in members.items():
            z.writestr(k, v)


def _npy_header(shape: tuple, descr: str = "<f4") -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


@pytest.mark.parametrize(
    "raw, needle",
    [
        (_npy_header((1 << 40,)), "above the limit"),  # declares 4 TiB, holds nothing
        (_npy_header((64,)) + bytes(8), "does not match its header"),  # holds less
        (_npy_header((64,), "|O") + bytes(64 * 8), "dtype"),  # pickled objects
        (_npy_header((8, 8)) + bytes(256), "dimensions"),
    ],
)
def test_a_needed_member_is_checked_before_its_data_is_read(tmp_path, raw, needle):
    folder = _copy(Q1, tmp_path / "m")
    _replace_member(folder / TABLES, "z_medians", raw)
    _unbundle(folder)
    with pytest.raises(ModelDirError, match=needle):
        open_model_dir(folder, verify=False)


# --- 5. cluster workers: the driver's bytes, nothing from a shared folder ---------------------


def test_a_worker_never_uses_a_model_copy_planted_in_the_temporary_folder(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is the [distributed] extra")
    import tempfile

    from qaft.runtime.tools.cluster import _Worker

    files = {f.name: f.read_bytes() for f in sorted(Q3.iterdir()) if f.is_file()}
    # where the old workers looked for (and reused) a node's copy of the model
    key = hashlib.sha256(files[MANIFEST]).hexdigest()[:16]
    _copy(Q1, tmp_path / "qaft-models" / key / "q3")
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(ray, "get", lambda ref: ref)

    codec = _Worker("q3", "cpu", 1)._codec([files])
    assert codec.model.fingerprint.hex() == _manifest(Q3)["fingerprint"]
    reference = onnx_codec(open_model_dir(Q3), "cpu", 1)
    for a, b in zip(_analysis(codec), _analysis(reference), strict=True):
        np.testing.assert_array_equal(a, b)


def test_model_bytes_are_checked_on_arrival(tmp_path):
    files = open_model_dir(Q3).files()
    assert (
        model_dir_from_files(files, "q3").model.fingerprint == open_model_dir(Q3).model.fingerprint
    )
    tampered = {**files, "synthesis.onnx": (Q1 / "synthesis.onnx").read_bytes()}
    with pytest.raises(ModelDirError, match="does not match the manifest's hash"):
        model_dir_from_files(tampered, "q3")


# --- 6. joining a Ray cluster has a deadline --------------------------------------------------

_JOIN_SCRIPT = """
import socket, sys, threading, time
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(16)
def serve():
    while True:
        c, _ = srv.accept()
        try:
            c.sendall(b"HTTP/1.0 200 OK\\r\\n\\r\\nnot ray" * 20)
        except OSError:
            pass
threading.Thread(target=serve, daemon=True).start()
import ray
from qaft.runtime.tools.cluster import _init, _probe
from qaft.runtime.errors import QaftError
address = "127.0.0.1:%d" % srv.getsockname()[1]
t0 = time.time()
try:
    _probe(address)
    _init(ray, address, 3.0)
    print("joined")
except QaftError as exc:
    print("error:", exc)
    print("seconds", time.time() - t0)
sys.stdout.flush()
"""


def test_joining_something_that_is_not_ray_fails_within_the_deadline():
    pytest.importorskip("ray", reason="Ray is the [distributed] extra")
    t0 = time.time()
    r = subprocess.run(
        [sys.executable, "-c", _JOIN_SCRIPT], capture_output=True, text=True, timeout=120
    )
    lines = r.stdout.splitlines()
    assert lines and lines[0].startswith("error: cannot join Ray at 127.0.0.1:"), r.stdout
    assert "within 3 s" in lines[0]
    assert float(lines[1].split()[1]) < 10 and time.time() - t0 < 60


# --- 7. threads ------------------------------------------------------------------------------


def test_thread_counts_are_bounded():
    top = 4 * (os.cpu_count() or 1)
    assert check_threads(0) == 0 and check_threads(1) == 1 and check_threads(top) == top
    for bad in (-1, top + 1, 100_000):
        with pytest.raises(QaftError, match="threads"):
            check_threads(bad)
    with pytest.raises(QaftError, match="threads"):
        onnx_codec(open_model_dir(Q1), "cpu", top + 1)


def test_graphs_of_the_wrong_role_are_one_line_at_open(tmp_path):
    """Analysis and synthesis swapped (hashes restated): refused when the sessions open,
    not a traceback from ONNX Runtime at the first image."""
    folder = _copy(Q1, tmp_path / "m")
    a, s = folder / "analysis.onnx", folder / "synthesis.onnx"
    a_bytes = a.read_bytes()
    a.write_bytes(s.read_bytes())
    s.write_bytes(a_bytes)
    _rehash(folder, "analysis.onnx", "synthesis.onnx")
    _unbundle(folder)
    with pytest.raises(QaftError, match="not those of a analysis graph"):
        onnx_codec(open_model_dir(folder), "cpu", 1)


@pytest.mark.parametrize(
    "name, value",
    [("z_pmfs", 0.0), ("y_lengths", 1), ("z_medians", np.nan), ("z_medians", 1e30)],
)
def test_tables_that_cannot_code_are_refused_at_open(tmp_path, name, value):
    folder = _copy(Q1, tmp_path / "m")
    with np.load(folder / "tables.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays[name] = np.full_like(arrays[name], value)
    np.savez(folder / "tables.npz", **arrays)
    _rehash(folder, "tables.npz")
    _unbundle(folder)
    with pytest.raises(ModelDirError, match="tables"):
        open_model_dir(folder)


def test_a_folder_named_like_a_bundled_model_does_not_replace_it(tmp_path, monkeypatch):
    from qaft.runtime.zoo import resolve

    monkeypatch.chdir(tmp_path)
    (tmp_path / "q3").mkdir()
    (tmp_path / "mine").mkdir()
    assert resolve("q3") == Q3 and resolve("./q3") == Path("./q3")
    assert resolve("mine") == Path("mine")
