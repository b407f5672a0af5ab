"""Entropy coding of integer arrays under a :class:`TableSet` with constriction.

Symbols are grouped by table and each group is coded with one categorical model, in table
order: one constriction call per table in use instead of one per symbol.  The decoder
knows every symbol's table before it decodes (from the hyperprior), so it can form the
same groups.  Values outside a table's range are coded as its escape symbol and stored
verbatim in a side array, so nothing is ever clipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import constriction
import numpy as np

from qaft.runtime.entropy.tables import TableSet

_Categorical = constriction.stream.model.Categorical
_RangeEncoder = constriction.stream.queue.RangeEncoder
_RangeDecoder = constriction.stream.queue.RangeDecoder


class DecodeError(ValueError):
    """The compressed data is inconsistent with the tables (corrupt or foreign file)."""


@dataclass(frozen=True)
class CodedArray:
    """One latent's compressed symbols and its escaped values."""

    stream: bytes
    escapes: np.ndarray  # int32, in coding order

    def escapes_bytes(self) -> bytes:
        return self.escapes.astype("<i4").tobytes()

    @property
    def num_bytes(self) -> int:
        return len(self.stream) + 4 * len(self.escapes)


def _groups(table_ids: np.ndarray):
    """Coding order (stable sort by table) and the [start, stop) of each table's group."""
    order = np.argsort(table_ids, kind="stable")
    sorted_ids = table_ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    stops = np.r_[starts[1:], len(sorted_ids)]
    return order, [(int(sorted_ids[a]), int(a), int(b)) for a, b in zip(starts, stops)]


def _model(tables: TableSet, t: int):
    return _Categorical(tables.row(t), perfect=False)


def encode(values: np.ndarray, table_ids: np.ndarray, tables: TableSet) -> CodedArray:
    """Codes integer ``values`` (any shape), each under ``tables`` row ``table_ids``."""
    values = np.asarray(values, dtype=np.int64).ravel()
    table_ids = np.asarray(table_ids, dtype=np.int64).ravel()
    if values.shape != table_ids.shape:
        raise ValueError("values and table_ids differ in size")
    escape_sym = tables.lengths[table_ids].astype(np.int64) - 1
    symbols = values - tables.offsets[table_ids]
    escaped = (symbols < 0) | (symbols >= escape_sym)
    symbols[escaped] = escape_sym[escaped]
    order, groups = _groups(table_ids)
    symbols = symbols[order].astype(np.int32)
    encoder = _RangeEncoder()
    for t, a, b in groups:
        encoder.encode(symbols[a:b], _model(tables, t))
    stream = encoder.get_compressed().astype("<u4").tobytes()
    return CodedArray(stream, values[order][escaped[order]].astype(np.int32))


def decode(
    stream: bytes, escapes: np.ndarray, table_ids: np.ndarray, tables: TableSet
) -> np.ndarray:
    """Inverse of :func:`encode`; returns int32 values shaped like ``table_ids``."""
    if len(stream) % 4:
        raise DecodeError("entropy-coded section is not a whole number of words")
    shape = np.shape(table_ids)
    flat_ids = np.asarray(table_ids, dtype=np.int64).ravel()
    order, groups = _groups(flat_ids)
    words = np.frombuffer(stream, dtype="<u4").astype(np.uint32)
    decoder = _RangeDecoder(words)
    symbols = np.empty(len(flat_ids), dtype=np.int64)
    try:
        for t, a, b in groups:
            symbols[a:b] = decoder.decode(_model(tables, t), b - a)
    except BaseException as exc:  # constriction raises on streams it cannot parse
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise DecodeError(f"entropy decoding failed: {exc}") from None
    sorted_ids = flat_ids[order]
    escape_sym = tables.lengths[sorted_ids].astype(np.int64) - 1
    escaped = symbols == escape_sym
    if int(escaped.sum()) != len(escapes):
        raise DecodeError("escape count does not match the stream")
    values_sorted = symbols + tables.offsets[sorted_ids]
    values_sorted[escaped] = np.asarray(escapes, dtype=np.int64)
    values = np.empty_like(values_sorted)
    values[order] = values_sorted
    return values.astype(np.int32).reshape(shape)
