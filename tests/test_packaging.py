"""The distributions: the base wheel small (code, index, default model), the zoo's wheels
holding the rest, and an installed base wheel finding what it has and naming what it lacks."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BASE_LIMIT = 60 << 20
#: What a build leaves behind in a tree, or a checkout's own environments: not the source.
_NOT_SOURCE = {".git", ".venv", ".venv-runtime", "build", "dist", "demo-out"}

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("setuptools") is None,
    reason="setuptools is not installed: the base wheel is built offline with it",
)


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def _wheel(project: Path, out: Path) -> Path:
    """The wheel of ``project``, built offline (no isolated build environment to fill)."""
    before = set(out.glob("*.whl"))
    _pip("wheel", str(project), "--no-deps", "--no-build-isolation", "-w", str(out))
    (whl,) = set(out.glob("*.whl")) - before
    return whl


def _index() -> list[dict]:
    return json.loads((REPO / "runtime" / "zoo" / "index.json").read_text())


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    """The three wheels.  The base one from a mirror of the checkout (links to its source),
    so that no stale build/ of the checkout can slip files into it."""
    out = tmp_path_factory.mktemp("wheels")
    mirror = tmp_path_factory.mktemp("src")
    for entry in REPO.iterdir():
        if entry.name not in _NOT_SOURCE and not entry.name.endswith(".egg-info"):
            (mirror / entry.name).symlink_to(entry)
    return {
        "qaft": _wheel(mirror, out),
        "qaft-zoo": _wheel(REPO / "zoo", out),
        "qaft-zoo-train": _wheel(REPO / "zoo" / "train", out),
    }


def _names(whl: Path) -> list[str]:
    with zipfile.ZipFile(whl) as z:
        return z.namelist()


def test_base_wheel_is_small_and_holds_the_default_model_only(wheels):
    from qaft.runtime.zoo import DEFAULT_MODEL

    whl = wheels["qaft"]
    names = _names(whl)
    assert whl.stat().st_size <= BASE_LIMIT, f"{whl.stat().st_size} bytes"
    assert "qaft/runtime/zoo/index.json" in names
    model = {f"qaft/runtime/zoo/{DEFAULT_MODEL}/{f}" for f in os.listdir(REPO / "runtime/zoo/q3")}
    assert model <= set(names)
    data = [n for n in names if not n.endswith(".py") and ".dist-info/" not in n]
    assert set(data) == model | {"qaft/runtime/zoo/index.json"}  # no other model, no .pt
    assert not any(n.endswith(".pt") or "warm" in n for n in names)


def test_zoo_wheels_hold_every_other_model_and_nothing_of_warm(wheels):
    from qaft.runtime.zoo import DEFAULT_MODEL

    zoo, train = set(_names(wheels["qaft-zoo"])), set(_names(wheels["qaft-zoo-train"]))
    for e in _index():
        folder = f"qaft_zoo/{e['model_dir']}/manifest.json"
        assert (folder in zoo) == (e["name"] != DEFAULT_MODEL), e["name"]
        assert f"qaft_zoo_train/{e['checkpoint']}" in train, e["name"]
    for names in (zoo, train):
        assert not any("warm" in n for n in names)
        assert {"METADATA", "WHEEL", "RECORD"} <= {n.rsplit("/", 1)[-1] for n in names}
    assert not any(n.endswith(".pt") for n in zoo)
    # stage-2 folders take their analysis graphs from their parent's
    assert "qaft_zoo/q1-sq/synthesis.onnx" in zoo and "qaft_zoo/q1-sq/analysis.onnx" not in zoo
    with zipfile.ZipFile(wheels["qaft-zoo"]) as z:
        (record,) = [n for n in z.namelist() if n.endswith(".dist-info/RECORD")]
        listed = {line.split(",")[0] for line in z.read(record).decode().splitlines()}
    assert listed == zoo


#: What only the target's files may decide: the test's own environment may have the zoo's
#: distributions too (make demo installs them), which a bare install must not see.
_ONLY_TARGET = """
import os, sys
for _name in ("qaft_zoo", "qaft_zoo_train"):
    if not os.path.isdir(os.path.join(os.environ["PYTHONPATH"], _name)):
        sys.modules[_name] = None
"""

_PROBE = """
from qaft.runtime import zoo
from qaft.runtime.errors import QaftError
assert zoo.__file__.startswith(sys.argv[1]), zoo.__file__
print(zoo.model_path("q3").relative_to(sys.argv[1]))
for name in ("q5", "q5-tcq"):
    try:
        print(zoo.model_path(name).relative_to(sys.argv[1]))
    except QaftError as exc:
        print(exc)
"""


def _probe(target: Path) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(target)}
    r = subprocess.run(
        [sys.executable, "-c", _ONLY_TARGET + _PROBE, str(target)],
        capture_output=True, text=True, env=env, cwd=target, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def _cli(target: Path, tool: str, *args: str) -> subprocess.CompletedProcess:
    """A console script of the qaft installed under ``target``."""
    code = f"{_ONLY_TARGET}from qaft.cli.entry import {tool}\nsys.argv[0] = {tool!r}\n{tool}()"
    env = {**os.environ, "PYTHONPATH": str(target)}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True, text=True, env=env, cwd=target, timeout=120,
    )  # fmt: skip


def test_installed_base_finds_its_model_and_names_what_to_install(wheels, tmp_path, image_dir):
    from qaft.runtime import codec as C
    from qaft.runtime.backends.onnx import onnx_codec
    from qaft.runtime.image import load_rgb
    from qaft.runtime.model_dir import open_model_dir
    from qaft.runtime.zoo import model_path

    target = tmp_path / "site"
    _pip("install", "--no-deps", "--target", str(target), str(wheels["qaft"]))
    zoo = "model q5 is not installed: `pip install ./zoo` from a qaft checkout (or `make demo`)"
    assert _probe(target) == ["qaft/runtime/zoo/q3", zoo, zoo.replace("q5", "q5-tcq")]
    image = sorted(image_dir.glob("*.png"))[0]
    by_q5 = tmp_path / "by_q5.qaft"  # what a full install wrote
    by_q5.write_bytes(C.encode(onnx_codec(open_model_dir(model_path("q5"))), load_rgb(image)).data)
    train = "model q5 is not installed: `pip install ./zoo/train` from a qaft checkout"
    out = str(tmp_path / "out")
    for tool, args, needle in [
        ("run", ["compress", str(image), "--out", out, "--model", "q5"], zoo),
        ("run", ["compress", str(image), "--out", out, "--quality", "5"], zoo),
        ("run", ["decompress", str(by_q5), "--out", out], zoo),
        ("run", ["decompress", str(by_q5), "-o", str(tmp_path / "one.png")], zoo),
        ("qaft", ["export", "--ckpt", "q5", "--out", out], train),
    ]:
        r = _cli(target, tool, *args)
        assert r.returncode == 1 and needle in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = _cli(target, "run", "models")
    assert r.returncode == 0 and "q5 " in r.stdout and "(not installed)" in r.stdout
    r = _cli(target, "run", "compress", str(image), "--out", out, "-q")  # the default: there
    assert r.returncode == 0, r.stderr
    # A stage-2 model whose parent (it takes its analysis graphs from) is gone: it decodes,
    # and encoding names the parent.
    by_q5_tcq = tmp_path / "by_q5_tcq.qaft"
    codec = onnx_codec(open_model_dir(model_path("q5-tcq")))
    by_q5_tcq.write_bytes(C.encode(codec, load_rgb(image), "tcq").data)
    _pip("install", "--no-deps", "--target", str(target), str(wheels["qaft-zoo"]))
    assert _probe(target) == ["qaft/runtime/zoo/q3", "qaft_zoo/q5", "qaft_zoo/q5-tcq"]
    shutil.rmtree(target / "qaft_zoo" / "q5")
    r = _cli(target, "run", "decompress", str(by_q5_tcq), "-o", str(tmp_path / "two.png"))
    assert r.returncode == 0, r.stderr
    r = _cli(target, "run", "compress", str(image), "--out", out, "--model", "q5-tcq")
    assert r.returncode == 1 and "parent model q5, which is not installed" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
