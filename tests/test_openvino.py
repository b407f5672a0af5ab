"""The OpenVINO backend (runtime/backends/openvino.py): an optional extra, so every test
that runs it skips where the openvino package is not installed."""

import shutil

import numpy as np
import pytest
from conftest import run_cli, synthetic_image

from qaft.runtime import codec as C
from qaft.runtime.backends import openvino as OV
from qaft.runtime.backends.onnx import BackendError, onnx_codec, resolve_backend
from qaft.runtime.model_dir import open_model_dir

needs_openvino = pytest.mark.skipif(
    not OV.openvino_installed(), reason="the openvino package is not installed (qaft[openvino])"
)


def _has_bf16() -> bool:
    return "BF16" in OV.openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_a_missing_openvino_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(OV, "openvino_installed", lambda: False)
    assert resolve_backend("auto") != "openvino"
    with pytest.raises(BackendError, match=r'pip install "\.\[openvino\]"'):
        resolve_backend("openvino")


def test_bf16_is_refused_on_onnx_runtime(model_dir):
    with pytest.raises(BackendError, match="openvino"):
        onnx_codec(open_model_dir(model_dir), "cpu", 1, "bf16")


@needs_openvino
def test_auto_takes_openvino_where_it_is_installed(monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert resolve_backend("auto") == "openvino"


@needs_openvino
def test_many_codecs_in_one_process_share_one_openvino_core(model_dir):
    """Each Core made anew crashed a long test run (openvino_core's reason)."""
    md = open_model_dir(model_dir)
    first = onnx_codec(md, "openvino", 1, "fp32")
    y = np.zeros((1, md.manifest.meta.M, 2, 3), np.float32)
    for _ in range(30):
        assert onnx_codec(md, "openvino", 1, "fp32").networks.synthesis(y).shape == (1, 3, 32, 48)
    assert OV.openvino_core() is OV.openvino_core()
    del first


@needs_openvino
@pytest.mark.parametrize("quantizer", ["sq", "tcq"])
def test_files_cross_between_openvino_and_onnx_runtime(model_dir, quantizer):
    md = open_model_dir(model_dir)
    codecs = {
        "ort": onnx_codec(md, "cpu", 1),
        "ov-fp32": onnx_codec(md, "openvino", 1, "fp32"),
        "ov-auto": onnx_codec(md, "openvino", 2, "auto"),
    }
    img = synthetic_image(70, 90, 3)
    for enc_name, enc_codec in codecs.items():
        enc = C.encode(enc_codec, img, quantizer, reconstruct=True)
        for dec_name, dec_codec in codecs.items():
            dec = C.decode(dec_codec, enc.data)
            assert np.array_equal(dec.y_indices, enc.y_indices), (enc_name, dec_name)
            assert np.array_equal(dec.z_indices, enc.z_indices), (enc_name, dec_name)
            if dec_name == enc_name:
                np.testing.assert_array_equal(dec.image, enc.reconstruction)


@needs_openvino
def test_openvino_fp32_agrees_with_onnx_runtime(model_dir):
    md = open_model_dir(model_dir)
    ort, ov = onnx_codec(md, "cpu", 1).networks, onnx_codec(md, "openvino", 1, "fp32").networks
    assert ov.backend == "openvino" and ov.precision == "fp32"
    x = C.network_input(synthetic_image(64, 96, 5))
    for a, b in zip(ov.analysis(x), ort.analysis(x)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    y = ort.analysis(x)[0]
    np.testing.assert_allclose(ov.synthesis(y), ort.synthesis(y), rtol=1e-4, atol=1e-4)


@needs_openvino
def test_threads_and_precision_reach_openvino(model_dir):
    import openvino

    ov = onnx_codec(open_model_dir(model_dir), "openvino", 1, "fp32").networks
    for compiled in ov.compiled.values():
        assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 1
        assert compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.f32
    auto = onnx_codec(open_model_dir(model_dir), "openvino", 2, "auto").networks
    assert auto.precision == ("bf16" if _has_bf16() else "fp32")
    want = openvino.Type.bf16 if _has_bf16() else openvino.Type.f32
    for compiled in auto.compiled.values():
        assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 2
        assert compiled.get_property("INFERENCE_PRECISION_HINT") == want
    if not _has_bf16():
        with pytest.raises(BackendError, match="no bf16"):
            onnx_codec(open_model_dir(model_dir), "openvino", 1, "bf16")


@needs_openvino
def test_openvino_is_given_the_verified_bytes_not_the_path(model_dir, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    md = open_model_dir(folder)  # verified and held in memory here
    for name in ("analysis.onnx", "synthesis.onnx"):
        (folder / name).write_bytes(b"not a graph")
    codec = onnx_codec(md, "openvino", 1, "fp32")
    enc = C.encode(codec, synthetic_image(64, 64, 1), "sq")
    assert C.decode(codec, enc.data).image.shape == (64, 64, 3)


@needs_openvino
def test_a_graph_of_the_wrong_role_is_refused(model_dir, tmp_path):
    folder = tmp_path / "swapped"
    shutil.copytree(model_dir, folder)
    md = open_model_dir(folder)
    md.blobs["analysis.onnx"], md.blobs["synthesis.onnx"] = (
        md.blobs["synthesis.onnx"],
        md.blobs["analysis.onnx"],
    )
    with pytest.raises(Exception, match="not those of a analysis graph"):
        onnx_codec(md, "openvino", 1, "fp32")


@needs_openvino
def test_cli_compresses_with_openvino_and_decodes_with_onnx_runtime(model_dir, tmp_path):
    from PIL import Image

    src = tmp_path / "a.png"
    Image.fromarray(synthetic_image(48, 80, 7)).save(src)
    packed, restored = tmp_path / "a.qaft", tmp_path / "b.png"
    r = run_cli("qaft-run", "compress", str(src), "-o", str(packed), "--model", str(model_dir),
                "--backend", "openvino", "--threads", "1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "backend openvino" in r.stderr + r.stdout
    r = run_cli("qaft-run", "decompress", str(packed), "-o", str(restored), "--model",
                str(model_dir), "--backend", "cpu", "--precision", "fp32")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert np.asarray(Image.open(restored)).shape == (48, 80, 3)


def _transposed_conv(x, w, pad):
    """Reference: stride 2, output padding 1, by its definition (every input pixel's
    k x k contributions added where they land)."""
    cin, h, wd = x.shape
    k = w.shape[2]
    full = np.zeros((w.shape[1], 2 * h + k, 2 * wd + k))
    for ky in range(k):
        for kx in range(k):
            full[:, ky : ky + 2 * h : 2, kx : kx + 2 * wd : 2] += np.einsum(
                "io,ihw->ohw", w[:, :, ky, kx], x
            )
    return full[:, pad : pad + 2 * h, pad : pad + 2 * wd]


@pytest.mark.parametrize("k", [3, 5, 7])
def test_subpixel_weights_give_the_transposed_convolution(k):
    from qaft.runtime.subpixel import lowerable, subpixel_weights

    rng = np.random.default_rng(k)
    x, w = rng.normal(size=(4, 5, 6)), rng.normal(size=(4, 3, k, k))
    pad = k // 2
    assert lowerable(k, 2, pad, 1) and not lowerable(k, 2, pad, 0) and not lowerable(4, 2, 2, 1)
    sub = subpixel_weights(w, pad)
    kk = sub.shape[2]
    h = kk // 2
    xp = np.pad(x, ((0, 0), (h, h), (h, h)))
    conv = np.zeros((sub.shape[0], 5, 6))
    for i in range(kk):
        for j in range(kk):
            conv += np.einsum("oi,ihw->ohw", sub[:, :, i, j], xp[:, i : i + 5, j : j + 6])
    # depth to space, depth first (PixelShuffle): channel 4 o + 2 r + c -> (o, 2 y + r, 2 x + c)
    shuffled = conv.reshape(3, 2, 2, 5, 6).transpose(0, 3, 1, 4, 2).reshape(3, 10, 12)
    np.testing.assert_allclose(shuffled, _transposed_conv(x, w, pad), atol=1e-12)


@needs_openvino
def test_lowered_synthesis_equals_openvinos_transposed_convolutions(model_dir):
    import io

    from openvino.frontend import FrontEndManager

    fe = FrontEndManager().load_by_framework("onnx")
    graph = open_model_dir(model_dir).graph_bytes("synthesis")
    plain, lowered = (fe.convert(fe.load(io.BytesIO(graph))) for _ in range(2))
    assert OV.lower_transposed_convolutions(lowered) == 4
    types = {op.get_type_name() for op in lowered.get_ordered_ops()}
    assert "ConvolutionBackpropData" not in types and "DepthToSpace" in types
    core = OV.openvino_core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}
    m = plain.input(0).get_partial_shape()[1].get_length()
    y = np.random.default_rng(0).normal(0, 2, (1, m, 5, 7)).astype(np.float32)
    a, b = (core.compile_model(m, "CPU", config)({0: y})[0] for m in (plain, lowered))
    assert a.shape == b.shape == (1, 3, 80, 112)
    np.testing.assert_allclose(b, a, atol=1e-5)


def test_auto_goes_on_to_onnx_runtime_where_openvino_cannot_run(model_dir, monkeypatch):
    """An openvino package that is there but does not import (a broken install)."""
    import builtins

    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name.startswith("openvino"):
            raise ImportError("libopenvino.so: cannot open shared object file")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(OV, "openvino_installed", lambda: True)
    monkeypatch.setattr(builtins, "__import__", no_openvino)
    md = open_model_dir(model_dir)
    assert onnx_codec(md, "auto", 1).networks.backend == "cpu"
    with pytest.raises(BackendError, match=r"installed but cannot run \(libopenvino.so"):
        onnx_codec(md, "openvino", 1)


@needs_openvino
def test_auto_goes_on_where_openvinos_cpu_plugin_fails(model_dir, monkeypatch):
    """A Core that cannot start its CPU plugin: auto runs ONNX Runtime, a named openvino
    says why in one line."""

    def broken():
        raise RuntimeError("Failed to create plugin libopenvino_intel_cpu_plugin.so")

    monkeypatch.setattr(OV, "openvino_core", broken)
    md = open_model_dir(model_dir)
    assert onnx_codec(md, "auto", 1).networks.backend == "cpu"
    with pytest.raises(BackendError, match="cannot run \\(Failed to create plugin"):
        onnx_codec(md, "openvino", 1)
