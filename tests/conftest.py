"""Shared fixtures: a tiny model saved to disk and small synthetic images."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from qaft.runtime.tools.synthetic import index_digest, synthetic_image  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
KODAK = REPO.parent / "shared" / "data" / "kodak"
TRAIN = REPO.parent / "shared" / "data" / "train"


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    from PIL import Image

    d = tmp_path_factory.mktemp("images")
    for i, (h, w) in enumerate([(96, 128), (64, 64), (70, 50)]):
        Image.fromarray(synthetic_image(h, w, i)).save(d / f"img{i}.png")
    return d


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory) -> Path:
    """A small randomly initialised model, saved as a qaft model file."""
    import torch

    from qaft.runtime.model import ModelMeta
    from qaft.training.checkpoint import save_model
    from qaft.training.models import MeanScaleHyperprior, ModelConfig

    torch.manual_seed(0)
    model = MeanScaleHyperprior(ModelConfig(16, 24))
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model(path, model, ModelMeta(lmbda=0.01))
    return path


@pytest.fixture(scope="session")
def tiny_codec(tiny_model_file):
    from qaft.training.backend import codec_from_loaded
    from qaft.training.checkpoint import load_model

    return codec_from_loaded(load_model(tiny_model_file))


@pytest.fixture(scope="session")
def model_dir(tiny_model_file, tmp_path_factory) -> Path:
    """The tiny model exported to a runtime model folder."""
    from qaft.export.onnx_export import export_model
    from qaft.training.checkpoint import load_model

    out = tmp_path_factory.mktemp("export") / "tiny"
    manifest = export_model(load_model(tiny_model_file), out, synthetic_image(80, 100, 7))
    errors = manifest.check["max_relative_error"]
    assert all(e < 1e-4 for f, e in errors.items() if f in ("analysis.onnx", "synthesis.onnx"))
    assert all(e < 1e-2 for e in errors.values())
    return out


def start_cli(*args, wait_for: tuple[Path, str, int] | None = None):
    """Starts a console script of this environment (text pipes) and, with ``wait_for``
    (folder, glob, count), returns once that many files match there (or after 120 s).

    A shell runs background jobs with SIGINT ignored, and a child inherits that: the child
    gets the default back, so a test means the same in a background job as in the
    foreground."""
    import signal
    import subprocess
    import time

    exe = Path(sys.executable).parent / args[0]
    proc = subprocess.Popen(
        [str(exe), *map(str, args[1:])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    if wait_for is not None:
        folder, pattern, count = wait_for
        deadline = time.time() + 120
        while time.time() < deadline and len(list(folder.glob(pattern))) < count:
            time.sleep(0.01)
    return proc


def run_cli(*args: str, timeout: float = 300, **kw):
    """Runs a console script of this environment in a subprocess."""
    import subprocess

    exe = Path(sys.executable).parent / args[0]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run(
        [str(exe), *args[1:]], capture_output=True, text=True, timeout=timeout, env=env, **kw
    )
