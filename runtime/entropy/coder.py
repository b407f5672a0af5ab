"""Entropy coding of integer arrays under a :class:`TableSet` with constriction.

Symbols are grouped by table and each group is coded with one categorical model, in table
order: one constriction call per table in use instead of one per symbol.  The decoder
knows every symbol's table before it decodes (from the hyperprior, and for trellis-coded
quantization from the symbols before it), so it forms the same groups.  An
:class:`Encoder` may receive several batches (one per trellis step, say); the
:class:`Decoder` must then be asked for the same batches in the same order.  Values outside
a table's range are coded as its escape symbol and stored verbatim in a side array, so
nothing is ever clipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import constriction
import numpy as np

from qaft.runtime.entropy.tables import TableSet
from qaft.runtime.errors import FormatError, QaftError

_Categorical = constriction.stream.model.Categorical
_RangeEncoder = constriction.stream.queue.RangeEncoder
_RangeDecoder = constriction.stream.queue.RangeDecoder


class DecodeError(QaftError):
    """The compressed data is inconsistent with the tables (corrupt or foreign file)."""


@dataclass(frozen=True)
class CodedArray:
    """One latent's compressed symbols and its escaped values."""

    stream: bytes
    escapes: np.ndarray  # int32, in coding order

    def escapes_bytes(self) -> bytes:
        return self.escapes.astype("<i4").tobytes()


def _groups(table_ids: np.ndarray):
    """Coding order (stable sort by table) and (table, start, stop) of each group."""
    order = np.argsort(table_ids, kind="stable")
    sorted_ids = table_ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    stops = np.r_[starts[1:], len(sorted_ids)]
    return order, sorted_ids, [(int(sorted_ids[a]), int(a), int(b)) for a, b in zip(starts, stops)]


class _Models:
    """constriction models built once per table and reused across batches."""

    def __init__(self, tables: TableSet):
        self.tables = tables
        self._cache: dict[int, object] = {}

    def __getitem__(self, t: int):
        m = self._cache.get(t)
        if m is None:
            m = self._cache[t] = _Categorical(self.tables.row(t), perfect=False)
        return m


class Encoder:
    """Accumulates batches of (value, table) pairs into one range-coded stream."""

    def __init__(self, tables: TableSet):
        self.tables = tables
        self._models = _Models(tables)
        self._coder = _RangeEncoder()
        self._escapes: list[np.ndarray] = []

    def encode(self, values: np.ndarray, table_ids: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.int64).ravel()
        table_ids = np.asarray(table_ids, dtype=np.int64).ravel()
        if values.shape != table_ids.shape:
            raise FormatError("values and table_ids differ in size")
        order, sorted_ids, groups = _groups(table_ids)
        values = values[order]
        escape_sym = self.tables.lengths[sorted_ids].astype(np.int64) - 1
        symbols = values - self.tables.offsets[sorted_ids]
        escaped = (symbols < 0) | (symbols >= escape_sym)
        symbols[escaped] = escape_sym[escaped]
        symbols = symbols.astype(np.int32)
        for t, a, b in groups:
            self._coder.encode(symbols[a:b], self._models[t])
        self._escapes.append(values[escaped].astype(np.int32))

    def finish(self) -> CodedArray:
        stream = self._coder.get_compressed().astype("<u4").tobytes()
        esc = np.concatenate(self._escapes) if self._escapes else np.zeros(0, np.int32)
        return CodedArray(stream, esc)


class Decoder:
    """Reads back what an :class:`Encoder` wrote, batch by batch."""

    def __init__(self, stream: bytes, escapes: np.ndarray, tables: TableSet):
        if len(stream) % 4:
            raise DecodeError("entropy-coded section is not a whole number of words")
        self.tables = tables
        self._models = _Models(tables)
        self._coder = _RangeDecoder(np.frombuffer(stream, dtype="<u4").astype(np.uint32))
        self._escapes = np.asarray(escapes, dtype=np.int64)
        self._used = 0

    def decode(self, table_ids: np.ndarray) -> np.ndarray:
        """Values (int32, shaped like ``table_ids``) of the next batch."""
        shape = np.shape(table_ids)
        flat = np.asarray(table_ids, dtype=np.int64).ravel()
        order, sorted_ids, groups = _groups(flat)
        symbols = np.empty(len(flat), dtype=np.int64)
        try:
            for t, a, b in groups:
                symbols[a:b] = self._coder.decode(self._models[t], b - a)
        except (ValueError, RuntimeError, AssertionError, OverflowError) as exc:
            raise DecodeError(f"entropy decoding failed: {exc}") from None
        escape_sym = self.tables.lengths[sorted_ids].astype(np.int64) - 1
        escaped = symbols == escape_sym
        n_esc = int(escaped.sum())
        if self._used + n_esc > len(self._escapes):
            raise DecodeError("the stream has more escapes than its escape section")
        values_sorted = symbols + self.tables.offsets[sorted_ids]
        values_sorted[escaped] = self._escapes[self._used : self._used + n_esc]
        self._used += n_esc
        values = np.empty_like(values_sorted)
        values[order] = values_sorted
        return values.astype(np.int32).reshape(shape)

    def finish(self) -> None:
        """Checks that every escaped value and every word of the stream was consumed."""
        if self._used != len(self._escapes):
            raise DecodeError("escape count does not match the stream")
        # A valid stream is always exhausted once its last symbol is read; data left over
        # means a stream that does not belong to the declared image.
        if not self._coder.maybe_exhausted():
            raise DecodeError("the entropy-coded data does not end with the image it declares")


def min_bits_per_table(tables: TableSet) -> np.ndarray:
    """Fewest bits any symbol coded under each table costs: −log2 of its largest probability.

    A range coder writes at least the information content of what it codes (less under a
    word of rounding), so these bound from below the size of any stream: a decoder can
    refuse data too short for the symbols it is asked for before doing their work."""
    valid = np.arange(tables.pmfs.shape[1]) < tables.lengths[:, None]
    pmax = np.where(valid, tables.pmfs, 0.0).max(axis=1)
    return -np.log2(np.clip(pmax, 1e-300, 1.0))


def scale_id_counts(scale_ids: np.ndarray, n: int) -> np.ndarray:
    """How many latents use each of ``n`` scale ids (no array the size of ``scale_ids``)."""
    return np.bincount(np.asarray(scale_ids).ravel(), minlength=n)[:n]


def encode(values: np.ndarray, table_ids: np.ndarray, tables: TableSet) -> CodedArray:
    """Codes integer ``values`` (any shape), each under ``tables`` row ``table_ids``."""
    enc = Encoder(tables)
    enc.encode(values, table_ids)
    return enc.finish()


def decode(
    stream: bytes, escapes: np.ndarray, table_ids: np.ndarray, tables: TableSet
) -> np.ndarray:
    """Inverse of :func:`encode`; returns int32 values shaped like ``table_ids``."""
    dec = Decoder(stream, escapes, tables)
    values = dec.decode(table_ids)
    dec.finish()
    return values
