"""The OpenVINO backend of :class:`qaft.runtime.codec.Networks` (CPU).

The same exported ONNX graphs as ONNX Runtime's backend, run by OpenVINO's CPU plugin: on
the AVX-512 CPUs the project measures on it runs the synthesis 1.5x (fp32) to 2.8x (bf16)
as fast (``docs/performance.md``), and ``auto`` takes it where it is installed.
Optional: ``pip install qaft[openvino]``.

Precisions: ``fp32`` (the fp32 graphs at f32), ``bf16`` (the fp32 graphs with OpenVINO's
bf16 inference-precision hint, only where the CPU has bf16), ``fp16`` (the fp16 graphs),
``auto``: bf16 where the CPU has it, else fp32 (bf16 changes the Kodak PSNR of q3 by
+0.001 dB on average, at most 0.01 dB on an image: ``docs/performance.md``).
The entropy parameters never come from these networks (they are exact:
:mod:`qaft.runtime.entropy.integer_hyper`), so a file written by any backend at any
precision decodes with any other.
"""

from __future__ import annotations

import functools
import io
import queue
from types import SimpleNamespace

import numpy as np

from qaft.runtime.backends.onnx import BackendError, open_graphs
from qaft.runtime.errors import QaftError
from qaft.runtime.limits import check_threads
from qaft.runtime.model import no_hyper_latent
from qaft.runtime.model_dir import ModelDir

#: What ``--precision`` names -> OpenVINO's inference precision hint.
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f32"}


def openvino_installed() -> bool:
    """Whether the ``openvino`` package can be imported here (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def _signature(compiled) -> SimpleNamespace:
    """A compiled model's inputs and outputs as ``open_graphs`` checks them
    (ONNX Runtime's ``get_inputs``/``get_outputs``: ``.shape`` with ints where static)."""

    def args(ports):
        return [
            SimpleNamespace(
                shape=[d.get_length() if d.is_static else "?" for d in p.get_partial_shape()]
            )
            for p in ports
        ]

    ins, outs = args(compiled.inputs), args(compiled.outputs)
    return SimpleNamespace(get_inputs=lambda: ins, get_outputs=lambda: outs)


@functools.cache
def openvino_core():
    """The process's one ``openvino.Core``.  A second Core queried in the same process can
    crash it (ultralytics/ultralytics#25864: a segfault after some 20 model loads, each with
    its own Core; qaft's test suite crashed the same way once ``auto`` took OpenVINO)."""
    import openvino as ov

    return ov.Core()


def lower_transposed_convolutions(model) -> int:
    """Rewrites, in place, each stride-2 transposed convolution of an ``openvino.Model``
    whose weights are a constant into a convolution and a depth-to-space
    (:mod:`qaft.runtime.subpixel`: the same sums); returns how many it rewrote."""
    import openvino.opset13 as ops

    from qaft.runtime.subpixel import lowerable, subpixel_weights

    done = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "ConvolutionBackpropData" or node.get_input_size() != 2:
            continue
        a = node.get_attributes()
        weights = node.input_value(1).get_node()
        if weights.get_type_name() != "Constant":
            continue
        w = weights.get_data()
        if w.ndim != 4:  # 1-D or 3-D transposed convolutions: not what the lowering knows
            continue
        k = w.shape[2]
        pad = a["pads_begin"][0]
        square = w.shape[2] == w.shape[3] and len(set(a["strides"])) == 1
        same = a["pads_begin"] == a["pads_end"] and len(set(a["pads_begin"])) == 1
        if not (
            square
            and same
            and a["dilations"] == [1, 1]
            and a["auto_pad"].lower() == "explicit"
            and len(set(a["output_padding"])) == 1
            and lowerable(k, a["strides"][0], pad, a["output_padding"][0])
        ):
            continue
        sub = subpixel_weights(w, pad)
        h = (sub.shape[2] - 1) // 2
        conv = ops.convolution(
            node.input_value(0), ops.constant(sub), [1, 1], [h, h], [h, h], [1, 1]
        )
        node.output(0).replace(ops.depth_to_space(conv, "depth_first", 2).output(0))
        done += 1
    if done:
        model.validate_nodes_and_infer_types()
    return done


class OpenVinoNetworks:
    """The float graphs (analysis, synthesis) compiled once each for OpenVINO's CPU plugin,
    at ``precision`` with ``threads`` inference threads (0: OpenVINO's default)."""

    backend = "openvino"

    def __init__(self, model: ModelDir, threads: int = 0, precision: str = "fp32"):
        threads = check_threads(threads)
        if precision not in (*PRECISION_HINTS, "auto"):
            raise BackendError(
                f"precision {precision!r} is not one of auto, {', '.join(PRECISION_HINTS)}"
            )
        try:
            from openvino.frontend import FrontEndManager

            core = openvino_core()
            has_bf16 = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        except Exception as exc:  # no package, or one that cannot start (libraries, plugin)
            if isinstance(exc, ImportError) and not openvino_installed():
                raise BackendError(
                    "backend 'openvino' needs the openvino package: "
                    'pip install ".[openvino]" from a qaft checkout'
                ) from None
            why = _first_line(exc)
            raise BackendError(f"openvino is installed but cannot run ({why})") from None
        if precision == "auto":
            precision = "bf16" if has_bf16 else "fp32"
        if precision == "bf16" and not has_bf16:
            raise BackendError("this CPU has no bf16 arithmetic: precision fp32 runs here")
        self.precision = precision
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        # The ONNX frontend only: the bytes are never sniffed as another format (OpenVINO's
        # own IR could name weight files beside it).
        onnx = FrontEndManager().load_by_framework("onnx")
        graph_precision = "fp16" if precision == "fp16" else "fp32"

        def compile_graph(graph: bytes):
            model = onnx.convert(onnx.load(io.BytesIO(graph)))
            if precision == "bf16":  # faster there; at fp32 no faster (the module's reasons)
                lower_transposed_convolutions(model)
            return core.compile_model(model, "CPU", config)

        #: Graphs this model lacks (an absent parent's analysis graph: it still decodes).
        self.missing: dict[str, QaftError]
        self.compiled, self.missing = open_graphs(model, graph_precision, compile_graph, _signature)
        #: Idle infer requests per graph: a request is not safe to share between threads
        #: (the CLI codes several images at once), creating one per call costs time.
        self._idle = {name: queue.SimpleQueue() for name in self.compiled}

    def _run(self, name: str, x: np.ndarray) -> list[np.ndarray]:
        if name in self.missing:
            raise self.missing[name]
        idle = self._idle[name]
        try:
            request = idle.get_nowait()
        except queue.Empty:
            request = self.compiled[name].create_infer_request()
        try:
            out = request.infer({0: np.ascontiguousarray(x, np.float32)})
            # Copies: the request's output buffers are reused by its next call.
            return [np.array(out[port], np.float32) for port in self.compiled[name].outputs]
        except Exception as exc:  # a graph that fits its signature may still not run
            raise QaftError(
                f"the {name} graph failed on a {x.shape} input ({_first_line(exc)})"
            ) from None
        finally:
            idle.put(request)

    def analysis(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = self._run("analysis", x)
        # a factorized prior's analysis graph gives y alone
        return outputs[0], outputs[1] if len(outputs) > 1 else no_hyper_latent(outputs[0])

    def synthesis(self, y_hat: np.ndarray) -> np.ndarray:
        return self._run("synthesis", y_hat)[0]
