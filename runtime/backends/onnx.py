"""The ONNX Runtime backend of :class:`qaft.runtime.codec.Networks`.

Backends are chosen, not hidden: ``cpu`` (always), ``cuda`` and ``tensorrt`` (ONNX Runtime's
execution providers, present only with the onnxruntime-gpu package), ``openvino`` (another
runtime on the same graphs: :mod:`qaft.runtime.backends.openvino`, present with the openvino
package).  ``auto`` takes the first available of tensorrt, cuda, openvino, cpu.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort

from qaft.runtime.backends.products import OrtProducts
from qaft.runtime.codec import Codec, Networks
from qaft.runtime.errors import QaftError
from qaft.runtime.limits import check_threads
from qaft.runtime.model import no_hyper_latent
from qaft.runtime.model_dir import FACTORIZED, ModelDir, ParentMissingError

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


class BackendError(QaftError):
    """A backend that this installation cannot run."""


#: Every backend name, best first (``auto``'s order); openvino is not an ORT provider.
BACKENDS = ("tensorrt", "cuda", "openvino", "cpu")


def available_backends() -> list[str]:
    """Backends this installation can run, best first."""
    from qaft.runtime.backends.openvino import openvino_installed

    have = set(ort.get_available_providers())
    return [
        name
        for name in BACKENDS
        if (openvino_installed() if name == "openvino" else PROVIDERS[name] in have)
    ]


def resolve_backend(backend: str) -> str:
    """``backend``, or ``auto``'s choice, if this installation can run it; else a
    :class:`BackendError` that says what to install."""
    avail = available_backends()
    if backend == "auto":
        return avail[0]
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")
    if backend not in avail:
        hint = {
            "cpu": "",
            "openvino": ' (pip install ".[openvino]" from a qaft checkout)',
        }.get(backend, " (install onnxruntime-gpu in place of onnxruntime: see the README)")
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
        "analysis": ([3], [m, n] if arch.get("z", True) else [m]),  # image -> y, z (or y)
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


def open_graphs(
    model: ModelDir,
    precision: str,
    compile_graph: Callable[[bytes], Any],
    signature: Callable[[Any], Any] = lambda session: session,
) -> tuple[dict[str, Any], dict[str, QaftError]]:
    """The analysis and synthesis graphs compiled by ``compile_graph`` (a backend's
    bytes -> session), each checked against its role (``signature(session)`` answers
    ``get_inputs``/``get_outputs`` as ONNX Runtime's sessions do); and the graphs the model
    lacks (an absent parent's analysis graph: it still decodes), with their errors."""
    sessions: dict[str, Any] = {}
    missing: dict[str, QaftError] = {}
    meta = model.model.meta
    for name in ("analysis", "synthesis"):
        path = model.graph(name, precision)
        # The verified bytes, not the path: the backend reads no file again (no gap between
        # the check and the use), and has no folder to resolve external data against.
        try:
            graph = model.graph_bytes(name, precision)
        except ParentMissingError as exc:
            missing[name] = exc
            continue
        try:
            sessions[name] = compile_graph(graph)
        except Exception as exc:  # backends raise their own types for bad graphs
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise QaftError(f"{path}: not a loadable ONNX graph ({first})") from None
        arch = {"N": meta.N, "M": meta.M, "z": model.manifest.architecture != FACTORIZED}
        _check_signature(path, name, signature(sessions[name]), arch)
    return sessions, missing


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
        # auto: ONNX Runtime's best provider (open_networks is what may choose openvino).
        ort_only = [b for b in available_backends() if b != "openvino"]
        self.backend = ort_only[0] if backend == "auto" else resolve_backend(backend)
        if self.backend == "openvino" or precision == "bf16":
            raise BackendError(
                "ONNX Runtime runs fp32 and fp16 on cpu, cuda, tensorrt; openvino and bf16 "
                "are OpenVINO's (open_networks picks the class)"
            )
        self.precision = precision
        opts = ort.SessionOptions()
        # Only ONNX protobuf, never ORT's own format, whose contents the folder check skips.
        opts.add_session_config_entry("session.load_model_format", "ONNX")
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        # ORT logs, at warning level, the constants of the fp16 graphs it leaves unfolded.
        opts.log_severity_level = 3
        # Each session has its own threads; spinning, they would take the cores from the
        # next session to run (the synthesis after the analysis ran 1.4x slower, and the
        # integer hyper-synthesis between them 1.6x): measured, no session was slower alone.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if not optimize:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        providers = [PROVIDERS[self.backend]]
        if self.backend != "cpu":
            providers.append(PROVIDERS["cpu"])
        #: Graphs this model lacks (an absent parent's analysis graph: it still decodes).
        self.missing: dict[str, QaftError]
        self.sessions, self.missing = open_graphs(
            model, precision, lambda graph: ort.InferenceSession(graph, opts, providers=providers)
        )

    def _run(self, name: str, x: np.ndarray) -> list[np.ndarray]:
        if name in self.missing:
            raise self.missing[name]
        # fp16 graphs keep fp32 inputs and outputs (casts inside): callers see one type.
        sess = self.sessions[name]
        try:
            return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, np.float32)})
        except Exception as exc:  # ORT's own types; a graph that fits its signature may not run
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise QaftError(f"the {name} graph failed on a {x.shape} input ({first})") from None

    def analysis(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = self._run("analysis", x)
        # a factorized prior's analysis graph gives y alone
        return outputs[0], outputs[1] if len(outputs) > 1 else no_hyper_latent(outputs[0])

    def synthesis(self, y_hat: np.ndarray) -> np.ndarray:
        return self._run("synthesis", y_hat)[0]


def open_networks(
    model: ModelDir,
    backend: str = "cpu",
    threads: int = 0,
    precision: str = "fp32",
    optimize: bool = True,
) -> Networks:
    """The float networks of ``backend`` (``auto``: the best available): OpenVINO's for
    ``openvino`` (``optimize`` is ONNX Runtime's switch: OpenVINO always optimizes), ONNX
    Runtime's for the others.  bf16 runs on openvino only; ``auto`` is bf16 there where
    the CPU has it (it costs no PSNR on Kodak: ``docs/performance.md``), fp32 elsewhere.
    ``auto`` goes on to ONNX Runtime where the openvino package is there but cannot run
    (the backend a codec runs names it)."""
    asked, backend = backend, resolve_backend(backend)
    if backend == "openvino":
        from qaft.runtime.backends.openvino import OpenVinoNetworks

        try:
            return OpenVinoNetworks(model, threads, precision)
        except Exception:  # auto: whatever stops OpenVINO, ONNX Runtime may still run
            if asked != "auto" or precision == "bf16":
                raise
            backend = next(b for b in available_backends() if b != "openvino")
    if precision == "bf16":
        raise BackendError(
            f"precision bf16 needs the openvino backend, not {backend!r} "
            '(--backend openvino; pip install ".[openvino]" from a qaft checkout)'
        )
    return OnnxNetworks(
        model, backend, threads, "fp32" if precision == "auto" else precision, optimize
    )


def onnx_codec(
    model: ModelDir,
    backend: str = "cpu",
    threads: int = 0,
    precision: str = "fp32",
    optimize: bool = True,
) -> Codec:
    """A codec running a model folder's graphs with ONNX Runtime or OpenVINO (the entropy
    parameters always come from the folder's integer hyper-synthesis)."""
    networks = open_networks(model, backend, threads, precision, optimize)
    return Codec(networks, model.model, OrtProducts(threads))
