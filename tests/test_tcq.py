"""Trellis-coded quantization: optimality of the search, and lossless round trips."""

import itertools

import numpy as np
import pytest
from conftest import synthetic_image
from hypothesis import given, settings
from hypothesis import strategies as st

from qaft.runtime import codec as C
from qaft.runtime.entropy.tables import SCALE_TABLE
from qaft.runtime.quantizers import QUANTIZER_NAMES, QUANTIZERS, Prior, QuantizerParams
from qaft.runtime.quantizers import trellis as T
from qaft.runtime.quantizers.reference import path_cost, viterbi_reference

L = len(SCALE_TABLE)


def _problem(seed, b, t, step):
    rng = np.random.default_rng(seed)
    scales = np.exp(rng.uniform(np.log(0.11), np.log(20), (b, t)))
    u = rng.normal(0, 1, (b, t)) * scales / step
    lev = np.searchsorted(SCALE_TABLE[:-1], scales).astype(np.int64)
    tables = T.tcq_tables(SCALE_TABLE, step)
    scale = step * np.sqrt(rng.uniform(0.2, 5.0, (b, t)))  # per-latent distortion weights
    return u, lev, scale, tables, T.bits_lookup(tables)


def _ref_args(machine, tables):
    return (
        machine.next.astype(np.int64),
        machine.quantizer.astype(np.int64),
        tables.offsets.astype(np.int64),
        tables.lengths.astype(np.int64),
        tables.pmfs,
        L,
        T.ESCAPE_EXTRA_BITS,
    )


def test_state_machines_are_as_specified():
    assert T.VVC4.next.tolist() == [[0, 2], [2, 0], [1, 3], [3, 1]]
    assert T.VVC4.quantizer.tolist() == [0, 0, 1, 1]
    for m in (T.VVC4, T.VVC8):
        m.incoming()  # two incoming edges per state


def test_reconstruction_levels():
    k = np.arange(-3, 4)
    assert T.reconstruction(k, 0).tolist() == [-6, -4, -2, 0, 2, 4, 6]
    assert T.reconstruction(k, 1).tolist() == [-5, -3, -1, 0, 1, 3, 5]


@pytest.mark.parametrize("machine", [T.VVC4, T.VVC8], ids=["tcq", "tcq8"])
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    t=st.integers(1, 6),
    lam=st.floats(0.0, 1.0),
    step=st.floats(0.3, 1.0),
)
def test_viterbi_matches_exhaustive_search(machine, seed, t, lam, step):
    """Every path through the candidate sets, enumerated: Viterbi's cost is the minimum."""
    u, lev, scale, tables, bits = _problem(seed, 1, t, step)
    cost, index = T.parity_costs(u, lev, scale, lam, tables, bits, L)
    k = T.viterbi(cost, index, machine)
    args = _ref_args(machine, tables)
    best = np.inf
    # Candidate sets depend on the quantizer, hence on the path: enumerate choices 0..2.
    for choice in itertools.product(range(3), repeat=t):
        s, path = 0, []
        for j, c in enumerate(choice):
            kk = int(T.candidates(u[0, j : j + 1], int(machine.quantizer[s]))[c, 0])
            path.append(kk)
            s = machine.next[s, kk & 1]
        best = min(best, path_cost(np.array([path]), u, lev, scale, lam, *args)[0])
    ours = path_cost(k, u, lev, scale, lam, *args)[0]
    assert ours == pytest.approx(best, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("machine", [T.VVC4, T.VVC8], ids=["tcq", "tcq8"])
@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    b=st.integers(1, 12),
    t=st.integers(1, 30),
    lam=st.floats(0.0, 2.0),
    step=st.floats(0.3, 1.2),
)
def test_vectorized_search_equals_scalar_loop_reference(machine, seed, b, t, lam, step):
    u, lev, scale, tables, bits = _problem(seed, b, t, step)
    cost, index = T.parity_costs(u, lev, scale, lam, tables, bits, L)
    ours = T.viterbi(cost, index, machine)
    ref = viterbi_reference(u, lev, scale, lam, *_ref_args(machine, tables))
    np.testing.assert_array_equal(ours, ref)


def test_tcq_tables_are_normalized():
    tables = T.tcq_tables(SCALE_TABLE, 0.6)
    assert tables.num_tables == 2 * L
    for t in range(tables.num_tables):
        assert tables.row(t).sum() == pytest.approx(1.0, abs=2e-6)


@pytest.mark.parametrize("quantizer", ["sq", "rdoq", "tcq", "tcq8"])
@pytest.mark.parametrize("shape", [(64, 64), (70, 131), (1, 1)])
def test_every_quantizer_round_trips(tiny_codec, quantizer, shape):
    img = synthetic_image(*shape, seed=3)
    enc = C.encode(tiny_codec, img, quantizer, reconstruct=True)
    dec = C.decode(tiny_codec, enc.data)
    assert dec.header.quantizer_id == {"sq": 0, "rdoq": 1, "tcq": 2, "tcq8": 3}[quantizer]
    np.testing.assert_array_equal(dec.y_indices, enc.y_indices)
    np.testing.assert_array_equal(dec.image, enc.reconstruction)


def test_tcq_step_travels_in_the_header(tiny_codec):
    img = synthetic_image(64, 64)
    enc = C.encode(tiny_codec, img, "tcq", QuantizerParams(0.37, 0.05), reconstruct=True)
    dec = C.decode(tiny_codec, enc.data)
    assert dec.header.step == pytest.approx(0.37)
    np.testing.assert_array_equal(dec.image, enc.reconstruction)


def test_indices_far_outside_tables_are_escaped(tiny_codec):
    """A latent far beyond its table's range still round-trips exactly."""
    from qaft.runtime.quantizers.base import encode_latent

    rng = np.random.default_rng(0)
    y = rng.normal(0, 1, (1, 24, 2, 5)).astype(np.float32)
    y[0, 0, 0, 0] = 5000.0
    prior = Prior(np.zeros_like(y), np.zeros(y.shape, dtype=np.int32), tiny_codec.model.tables)
    for name in ("sq", "rdoq", "tcq", "tcq8"):
        q = QUANTIZERS[name]
        params = tiny_codec.model.params(name)
        lat = encode_latent(q, y, prior, params)
        idx, y_hat = q.decode(lat.sections, prior, C.header_delta(q, params))
        np.testing.assert_array_equal(idx, lat.indices)
        np.testing.assert_array_equal(y_hat, lat.y_hat)
        assert abs(y_hat[0, 0, 0, 0] - 5000) < 2


def test_registry_ids_and_names_are_unique_and_fixed():
    ids = [q.id for q in QUANTIZERS.values()]
    assert len(set(ids)) == len(ids) and all(0 <= i < 256 for i in ids)
    # the ids are part of the format (docs/bitstream.md): they never change
    assert {n: q.id for n, q in QUANTIZERS.items()} == {"sq": 0, "rdoq": 1, "tcq": 2, "tcq8": 3}
    assert all(QUANTIZERS[QUANTIZER_NAMES[q.id]] is q for q in QUANTIZERS.values())
    assert all(name == q.name for name, q in QUANTIZERS.items())


@pytest.mark.parametrize("name", list(QUANTIZERS))
def test_every_quantizer_has_valid_fallback_and_grid(name):
    from qaft.runtime.quantizers.base import DELTA_RANGE

    q = QUANTIZERS[name]
    assert isinstance(q.fallback, QuantizerParams)
    assert q.uses_delta or q.fallback.delta == 1.0  # files of such quantizers record Δ = 1
    points = list(q.grid)
    assert points and all(DELTA_RANGE[0] <= p.delta <= DELTA_RANGE[1] for p in points)
    assert q.uses_delta or {p.delta for p in points} == {1.0}
    assert q.grid.tunable == (len(points) > 1)


@pytest.mark.parametrize("name", list(QUANTIZERS))
@pytest.mark.parametrize("delta", [0.6, 1.0])
def test_decision_intervals_contain_each_reconstruction(tiny_codec, name, delta):
    """The interval whose mass is an index's rate holds the value the decoder rebuilds: the
    stage-2 rate term integrates over the right bins (batch of 2: one trellis per row)."""
    q = QUANTIZERS[name]
    rng = np.random.default_rng(1)
    y = rng.normal(0, 3, (2, 24, 3, 7)).astype(np.float32)
    prior = Prior(np.zeros_like(y), np.full(y.shape, 20, dtype=np.int32), tiny_codec.model.tables)
    idx, y_hat = q.quantize(y, prior, QuantizerParams(delta, 0.1))
    lo, hi = q.decision_intervals(idx, delta)
    rec = q.offsets(idx, delta)
    assert lo.shape == hi.shape == rec.shape == idx.shape
    np.testing.assert_allclose(rec, y_hat, atol=1e-5)
    assert np.all(lo < rec) and np.all(rec < hi)
    if not q.uses_delta:
        np.testing.assert_array_equal(hi - lo, 1.0)
