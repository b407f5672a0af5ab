"""The integer hyper-synthesis' matrix products on ONNX Runtime's threads.

Those products hold integers in float64 with every partial sum below 2**53, so any GEMM
gives the same bits in any summation order (:mod:`qaft.runtime.entropy.integer_hyper`).
NumPy's (OpenBLAS) is as fast as any here, but after a multithreaded call its worker
threads keep spinning for tens of milliseconds, on the cores the network that runs next
needs: measured on 2 cores (q3, a Kodak image), the synthesis took 140 ms right after a
hyper-synthesis against 99 ms without one.  ONNX Runtime's MatMul (MLAS's DGEMM: within 10%
of OpenBLAS's on the hyper-synthesis' shapes) with spinning turned off leaves no thread
running once it returns.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from qaft.runtime.limits import check_threads

#: ``c = MatMul(a, b)`` on float64 (m, k) x (k, n), opset 17.  Written by
#: ``onnx.helper.make_model(make_graph([make_node("MatMul", ["a", "b"], ["c"])], "mm", …),
#: ir_version=8)`` (``tests/test_exact.py`` rebuilds it and compares): a constant, so
#: the runtime needs no onnx package.
MATMUL_GRAPH = bytes.fromhex(
    "08083a5c0a110a01610a016212016322064d61744d756c12026d6d5a150a016112100a0e080b120a0a0312"
    "016d0a0312016b5a150a016212100a0e080b120a0a0312016b0a0312016e62150a016312100a0e080b12"
    "0a0a0312016d0a0312016e42040a001011"
)


class OrtProducts:
    """``(a, b) -> a @ b`` for float64 matrices, on an ONNX Runtime session of ``threads``
    intra-op threads (0: ONNX Runtime's default, every core) that do not spin when idle.
    Safe to call from several threads at once (ONNX Runtime's ``run`` is)."""

    def __init__(self, threads: int = 0):
        threads = check_threads(threads)
        opts = ort.SessionOptions()
        opts.add_session_config_entry("session.load_model_format", "ONNX")
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(MATMUL_GRAPH, opts, providers=["CPUExecutionProvider"])

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = np.ascontiguousarray(a, np.float64)
        b = np.ascontiguousarray(b, np.float64)
        return self._session.run(None, {"a": a, "b": b})[0]
