"""``qaft export``: a model file -> a self-contained model folder for the runtime.

The folder holds the float graphs with dynamic height and width (``analysis.onnx``:
image -> y, z; ``synthesis.onnx``: ŷ -> image; with ``fp16``, also ``*_fp16.onnx``: the
same in half precision, fp32 inputs and outputs), the integer hyper-synthesis that selects
the probability tables (``hyper_synthesis.npz``, see ``docs/exact.md``), the coding tables
(``tables.npz``) and ``manifest.json`` (format version, fingerprint, architecture, λ, stage,
``finetuned_for``, quantizer settings, SHA-256 of every file).  Every graph is checked
against PyTorch before the folder is written.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from qaft.runtime.codec import network_input
from qaft.runtime.entropy.integer_hyper import ACT_BITS, ACT_LIMIT, IntegerHyperSynthesis
from qaft.runtime.errors import QaftError
from qaft.runtime.model import ChannelPrior
from qaft.runtime.model_dir import (
    ARCHITECTURE_VERSIONS,
    CALIBRATED_VERSION,
    GRAPHS,
    GRAPHS_FP16,
    HYPER,
    MANIFEST,
    MODEL_DIR_OLDEST,
    TABLES,
    Manifest,
)
from qaft.training.checkpoint import LoadedModel
from qaft.training.models import AnyModel, MeanScaleHyperprior

#: Largest accepted difference between ONNX Runtime and PyTorch, relative to the output's
#: largest magnitude.
TOLERANCE = 1e-4
#: The same for the fp16 graphs (half precision: about 2**-11 per operation).
TOLERANCE_FP16 = 1e-2
#: The same for the integer hyper-synthesis against the float ``h_s`` (a coarser check: it
#: rounds weights to 16 bits and activations to 2**-18; it catches conversion bugs).
TOLERANCE_INTEGER = 1e-2


class ExportError(QaftError):
    """A graph that does not reproduce PyTorch within the tolerance."""


class ExportTargetError(QaftError):
    """An ``--out`` that export must not replace (it is not a model folder, or no
    ``--force`` was given)."""


def is_model_folder(path: Path) -> bool:
    """Whether ``path`` holds a model folder that export wrote and nothing else: regular
    files only (no links, no sub-folders), a manifest the runtime accepts, and no file that
    manifest does not list (TensorRT engines aside).  Only such a folder may be replaced."""
    from qaft.runtime.model_dir import ModelDirError, read_manifest

    try:
        entries = list(os.scandir(path))
        manifest = read_manifest(path)
    except (OSError, ModelDirError):
        return False
    if any(not e.is_file(follow_symlinks=False) for e in entries):
        return False
    listed = {MANIFEST, *manifest.files}
    return all(e.name in listed or _ENGINE.fullmatch(e.name) for e in entries)


#: TensorRT engines that `qaft export --tensorrt` writes beside the graphs (named after
#: them, tensorrt_engine.build_engines), unlisted in the manifest.
_ENGINE = re.compile(r"(analysis|synthesis)(_fp16)?(\.fp16)?\.engine")


def check_target(out: str | Path, force: bool = False, inputs: Iterable[Path] = ()) -> None:
    """Refuses an ``out`` that export would have to destroy something else to write.

    Allowed: a path that does not exist, an empty folder, and, with ``force``, a model
    folder (replaced whole).  Refused, untouched: a file, a link, a folder holding
    anything else, and the working directory or any folder above it.
    """
    out = Path(out)
    if out.is_symlink():
        raise ExportTargetError(f"--out {out}: is a link, not a model folder; choose another --out")
    if not out.exists():
        return
    if not out.is_dir():
        raise ExportTargetError(f"--out {out}: is a file, not a model folder; nothing was written")
    if Path.cwd().resolve().is_relative_to(out.resolve()):
        raise ExportTargetError(
            f"--out {out}: holds the working directory; choose a new folder for the model"
        )
    for p in inputs:
        if Path(p).resolve().is_relative_to(out.resolve()):
            raise ExportTargetError(f"--out {out}: holds {p}, an input of the export")
    if not any(out.iterdir()):
        return
    if not is_model_folder(out):
        raise ExportTargetError(
            f"--out {out}: is a folder, not a qaft model folder; choose a new or empty one "
            "(nothing was written)"
        )
    if not force:
        raise ExportTargetError(f"--out {out}: a model folder exists there; --force replaces it")


def _move_into_place(tmp: Path, out: Path, force: bool) -> None:
    """Renames the finished folder ``tmp`` to ``out``.  A model folder already there is
    renamed aside first and removed last: a crash leaves the old or the new one, never
    neither (at worst both, the old under a hidden name beside it)."""
    check_target(out, force)  # again: the folder may have changed while the graphs were checked
    if out.exists() and any(out.iterdir()):
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        os.replace(out, aside / out.name)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(aside / out.name, out)
            aside.rmdir()
            raise
        shutil.rmtree(aside, ignore_errors=True)  # the new folder is in place already
    else:
        os.replace(tmp, out)  # over nothing, or over an empty folder


class _Analysis(torch.nn.Module):
    def __init__(self, m: AnyModel):
        super().__init__()
        self.g_a = m.g_a
        self.has_z = hasattr(m, "h_a")  # a factorized prior's graph gives y alone
        if self.has_z:
            self.h_a = m.h_a
            self.hyper_analysis = m.hyper_analysis  # runs the h_a registered just above

    def forward(self, x):
        y = self.g_a(x)
        return (y, self.hyper_analysis(y)) if self.has_z else y


class _Synthesis(torch.nn.Module):
    def __init__(self, m: AnyModel):
        super().__init__()
        self.g_s = m.g_s

    def forward(self, y_hat):
        return self.g_s(y_hat)


class _Half(torch.nn.Module):
    """A module run in fp16 behind fp32 inputs and outputs."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = copy.deepcopy(module).half()

    def forward(self, x):
        out = self.module(x.half())
        return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()


def _graphs(m: AnyModel, fp16: bool):
    """(file, module, input name, output names, example input shape, tolerance) of each
    graph; the fp16 twins are checked against the fp32 PyTorch modules."""
    mm = m.config.M
    specs = [
        (
            "analysis",
            _Analysis(m),
            "x",
            ["y", "z"] if hasattr(m, "h_a") else ["y"],
            (1, 3, 128, 192),
        ),
        ("synthesis", _Synthesis(m), "y_hat", ["x_hat"], (1, mm, 8, 12)),
    ]
    out = [(GRAPHS[n], mod, mod, i, o, s, TOLERANCE) for n, mod, i, o, s in specs]
    if fp16:
        out += [
            (GRAPHS_FP16[n], _Half(mod), mod, i, o, s, TOLERANCE_FP16) for n, mod, i, o, s in specs
        ]
    return out


def _check(path: Path, module, shape, real: torch.Tensor | None) -> float:
    """Largest relative difference of ONNX Runtime against PyTorch on random (and real)
    inputs of a size other than the one exported."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # fp16 graphs: ORT notes constants it leaves unfolded
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    inputs = [
        rng.normal(0, 1, (shape[0], shape[1], shape[2] * 2, shape[3] + shape[3] // 3 * 2)).astype(
            np.float32
        )
    ]
    if shape[1] == 3:
        inputs[0] = rng.random(inputs[0].shape, dtype=np.float32)
    if real is not None:
        inputs.append(real.numpy())
    worst = 0.0
    for x in inputs:
        ours = sess.run(None, {sess.get_inputs()[0].name: x})
        with torch.no_grad():
            ref = module(torch.from_numpy(x))
        ref = ref if isinstance(ref, tuple) else (ref,)
        for a, b in zip(ours, ref):
            b = b.numpy()
            worst = max(worst, float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6)))
    return worst


@torch.no_grad()
def _real_inputs(loaded: LoadedModel, image: np.ndarray | None) -> dict[str, torch.Tensor]:
    """The inputs each graph sees when coding ``image`` (padded to a multiple of 64) with
    the scalar quantizer: the runtime's own pipeline, the networks run by PyTorch."""
    if image is None:
        return {}
    model = loaded.model
    x = torch.from_numpy(network_input(image))
    y = model.g_a(x)
    lat = loaded.runtime.latents(y.numpy(), model.hyper_analysis(y).numpy())
    y_hat = np.rint(lat.y - lat.means) + lat.means
    return {"x": x, "z_hat": torch.from_numpy(lat.z_hat), "y_hat": torch.from_numpy(y_hat)}


@torch.no_grad()
def _check_integer(
    model: MeanScaleHyperprior, hyper: IntegerHyperSynthesis, real: torch.Tensor | None
) -> float:
    """Largest difference of the integer hyper-synthesis from the float ``h_s`` (relative
    to the largest float output), on random integer ẑ and the real one."""
    rng = np.random.default_rng(0)
    inputs = [np.rint(rng.normal(0, 3, (1, model.config.N, 4, 6))).astype(np.float32)]
    if real is not None:
        inputs.append(real.numpy().astype(np.float32))
    # Outputs beyond the activations' range are clipped by design (docs/exact.md); random
    # ẑ can push a low-rate model's means there although real images never do, so only the
    # random input's reference is clipped: saturation on a real image still fails the check.
    limit = ACT_LIMIT * 2.0**-ACT_BITS
    worst = 0.0
    for i, z in enumerate(inputs):
        ref = model.h_s(torch.from_numpy(z)).numpy()
        if i == 0:
            ref = np.clip(ref, -limit, limit)
        ours = hyper(z)[0] if not hyper.with_means else np.concatenate(hyper(z), axis=1)
        worst = max(worst, float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-6)))
    return worst


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_model(
    loaded: LoadedModel,
    out: str | Path,
    real_image: np.ndarray | None = None,
    opset: int = 17,
    fp16: bool = True,
    force: bool = False,
) -> Manifest:
    """Writes the model folder ``out`` (atomically: a temporary folder beside it, then a
    rename); ``fp16`` adds the half-precision graphs.

    ``out`` must be new or an empty folder; with ``force`` it may also be a model folder,
    which is then replaced.  Anything else is refused untouched (:func:`check_target`).
    """
    out = Path(os.path.abspath(out))  # "." and "x/.." have no usable name or parent
    check_target(out, force)
    model = loaded.model.cpu().eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model folder is meant to be shared
    try:
        real = _real_inputs(loaded, real_image)
        errors = {}
        for fname, module, ref, in_name, out_names, shape, tol in _graphs(model, fp16):
            dyn = {in_name: {2: "height", 3: "width"}}
            dyn.update({o: {2: "height", 3: "width"} for o in out_names})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module,
                    (torch.rand(*shape),),
                    str(tmp / fname),
                    input_names=[in_name],
                    output_names=out_names,
                    dynamic_axes=dyn,
                    opset_version=opset,
                    dynamo=False,
                )
            err = _check(tmp / fname, ref, shape, real.get(in_name))
            errors[fname] = err
            if err > tol:
                raise ExportError(
                    f"{fname}: ONNX Runtime differs from PyTorch by {err:.2e} "
                    f"(relative), above the tolerance {tol:.0e}"
                )
        hyper = loaded.hyper
        np.savez(tmp / HYPER, **hyper.to_arrays())
        # a factorized prior's is its channel medians, exact as stored: nothing to compare
        err = (
            0.0
            if isinstance(hyper, ChannelPrior)
            else _check_integer(model, hyper, real.get("z_hat"))
        )
        errors[HYPER] = err
        if err > TOLERANCE_INTEGER:
            raise ExportError(
                f"{HYPER}: the integer hyper-synthesis differs from PyTorch's by {err:.2e} "
                f"(relative), above the tolerance {TOLERANCE_INTEGER:.0e}"
            )
        np.savez(tmp / TABLES, **loaded.tables.to_arrays())
        manifest = Manifest(
            fingerprint=loaded.fingerprint.hex(),
            architecture=model.config.architecture,
            # the architecture's N and M are the network's, whatever the metadata says
            meta=replace(loaded.meta, N=model.config.N, M=model.config.M),
            files={
                f: _sha256(tmp / f)
                for f in [*GRAPHS.values(), HYPER, TABLES]
                + (list(GRAPHS_FP16.values()) if fp16 else [])
            },
            check={
                "max_relative_error": errors,
                "tolerance": TOLERANCE,
                "tolerance_fp16": TOLERANCE_FP16,
                "tolerance_integer": TOLERANCE_INTEGER,
            },
            # the oldest version that holds the model (a calibration needs 3; the newer
            # architectures 4): older readers keep reading the rest
            version=max(
                CALIBRATED_VERSION if loaded.tables.calibration else MODEL_DIR_OLDEST,
                ARCHITECTURE_VERSIONS[model.config.architecture],
            ),
        )
        (tmp / MANIFEST).write_text(manifest.to_json())
        _move_into_place(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
