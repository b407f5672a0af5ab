"""The ONNX Runtime backend of :class:`qaft.runtime.codec.Networks`.

Backends are chosen, not hidden: ``cpu`` (always), ``cuda`` and ``tensorrt`` (ONNX Runtime's
execution providers, present only with the onnxruntime-gpu package).  ``auto`` takes the
first available of tensorrt, cuda, cpu.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from qaft.runtime.codec import Codec
from qaft.runtime.errors import QaftError
from qaft.runtime.limits import check_threads
from qaft.runtime.model_dir import ModelDir

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


class BackendError(QaftError):
    """A backend that this installation cannot run."""


def available_backends() -> list[str]:
    """Backends this ONNX Runtime build can run, best first."""
    have = set(ort.get_available_providers())
    return [name for name, prov in PROVIDERS.items() if prov in have]


def resolve_backend(backend: str) -> str:
    avail = available_backends()
    if backend == "auto":
        return avail[0]
    if backend not in PROVIDERS:
        raise BackendError(f"unknown backend {backend!r}; choose from auto, {', '.join(PROVIDERS)}")
    if backend not in avail:
        hint = (
            " (install onnxruntime-gpu in place of onnxruntime: see the README)"
            if backend != "cpu"
            else ""
        )
        raise BackendError(
            f"backend {backend!r} is not available here; available: {', '.join(avail)}{hint}"
        )
    return backend


def _check_signature(path, name: str, sess, arch: dict) -> None:
    """Refuses a graph whose inputs and outputs are not the ones its role needs (a folder
    with its graphs swapped, or another model's): one line at open, not a traceback at the
    first image.  Channels are checked where the graph states them."""
    n, m = arch.get("N"), arch.get("M")
    want = {
        "analysis": ([3], [m, n]),  # image -> y, z
        "synthesis": ([m], [3]),  # ŷ -> image
    }[name]
    got_in, got_out = sess.get_inputs(), sess.get_outputs()
    for kind, args, channels in (("inputs", got_in, want[0]), ("outputs", got_out, want[1])):
        ok = len(args) == len(channels) and all(
            len(a.shape) == 4 and (not isinstance(a.shape[1], int) or a.shape[1] == c)
            for a, c in zip(args, channels)
        )
        if not ok:
            shapes = ", ".join(str(a.shape) for a in args)
            raise QaftError(
                f"{path}: its {kind} ({shapes}) are not those of a {name} graph of this "
                f"model ({len(channels)} of rank 4, channels {channels})"
            )


class OnnxNetworks:
    """The float graphs (analysis, synthesis) at one precision, one ONNX Runtime session
    each, created once.  ``optimize=False`` turns ONNX Runtime's graph optimizations off."""

    def __init__(
        self,
        model: ModelDir,
        backend: str = "cpu",
        threads: int = 0,
        precision: str = "fp32",
        optimize: bool = True,
    ):
        threads = check_threads(threads)
        self.backend = resolve_backend(backend)
        self.precision = precision
        opts = ort.SessionOptions()
        # Only ONNX protobuf, never ORT's own format, whose contents the folder check skips.
        opts.add_session_config_entry("session.load_model_format", "ONNX")
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        # ORT logs, at warning level, the constants of the fp16 graphs it leaves unfolded.
        opts.log_severity_level = 3
        if not optimize:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        providers = [PROVIDERS[self.backend]]
        if self.backend != "cpu":
            providers.append(PROVIDERS["cpu"])
        self.sessions = {}
        for name in ("analysis", "synthesis"):
            path = model.graph(name, precision)
            # The verified bytes, not the path: ORT reads no file again (no gap between the
            # check and the use), and has no folder to resolve external data against.
            graph = model.graph_bytes(name, precision)
            try:
                self.sessions[name] = ort.InferenceSession(graph, opts, providers=providers)
            except Exception as exc:  # ORT raises its own types for bad graphs
                first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                raise QaftError(f"{path}: not a loadable ONNX graph ({first})") from None
            _check_signature(path, name, self.sessions[name], model.manifest["architecture"])

    def _run(self, name: str, x: np.ndarray) -> list[np.ndarray]:
        # fp16 graphs keep fp32 inputs and outputs (casts inside): callers see one type.
        sess = self.sessions[name]
        try:
            return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, np.float32)})
        except Exception as exc:  # ORT's own types; a graph that fits its signature may not run
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise QaftError(f"the {name} graph failed on a {x.shape} input ({first})") from None

    def analysis(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y, z = self._run("analysis", x)
        return y, z

    def synthesis(self, y_hat: np.ndarray) -> np.ndarray:
        return self._run("synthesis", y_hat)[0]


def onnx_codec(
    model: ModelDir,
    backend: str = "cpu",
    threads: int = 0,
    precision: str = "fp32",
    optimize: bool = True,
) -> Codec:
    """A codec running a model folder's graphs with ONNX Runtime (the entropy parameters
    always come from the folder's integer hyper-synthesis)."""
    return Codec(
        OnnxNetworks(model, backend, threads, precision, optimize),
        model.hyper,
        model.tables,
        model.fingerprint,
        model.quantizer_defaults,
        model.distortion_weights,
    )
