"""Achieved GFLOP/s of the analysis and synthesis against a GEMM on the same runtime.

    python benchmarks/gflops.py [--model q3] [--size 512x768] [--threads 2] \
        [--backends cpu:fp32,openvino:fp32,openvino:bf16]

The FLOPs are counted from the model folder's graphs (2 per multiply-add of every Conv and
ConvTranspose at the given image size, GDN's 1x1 convolutions included; the element-wise
work is not counted).  The GEMM is a 2048 x 2048 x 2048 MatMul graph run by the same
runtime at the same precision and threads, so each ratio says how close a network comes to
what that runtime's matrix kernels reach on this machine.  Needs the onnx package (the
``train`` extra).
"""

from __future__ import annotations

import argparse
import functools
import io
import statistics
import timeit

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from qaft.runtime.backends.onnx import onnx_codec
from qaft.runtime.model_dir import open_model_dir
from qaft.runtime.zoo import model_path

GEMM = 2048


def conv_flops(graph: bytes, input_shape: tuple[int, ...]) -> float:
    """2 x the multiply-adds of every Conv and ConvTranspose of ``graph`` on an input of
    ``input_shape`` (shapes by ONNX shape inference)."""
    model = onnx.load(io.BytesIO(graph))
    inp = model.graph.input[0].type.tensor_type.shape
    for d, n in zip(inp.dim, input_shape):
        d.ClearField("dim_param")
        d.dim_value = n
    model = shape_inference.infer_shapes(model)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]
    }
    weights = {t.name: numpy_helper.to_array(t).shape for t in model.graph.initializer}
    for node in model.graph.node:  # constants folded by the exporter (GDN's reparametrized)
        if node.op_type == "Constant":
            weights[node.output[0]] = numpy_helper.to_array(node.attribute[0].t).shape
    flops = 0.0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        w = weights.get(node.input[1]) or shapes.get(node.input[1])
        if node.op_type == "Conv":  # per output element: cin/groups x kh x kw
            flops += 2 * np.prod(shapes[node.output[0]]) * np.prod(w[1:])
        else:  # per input element: cout x kh x kw
            flops += 2 * np.prod(shapes[node.input[0]]) * np.prod(w[1:])
    return float(flops)


def matmul_graph() -> bytes:
    """``c = a @ B`` with B a constant 2048 x 2048 float32 matrix."""
    b = numpy_helper.from_array(
        np.random.default_rng(0).normal(size=(GEMM, GEMM)).astype(np.float32), "b"
    )
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [GEMM, GEMM])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [GEMM, GEMM])],
        [b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model.SerializeToString()


def gemm_runner(backend: str, precision: str, threads: int):
    """A function that runs the MatMul graph once on ``backend`` at ``precision``."""
    graph = matmul_graph()
    a = np.random.default_rng(1).normal(size=(GEMM, GEMM)).astype(np.float32)
    if backend == "openvino":
        from qaft.runtime.backends.openvino import PRECISION_HINTS, openvino_core

        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        config["INFERENCE_PRECISION_HINT"] = PRECISION_HINTS[precision]
        core = openvino_core()
        request = core.compile_model(core.read_model(graph, b""), "CPU", config)
        request = request.create_infer_request()
        return lambda: request.infer({0: a})
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"a": a})


def median_seconds(fn, repeat: int) -> float:
    """Median of ``repeat`` single calls, after one to warm up."""
    fn()
    return statistics.median(timeit.repeat(fn, number=1, repeat=repeat))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="q3")
    ap.add_argument("--size", default="512x768", help="HxW of the image (a multiple of 64)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--backends", default="cpu:fp32,openvino:fp32,openvino:bf16")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    md = open_model_dir(model_path(args.model))
    m = md.manifest.meta.M
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    y = np.random.default_rng(0).normal(0, 2, (1, m, h // 16, w // 16)).astype(np.float32)
    flops = {
        "analysis": conv_flops(md.graph_bytes("analysis"), x.shape),
        "synthesis": conv_flops(md.graph_bytes("synthesis"), y.shape),
    }
    print(
        f"model {args.model}, {h}x{w}, {args.threads} threads: analysis "
        f"{flops['analysis'] / 1e9:.2f} GFLOP, synthesis {flops['synthesis'] / 1e9:.2f} GFLOP"
    )
    print(f"{'backend':<16}{'GEMM GFLOP/s':>14}{'analysis ms':>13}{'GFLOP/s':>9}{'of GEMM':>9}"
          f"{'synthesis ms':>13}{'GFLOP/s':>9}{'of GEMM':>9}")  # fmt: skip
    for spec in args.backends.split(","):
        backend, _, precision = spec.partition(":")
        nets = onnx_codec(md, backend, args.threads, precision or "fp32").networks
        gemm = 2 * GEMM**3 / median_seconds(gemm_runner(backend, precision, args.threads), 5)
        row = f"{spec:<16}{gemm / 1e9:>14.0f}"
        for name, arg in (("analysis", x), ("synthesis", y)):
            s = median_seconds(functools.partial(getattr(nets, name), arg), args.repeat)
            rate = flops[name] / s
            row += f"{s * 1e3:>13.1f}{rate / 1e9:>9.0f}{rate / gemm:>9.2f}"
        print(row)


if __name__ == "__main__":
    main()
