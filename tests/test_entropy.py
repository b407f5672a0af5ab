"""Probability tables and the range coder."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qaft.runtime.entropy import SCALE_TABLE, TableSet, decode, encode, gaussian_tables
from qaft.runtime.entropy.coder import DecodeError
from qaft.runtime.entropy.tables import scale_to_id


def test_gaussian_tables_are_normalized_and_centered():
    t = gaussian_tables()
    assert t.num_tables == len(SCALE_TABLE)
    for i in range(t.num_tables):
        row = t.row(i)
        assert row.sum() == pytest.approx(1.0, abs=2e-6)
        in_range = row[:-1]
        assert np.argmax(in_range) + t.offsets[i] == 0  # mode at zero
        assert np.allclose(in_range, in_range[::-1])  # symmetric


def test_scale_to_id_picks_smallest_scale_not_below():
    lv = scale_to_id(np.array([0.0, 0.11, 0.1101, 1.0, 255.0, 1e6]))
    assert lv[0] == 0 and lv[1] == 0 and lv[2] == 1
    assert SCALE_TABLE[lv[3]] >= 1.0 > SCALE_TABLE[lv[3] - 1]
    assert lv[-1] == len(SCALE_TABLE) - 1


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 3000), spread=st.floats(0.1, 200))
def test_roundtrip_random_values_with_escapes(seed, n, spread):
    rng = np.random.default_rng(seed)
    tables = gaussian_tables()
    ids = rng.integers(0, tables.num_tables, n)
    values = np.rint(rng.normal(0, spread, n)).astype(np.int32)
    values[rng.random(n) < 0.01] = rng.integers(-(2**30), 2**30)  # far outside any table
    coded = encode(values, ids, tables)
    assert np.array_equal(decode(coded.stream, coded.escapes, ids, tables), values)


def test_values_beyond_table_are_escaped_not_clipped():
    tables = TableSet.from_rows([np.array([0.25, 0.5, 0.25])], [-1])
    values = np.array([-1, 0, 1, 5, -7, 0], dtype=np.int32)
    ids = np.zeros(6, dtype=np.int32)
    coded = encode(values, ids, tables)
    assert list(coded.escapes) == [5, -7]
    assert np.array_equal(decode(coded.stream, coded.escapes, ids, tables), values)


def test_rate_matches_entropy():
    rng = np.random.default_rng(0)
    tables = gaussian_tables()
    level = 30
    s = SCALE_TABLE[level]
    values = np.rint(rng.normal(0, s, 200_000)).astype(np.int32)
    coded = encode(values, np.full(values.shape, level), tables)
    row = tables.row(level)
    ideal = -np.log2(row[values - tables.offsets[level]]).sum() / 8
    assert len(coded.stream) == pytest.approx(ideal, rel=0.01)


def test_garbage_stream_is_an_error_or_wrong_values_never_a_crash():
    tables = gaussian_tables()
    ids = np.full(100, 10)
    with pytest.raises(DecodeError):
        decode(b"abc", np.zeros(0, np.int32), ids, tables)
