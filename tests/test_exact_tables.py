"""No floating-point library call decides a table at decode time.

The tables of ``sq``, ``rdoq`` and z are stored with the model; the trellis quantizers'
tables of container version 3 are derived for the file's step with
:mod:`qaft.runtime.entropy.exact_math` (correctly rounded IEEE operations only).  Proof:
the decoder, run with every transcendental function it could call perturbed by a relative
1e-9 (at the Python level, and at the C library level through an ``LD_PRELOAD`` shim),
builds the same tables bit for bit and decodes every golden stream to its encoder's
indices; the same harness changes the libm tables of version 2 (so it can fail).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import index_digest

from qaft.runtime import codec as C
from qaft.runtime.backends.onnx import onnx_codec
from qaft.runtime.entropy import exact_math as E
from qaft.runtime.entropy.calibration import Calibration
from qaft.runtime.entropy.tables import SCALE_TABLE
from qaft.runtime.model_dir import open_model_dir
from qaft.runtime.quantizers import QUANTIZERS, quantizer_for_file
from qaft.runtime.quantizers import trellis as T
from qaft.runtime.zoo import model_path

TESTS = Path(__file__).parent
GOLDEN = TESTS / "fixtures" / "golden"
META = json.loads((GOLDEN / "golden.json").read_text())
TRELLIS = ("tcq", "tcq8")
PERTURBATION = 1e-9

#: Every transcendental function of ``math`` and NumPy a decoder could reach (those this
#: Python and NumPy have).  sqrt is not among them: IEEE 754 rounds it correctly.
MATH_FUNCTIONS = (
    "exp exp2 expm1 log log2 log10 log1p pow erf erfc gamma lgamma cbrt sin cos tan asin "
    "acos atan atan2 sinh cosh tanh asinh acosh atanh"
).split()
NUMPY_FUNCTIONS = (
    "exp exp2 expm1 log log2 log10 log1p power float_power cbrt sin cos tan arcsin arccos "
    "arctan arctan2 sinh cosh tanh arcsinh arccosh arctanh logaddexp logaddexp2"
).split()


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name} {a.dtype.str} {a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def observe() -> dict[str, str]:
    """What a fresh decoder derives and decodes, as digests: each golden stream's model's
    stored tables, its trellis tables for the stream's step (exact, and the libm tables of
    version 2), and the indices of every golden stream but the version-2 trellis ones
    (whose tables are libm's by definition).  Run by this process and by subprocesses."""
    out: dict[str, str] = {}
    codecs = {}
    for s in META["streams"]:
        model = s["model"]
        if model not in codecs:  # opened here: no table derived before the harness is on
            codecs[model] = onnx_codec(open_model_dir(model_path(model)), "cpu", threads=1)
        codec = codecs[model]
        out[f"{model} stored tables"] = _digest(codec.model.tables.to_arrays())
        if s["quantizer"] in TRELLIS:
            for exact in (True, False):
                t = T.tcq_tables(
                    codec.model.tables.scale_table,
                    s["step"],
                    codec.model.tables.calibration,
                    exact=exact,
                )
                kind = "exact" if exact else "libm"
                out[f"{model} step {s['step']!r} {kind}"] = _digest(t.to_arrays(""))
        if s["quantizer"] in TRELLIS and s["format_version"] == 2:
            continue
        dec = C.decode(codec, (GOLDEN / s["file"]).read_bytes(), synthesize=False)
        out[f"{s['file']} y"] = index_digest(dec.y_indices)
        out[f"{s['file']} z"] = index_digest(dec.z_indices)
    return out


def _expected_indices() -> dict[str, str]:
    return {
        f"{s['file']} {part}": s[f"{part}_indices"]
        for s in META["streams"]
        if not (s["quantizer"] in TRELLIS and s["format_version"] == 2)
        for part in ("y", "z")
    }


def _check_against_clean(clean: dict[str, str], noisy: dict[str, str]) -> None:
    """Everything exact agrees; every libm table changed; the indices are the encoder's."""
    libm = [k for k in clean if k.endswith(" libm")]
    exact = [k for k in clean if not k.endswith(" libm")]
    assert libm and len(exact) > len(libm)
    assert {k: noisy[k] for k in exact} == {k: clean[k] for k in exact}
    assert all(noisy[k] != clean[k] for k in libm), "the perturbation did not reach libm"
    expected = _expected_indices()
    assert {k: noisy[k] for k in expected} == expected


@contextmanager
def perturbed_transcendentals(monkeypatch):
    """Every transcendental function of ``math`` and NumPy, and any alias of one a qaft
    module holds, returns its result times (1 + 1e-9); yields a dict counting calls."""
    calls = {"n": 0}

    def wrap(fn):
        def noisy(*args, **kwargs):
            calls["n"] += 1
            r = fn(*args, **kwargs)
            if isinstance(r, float) or np.issubdtype(np.asarray(r).dtype, np.floating):
                return r * (1.0 + PERTURBATION)
            return r

        return noisy

    originals = {}
    with monkeypatch.context() as m:
        for module, names in ((math, MATH_FUNCTIONS), (np, NUMPY_FUNCTIONS)):
            for name in names:
                if hasattr(module, name):
                    fn = getattr(module, name)
                    originals[id(fn)] = wrap(fn)
                    m.setattr(module, name, originals[id(fn)])
        for mod_name, mod in list(sys.modules.items()):
            if mod_name.startswith("qaft.") and mod is not None:
                for attr, value in list(vars(mod).items()):
                    if id(value) in originals:
                        m.setattr(mod, attr, originals[id(value)])
        yield calls


def test_perturbed_math_changes_no_table_and_no_index(monkeypatch):
    clean = observe()
    with perturbed_transcendentals(monkeypatch) as calls:
        noisy = observe()
    assert calls["n"] > 0
    _check_against_clean(clean, noisy)


SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#define P (1.0 + 1e-9)
#define ONE(name) double name(double x) { \
    static double (*f)(double); if (!f) f = (double (*)(double))dlsym(RTLD_NEXT, #name); \
    return f(x) * P; }
ONE(exp) ONE(exp2) ONE(expm1) ONE(log) ONE(log2) ONE(log10) ONE(log1p) ONE(erf) ONE(erfc)
ONE(tgamma) ONE(lgamma) ONE(sin) ONE(cos) ONE(tan) ONE(tanh) ONE(atan) ONE(cbrt)
/* pow as well: Python's float ** calls it, so no constant of the decoder may use ** */
double pow(double x, double y) {
    static double (*f)(double, double);
    if (!f) f = (double (*)(double, double))dlsym(RTLD_NEXT, "pow");
    return f(x, y) * P;
}
"""


def _observe_in_subprocess(env: dict[str, str]) -> dict[str, str]:
    code = "import json, sys; from test_exact_tables import observe; print(json.dumps(observe()))"
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=TESTS,
        env={**env, "PYTHONPATH": str(TESTS)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")
def test_perturbed_libm_changes_no_table_and_no_index(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the libm shim with")
    src, lib = tmp_path / "shim.c", tmp_path / "libshim.so"
    src.write_text(SHIM)
    build = subprocess.run(
        [cc, "-O2", "-shared", "-fPIC", str(src), "-o", str(lib), "-ldl"], capture_output=True
    )
    if build.returncode:
        pytest.skip(f"the libm shim does not build here: {build.stderr.decode()[-300:]}")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    clean = _observe_in_subprocess(env)
    noisy = _observe_in_subprocess({**env, "LD_PRELOAD": str(lib)})
    _check_against_clean(clean, noisy)


# --- the functions themselves ----------------------------------------------------------


def test_constants_are_the_nearest_doubles():
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 50
    assert E.SQRT2 == float(mp.sqrt(2)) == math.sqrt(2.0)
    assert E.INV_SQRT_PI == float(1 / mp.sqrt(mp.pi))
    assert E.TWO_OVER_SQRT_PI == float(2 / mp.sqrt(mp.pi))
    assert E.INV_LN2 == float(1 / mp.log(2))
    assert abs(mp.mpf(E.LN2_HI) + mp.mpf(E.LN2_LO) - mp.log(2)) < mp.mpf(2) ** -80
    # LN2_HI's low bits are zero, so n·LN2_HI is exact for the reduction's every n
    hi = int.from_bytes(np.float64(E.LN2_HI).tobytes(), "little")
    assert hi & ((1 << 20) - 1) == 0


def test_exp_and_erfc_agree_with_mpmath():
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 40
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.uniform(-6, 6, 1500),
            rng.uniform(-26, 26, 500),
            np.linspace(-1.6, 1.6, 161),  # around the switch from series to fraction
            [0.0, -0.0, E.SERIES_LIMIT, -E.SERIES_LIMIT, np.nextafter(E.SERIES_LIMIT, 0)],
            [25.9, -25.9, 1e-300, -1e-300, 5e-324],
        ]
    )
    got = E.erfc(x)
    for xi, gi in zip(x.tolist(), got.tolist(), strict=True):
        ref = mp.erfc(mp.mpf(xi))
        assert abs(mp.mpf(gi) - ref) <= 1e-13 * ref, xi
    assert E.erfc(np.array([np.inf, -np.inf, 27.0, -27.0, 1e300])).tolist() == [0, 2, 0, 2, 0]

    t = np.concatenate([rng.uniform(-700, 0, 1500), rng.uniform(-1, 1, 500), [0.0, -700.0]])
    got = E.exp(t)
    for ti, gi in zip(t.tolist(), got.tolist(), strict=True):
        ref = mp.exp(mp.mpf(ti))
        assert abs(mp.mpf(gi) - ref) <= 4e-16 * ref, ti
    assert E.exp(np.array([-np.inf, -701.0, -1e300])).tolist() == [0, 0, 0]


def test_exact_tables_stay_within_rounding_of_the_libm_tables():
    cal = Calibration(np.linspace(0.5, 1.8, len(SCALE_TABLE)), np.linspace(0, 1, len(SCALE_TABLE)))
    for delta in (1 / 16, 0.55, 0.7, 16.0):
        for c in (None, cal):
            exact = T.tcq_tables(SCALE_TABLE, delta, c)
            libm = T.tcq_tables(SCALE_TABLE, delta, c, exact=False)
            np.testing.assert_array_equal(exact.lengths, libm.lengths)
            np.testing.assert_array_equal(exact.offsets, libm.offsets)
            np.testing.assert_allclose(exact.pmfs, libm.pmfs, rtol=0, atol=1e-13)


#: A scale table and a calibration built without libm (SCALE_TABLE comes from np.exp), so
#: that the digests below hold on every machine and whatever models the zoo holds.
#: (Written out rather than np.linspace, whose arithmetic a NumPy version may change.)
_STEPS = np.arange(64, dtype=np.float64)
EXACT_SCALES = E.exp(-2.25 + _STEPS * (7.75 / 63))
EXACT_CALIBRATION = Calibration(0.5 + _STEPS * (1.3 / 63), _STEPS / 63)
#: SHA-256 of exact tables, computed once: another machine (CPU, libm, NumPy) must derive
#: the very same bits.
EXACT_TABLE_DIGESTS = {
    (0.55, False): "ccf8a9930bac8678815ff5b4e5aec8cce01c8a1dcc2a9ece47db3c2c0e6efeff",
    (0.65, True): "e91ee08b5dafb18350986828236d28ae083dfa6ea2f40edd762365d667fddc48",
    (1 / 16, True): "855fd73a3d7e36a6c90a0dd1ed9dbdd114ed155d0f0d75f1118a6652193d33bd",
}


@pytest.mark.parametrize("delta,calibrated", list(EXACT_TABLE_DIGESTS), ids=str)
def test_exact_tables_have_the_same_bits_on_every_machine(delta, calibrated):
    cal = EXACT_CALIBRATION if calibrated else None
    t = T.tcq_tables(EXACT_SCALES, float(np.float32(delta)), cal)
    assert _digest(t.to_arrays("")) == EXACT_TABLE_DIGESTS[(delta, calibrated)]


def test_each_container_version_reads_trellis_files_with_its_tables():
    for name in TRELLIS:
        q = QUANTIZERS[name]
        assert q.exact and q.format_version == 3
        assert quantizer_for_file(q.id, 3) is q
        assert not quantizer_for_file(q.id, 2).exact
    for name in ("sq", "rdoq"):  # stored tables: written as 2, read alike as 2 or 3
        q = QUANTIZERS[name]
        assert q.format_version == 2
        assert quantizer_for_file(q.id, 2) is q is quantizer_for_file(q.id, 3)
