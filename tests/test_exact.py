"""Exact entropy parameters: the integer hyper-synthesis and decoding across backends,
precisions, thread counts and graph optimizations (docs/exact.md)."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import KODAK, run_cli, synthetic_image

from qaft.runtime import codec as C
from qaft.runtime.backends.onnx import available_backends, onnx_codec
from qaft.runtime.entropy.integer_hyper import (
    ACT_LIMIT,
    SUM_LIMIT,
    WEIGHT_LIMIT,
    IntegerHyperError,
    IntegerHyperSynthesis,
    _conv,
    _deconv,
)
from qaft.runtime.image import load_rgb
from qaft.runtime.model_dir import HYPER, ModelDirError, open_model_dir

# Encoders and decoders of the matrix: (name, backend kind, threads, precision, optimize).
VARIANTS = [
    ("torch", "torch", 0, "fp32", True),
    ("ort-fp32-1t", "ort", 1, "fp32", True),
    ("ort-fp32-2t", "ort", 2, "fp32", True),
    ("ort-fp16-2t", "ort", 2, "fp16", True),
    ("ort-fp32-noopt", "ort", 1, "fp32", False),
]
# OpenVINO where it is installed (an optional extra): fp32, and bf16 where the CPU has it.
if "openvino" in available_backends():
    VARIANTS += [
        ("ov-fp32-1t", "openvino", 1, "fp32", True),
        ("ov-auto-2t", "openvino", 2, "auto", True),
    ]


@pytest.fixture(scope="module")
def zoo_hyper():
    """The bundled q3's integer hyper-synthesis (trained weights: scale levels vary)."""
    from qaft.runtime.zoo import model_path

    return open_model_dir(model_path("q3")).model.hyper


@pytest.fixture(scope="module")
def zoo_torch_codec():
    from qaft.training.backend import codec_from_loaded
    from qaft.training.checkpoint import load_model
    from qaft.training.zoo import model_path

    return codec_from_loaded(load_model(model_path("q3")))


def _reference(hyper: IntegerHyperSynthesis, z: np.ndarray) -> np.ndarray:
    """The whole integer network in int64 (exact integer arithmetic, no BLAS, no float sums):
    an independent implementation to hold the float64 one to."""
    from qaft.runtime.entropy.integer_hyper import ACT_BITS

    a = np.clip(np.rint(z.astype(np.float64) * 2.0**ACT_BITS), -ACT_LIMIT, ACT_LIMIT)
    a = a.astype(np.int64)[0]
    lim = int(ACT_LIMIT)
    for L in hyper.layers:
        w = L.weight.astype(np.int64)
        k, p = w.shape[2], L.padding
        cin, h, wd = a.shape
        if L.kind == "deconv":
            cout = w.shape[1]
            full = np.zeros((cout, 2 * h + k - 1, 2 * wd + k - 1), np.int64)
            for i in range(k):
                for j in range(k):
                    full[:, i : i + 2 * h : 2, j : j + 2 * wd : 2] += np.einsum(
                        "co,chw->ohw", w[:, :, i, j], a
                    )
            acc = full[:, p : p + 2 * h, p : p + 2 * wd]
        else:
            cout = w.shape[0]
            ap = np.pad(a, ((0, 0), (p, p), (p, p)))
            acc = np.zeros((cout, h, wd), np.int64)
            for i in range(k):
                for j in range(k):
                    acc += np.einsum("oc,chw->ohw", w[:, :, i, j], ap[:, i : i + h, j : j + wd])
        acc = acc + L.bias.reshape(-1, 1, 1)
        out = np.empty_like(acc)
        for c in range(cout):  # floor division by a power of two: an arithmetic shift
            e = int(L.shift[c])
            out[c] = acc[c] >> e if e >= 0 else acc[c] << -e
        out = np.clip(out, -lim, lim)
        if L.activation == "relu":
            out = np.maximum(out, 0)
        elif L.activation == "leaky":
            neg = out < 0
            out[neg] = np.floor(out[neg].astype(np.float64) * 0.01).astype(np.int64)
        a = out
    return a


def test_float64_path_equals_an_integer_implementation(zoo_hyper, tiny_codec):
    from qaft.runtime.entropy.integer_hyper import ACT_BITS

    rng = np.random.default_rng(7)
    for hyper, n in ((zoo_hyper, 64), (tiny_codec.model.hyper, 16)):
        z = np.rint(rng.normal(0, 4, (1, n, 3, 2))).astype(np.float32) + np.float32(0.3125)
        scales, means = hyper(z)
        ref = _reference(hyper, z).astype(np.float64) * 2.0**-ACT_BITS
        m = ref.shape[0] // 2
        assert np.array_equal(scales[0], ref[:m].astype(np.float32))
        assert np.array_equal(means[0], ref[m:].astype(np.float32))


def test_blas_threads_do_not_change_a_bit(zoo_hyper, tmp_path):
    """One BLAS thread (another process) against this process's threads."""
    import os
    import subprocess
    import sys

    z = np.rint(np.random.default_rng(2).normal(0, 4, (1, 64, 6, 9))).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    code = (
        "import numpy as np\n"
        "from qaft.runtime.model_dir import open_model_dir\n"
        "from qaft.runtime.zoo import model_path\n"
        "s, m = open_model_dir(model_path('q3')).model.hyper(np.load('z.npy'))\n"
        "np.save('s.npy', s); np.save('m.npy', m)\n"
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True)
    s, m = zoo_hyper(z)
    assert np.array_equal(np.load(tmp_path / "s.npy"), s)
    assert np.array_equal(np.load(tmp_path / "m.npy"), m)


@pytest.mark.parametrize("threads", [1, 2])
def test_onnx_runtime_products_give_numpys_bits(zoo_hyper, threads):
    """The codecs' GEMM (ONNX Runtime's MatMul on its own threads) against NumPy's."""
    from qaft.runtime.backends.products import OrtProducts

    z = np.rint(np.random.default_rng(3).normal(0, 6, (1, 64, 7, 10))).astype(np.float32)
    ours = zoo_hyper.with_products(OrtProducts(threads))(z)
    for a, b in zip(ours, zoo_hyper(z)):
        assert np.array_equal(a, b)


def test_matmul_graph_is_what_onnx_builds():
    """The runtime's constant MatMul graph is the one the onnx package writes."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from qaft.runtime.backends.products import MATMUL_GRAPH

    def value(name, dims):
        return helper.make_tensor_value_info(name, TensorProto.DOUBLE, dims)

    node = helper.make_node("MatMul", ["a", "b"], ["c"])
    graph = helper.make_graph(
        [node], "mm", [value("a", ["m", "k"]), value("b", ["k", "n"])], [value("c", ["m", "n"])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    assert model.SerializeToString() == MATMUL_GRAPH


def test_conversion_enforces_the_bound_on_wide_layers():
    from qaft.runtime.entropy.integer_hyper import FloatLayer, integerize

    w = np.full((2, 4096, 3, 3), 0.5, np.float32)  # fan-in 36,864: 15-bit weights would overflow
    hyper = integerize([FloatLayer("conv", w, np.array([1e6, 0.0], np.float32), 1, 1, False)])
    layer = hyper.layers[0]
    assert layer.worst_sum() < 2.0**52
    assert layer.shift.max() < 15  # stepped down from 15 - frexp exponent of 0.5 (= 15)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_conversion_refuses_non_finite_weights(bad):
    from qaft.runtime.entropy.integer_hyper import FloatLayer, integerize

    w = np.ones((2, 3, 3, 3), np.float32)
    w[0, 0, 0, 0] = bad
    with pytest.raises(IntegerHyperError, match="not finite"):
        integerize([FloatLayer("conv", w, np.zeros(2, np.float32), 1, 1, False)])


@pytest.mark.parametrize(
    "damage, needle",
    [
        ("wide", "outside int16"),
        ("shift", "exponents outside"),
        ("chain", "input channels"),
        ("float", "not an integer array"),
    ],
)
def test_stored_arrays_are_validated(tiny_codec, damage, needle):
    arrays = tiny_codec.model.hyper.to_arrays()
    if damage == "wide":
        arrays["0.weight"] = arrays["0.weight"].astype(np.int32) * 4
    elif damage == "shift":
        arrays["1.shift"] = arrays["1.shift"] + 100
    elif damage == "chain":
        arrays["1.weight"] = arrays["1.weight"][:5]
    else:
        arrays["2.bias"] = arrays["2.bias"].astype(np.float64)
    with pytest.raises(IntegerHyperError, match=needle):
        IntegerHyperSynthesis.from_arrays(arrays)


def _codecs(model_dir, torch_codec):
    md = open_model_dir(model_dir)
    out = {}
    for name, kind, threads, precision, optimize in VARIANTS:
        if kind == "torch":
            out[name] = torch_codec
        else:
            backend = "openvino" if kind == "openvino" else "cpu"
            out[name] = onnx_codec(md, backend, threads, precision, optimize)
    return out


def test_bounds_hold_for_every_layer(tiny_codec):
    for layer in tiny_codec.model.hyper.layers:
        assert layer.worst_sum() < SUM_LIMIT
        assert np.abs(layer.weight.astype(np.int64)).max() <= WEIGHT_LIMIT


def test_conversion_is_close_to_the_float_network(tiny_model_file):
    from qaft.training.checkpoint import load_model

    model = load_model(tiny_model_file).model
    hyper = model.integer_hyper_synthesis()
    z = np.rint(np.random.default_rng(1).normal(0, 4, (2, 16, 3, 5))).astype(np.float32)
    with torch.no_grad():
        ref = model.h_s(torch.from_numpy(z)).numpy()
    ours = np.concatenate(hyper(z), axis=1)
    assert (
        np.abs(ours - ref).max() <= 1e-3 * np.abs(ref).max() + 2.0**-12
    )  # weights rounded to 16 bits


def test_export_stores_the_same_integers_the_pytorch_side_computes(model_dir, tiny_codec):
    stored = open_model_dir(model_dir).model.hyper.to_arrays()
    ours = tiny_codec.model.hyper.to_arrays()
    assert stored.keys() == ours.keys()
    assert all(np.array_equal(stored[k], ours[k]) for k in ours)


def test_sums_are_independent_of_summation_order():
    """Any order of the products (another BLAS, other threads, FMA) gives the same bits:
    the products are summed in shuffled orders and in float32-free pure Python ints."""
    rng = np.random.default_rng(0)
    a = np.rint(rng.uniform(-ACT_LIMIT, ACT_LIMIT, (1, 6, 4, 5)))
    w = np.rint(rng.uniform(-WEIGHT_LIMIT, WEIGHT_LIMIT, (7, 6, 3, 3)))
    ref = _conv(a, w, 1)
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(6)
        assert np.array_equal(_conv(a[:, perm], w[:, perm], 1), ref)
    # Exact integer arithmetic (Python ints) agrees with the float64 result.
    ai, wi = a.astype(np.int64), w.astype(np.int64)
    ap = np.pad(ai[0], ((0, 0), (1, 1), (1, 1)))
    exact = np.zeros((7, 4, 5), dtype=object)
    for o in range(7):
        for y in range(4):
            for x in range(5):
                exact[o, y, x] = int((wi[o] * ap[:, y : y + 3, x : x + 3]).sum())
    assert np.array_equal(ref[0].astype(np.int64), exact.astype(np.int64))
    wd = np.rint(rng.uniform(-WEIGHT_LIMIT, WEIGHT_LIMIT, (6, 4, 5, 5)))
    d1 = _deconv(a, wd, 2)
    d2 = _deconv(a[:, ::-1], wd[::-1], 2)
    assert np.array_equal(d1, d2)


def test_weights_past_the_bound_are_refused(tiny_codec):
    arrays = tiny_codec.model.hyper.to_arrays()
    arrays["0.bias"] = np.full_like(arrays["0.bias"], 2**53)
    with pytest.raises(IntegerHyperError, match="2\\*\\*53"):
        IntegerHyperSynthesis.from_arrays(arrays)


def test_model_folder_without_the_integer_path_is_refused(model_dir, tmp_path):
    bad = tmp_path / "old"
    shutil.copytree(model_dir, bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["version"] = 1
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelDirError, match="predates exact entropy parameters"):
        open_model_dir(bad)
    bad2 = tmp_path / "nohyper"
    shutil.copytree(model_dir, bad2)
    (bad2 / HYPER).unlink()
    with pytest.raises(ModelDirError, match="missing"):
        open_model_dir(bad2)


@pytest.mark.parametrize("quantizer", ["sq", "tcq"])
def test_matrix_of_encoders_and_decoders(zoo_torch_codec, quantizer):
    """Every pair of {PyTorch, ORT fp32 1 and 2 threads, ORT fp16, ORT without graph
    optimizations} on the bundled q3: the decoder recovers exactly the encoder's indices."""
    from qaft.runtime.zoo import model_path

    codecs = _codecs(model_path("q3"), zoo_torch_codec)
    for seed, (h, w) in enumerate([(128, 192), (70, 131)]):
        img = synthetic_image(h, w, 20 + seed)
        streams = {k: C.encode(c, img, quantizer) for k, c in codecs.items()}
        for enc_name, enc in streams.items():
            for dec_name, dec_codec in codecs.items():
                dec = C.decode(dec_codec, enc.data, synthesize=dec_name == "ort-fp16-2t")
                assert np.array_equal(dec.y_indices, enc.y_indices), (enc_name, dec_name)
                assert np.array_equal(dec.z_indices, enc.z_indices), (enc_name, dec_name)
    # the case is not trivial: many scale levels in use, and the encoders' floats differ
    scale_ids = C.latents(codecs["torch"], img).scale_ids
    assert len(np.unique(scale_ids)) > 10


class _Perturbed:
    """Networks whose float outputs are all off by a relative ±1e-3 (fresh noise per call)."""

    def __init__(self, networks, seed: int):
        self.inner, self.rng = networks, np.random.default_rng(seed)

    def _p(self, a):
        return (a * (1 + 1e-3 * self.rng.choice([-1.0, 1.0], a.shape))).astype(np.float32)

    def analysis(self, x):
        return tuple(self._p(a) for a in self.inner.analysis(x))

    def synthesis(self, y_hat):
        return self._p(self.inner.synthesis(y_hat))


class _FloatHyper:
    """The float h_s, the way a learned codec usually picks its tables, perturbed like the
    rest (``seed`` None: unperturbed): the hazard the integer path removes."""

    def __init__(self, model, seed: int | None):
        self.model = model
        self.rng = None if seed is None else np.random.default_rng(seed)

    def __call__(self, z_hat):
        with torch.no_grad():
            out = self.model.h_s(torch.from_numpy(z_hat)).numpy().astype(np.float64)
        if self.rng is not None:
            out *= 1 + 1e-3 * self.rng.choice([-1.0, 1.0], out.shape)
        m = out.shape[1] // 2
        return out[:, :m], out[:, m:].astype(np.float32)


@pytest.mark.parametrize("quantizer", ["sq", "tcq"])
def test_decoder_with_perturbed_float_networks_decodes_every_index(zoo_torch_codec, quantizer):
    codec = zoo_torch_codec
    img = synthetic_image(128, 192, 3)
    enc = C.encode(codec, img, quantizer)
    for seed in range(2):
        shaky = dataclasses.replace(codec, networks=_Perturbed(codec.networks, seed))
        dec = C.decode(shaky, enc.data)
        assert np.array_equal(dec.y_indices, enc.y_indices)
        # and a perturbed encoder writes a file that the clean decoder reads exactly
        enc2 = C.encode(shaky, img, quantizer)
        assert np.array_equal(C.decode(codec, enc2.data).y_indices, enc2.y_indices)


def test_the_same_harness_catches_tables_chosen_by_a_float_network(zoo_torch_codec):
    """The check above can fail: with the tables chosen by the float h_s (how learned codecs
    usually work) and that network perturbed the same way on the decoder's side, scale levels
    flip and the decoder loses the indices."""
    model = zoo_torch_codec.networks.model
    encoder = dataclasses.replace(
        zoo_torch_codec,
        model=dataclasses.replace(zoo_torch_codec.model, hyper=_FloatHyper(model, None)),
    )
    img = synthetic_image(256, 384, 4)
    enc = C.encode(encoder, img, "sq")
    lost = 0
    for seed in range(3):
        decoder = dataclasses.replace(
            encoder, model=dataclasses.replace(encoder.model, hyper=_FloatHyper(model, seed))
        )
        try:
            dec = C.decode(decoder, enc.data)
            lost += int(not np.array_equal(dec.y_indices, enc.y_indices))
        except C.QaftError:
            lost += 1
    assert lost > 0


def test_fp16_encode_fp32_decode_through_the_cli(model_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    from PIL import Image

    Image.fromarray(synthetic_image(80, 120, 9)).save(src / "a.png")
    r = run_cli("qaft-run", "compress", str(src), "--model", str(model_dir), "--out",
                str(tmp_path / "c"), "--precision", "fp16", "--quantizer", "tcq")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run_cli("qaft-run", "decompress", str(tmp_path / "c"), "--model", str(model_dir),
                "--out", str(tmp_path / "d"), "--precision", "fp32")  # fmt: skip
    assert r.returncode == 0, r.stderr
    md = open_model_dir(model_dir)
    c16, c32 = onnx_codec(md, "cpu", 1, "fp16"), onnx_codec(md, "cpu", 1, "fp32")
    data = (tmp_path / "c" / "a.qaft").read_bytes()
    enc = C.encode(c16, load_rgb(src / "a.png"), "tcq")
    assert enc.data == data  # the CLI wrote what the API writes
    assert np.array_equal(C.decode(c32, data).y_indices, enc.y_indices)
    out = load_rgb(tmp_path / "d" / "a.png")
    assert out.shape == (80, 120, 3)


def test_fp16_precision_needs_fp16_graphs(model_dir, tmp_path):
    bare = tmp_path / "fp32only"
    shutil.copytree(model_dir, bare)
    m = json.loads((bare / "manifest.json").read_text())
    for f in ("analysis_fp16.onnx", "synthesis_fp16.onnx"):
        del m["files"][f]
        (bare / f).unlink()
    (bare / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelDirError, match="no fp16 graphs"):
        onnx_codec(open_model_dir(bare), "cpu", 1, "fp16")


@pytest.mark.skipif(not KODAK.is_dir(), reason="needs ../shared/data/kodak")
@pytest.mark.parametrize("quantizer", ["sq", "tcq"])
def test_zoo_model_on_kodak_across_backends(quantizer):
    """The CI subset of benchmarks/exact_matrix.py: a bundled model, two Kodak images."""
    from qaft.runtime.zoo import model_path
    from qaft.training.backend import codec_from_loaded
    from qaft.training.checkpoint import load_model
    from qaft.training.zoo import model_path as ckpt_path

    torch_codec = codec_from_loaded(load_model(ckpt_path("q3")))
    codecs = _codecs(model_path("q3"), torch_codec)
    for name in ("kodim04.png", "kodim23.png"):
        img = load_rgb(KODAK / name)
        streams = {k: C.encode(c, img, quantizer) for k, c in codecs.items()}
        for enc_name, enc in streams.items():
            for dec_name, dec_codec in codecs.items():
                dec = C.decode(dec_codec, enc.data, synthesize=dec_name == "ort-fp32-2t")
                assert np.array_equal(dec.y_indices, enc.y_indices), (enc_name, dec_name)


def test_tiles_give_the_whole_frame_bit_for_bit(zoo_hyper, monkeypatch):
    """Large images run the integer path in tiles of ẑ (bounded memory)."""
    import qaft.runtime.entropy.integer_hyper as IH

    z = np.rint(np.random.default_rng(3).normal(0, 3, (1, 64, 13, 11))).astype(np.float32)
    monkeypatch.setattr(IH, "TILE_BYTES", 1 << 40)
    whole = zoo_hyper(z)
    per_pixel = 8 * 96 * 25 * 16  # bytes of im2col per ẑ pixel for N=64, M=96
    for side in (5, 6, 9):  # tiles of 1, 2 and 5 ẑ rows and columns plus the halo
        monkeypatch.setattr(IH, "TILE_BYTES", side * side * per_pixel)
        th, tw = zoo_hyper.tile_shape(13, 11)
        assert th < 13 and tw < 11
        tiled = zoo_hyper(z)
        assert all(np.array_equal(a, b) for a, b in zip(whole, tiled)), side
    assert zoo_hyper.tile_shape(1, 1 << 20)[1] < 1 << 20  # a very wide image is cut too
