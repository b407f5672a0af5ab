"""Trellis-coded (dependent) quantization as in VVC, vectorized over many trellises.

Two scalar quantizers share a step Δ: ``Q0`` reconstructs index k as 2kΔ, ``Q1`` as
(2k − sgn k)Δ.  A state machine, advanced by the parity of each index, picks the quantizer
of the next latent.  The encoder chooses all indices of a trellis jointly by a Viterbi
search minimizing D + λ·R, with R the code length under exactly the tables the entropy
coder uses (the state's quantizer, the latent's scale id).

The search runs over *many* trellises at once: all per-latent candidate costs are computed
up front with whole-array operations, and the only Python loop runs over trellis steps,
each step a handful of operations on (edges × trellises) arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qaft.runtime.entropy.calibration import Calibration, level_cdf
from qaft.runtime.entropy.channel_cdf import ChannelCdf
from qaft.runtime.entropy.tables import TableSet, tail_reach
from qaft.runtime.errors import ConfigError, FormatError

#: Most entries of a factorized prior's trellis tables (both quantizers, every channel):
#: 320 channels reaching 256 units at the smallest step stay within it.
MAX_CHANNEL_TABLE_ENTRIES = 1 << 23
#: Extra bits charged for an escaped index (its int32 in the escape section).
ESCAPE_EXTRA_BITS = 32.0


@dataclass(frozen=True)
class StateMachine:
    """Transitions ``next[state, parity]`` and the quantizer (0 or 1) of each state."""

    name: str
    next: np.ndarray  # (S, 2) int
    quantizer: np.ndarray  # (S,) int

    @property
    def num_states(self) -> int:
        return len(self.quantizer)

    def incoming(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Edges as (source state, parity) arrays, and for each state its two incoming
        edge numbers (edges are numbered ``2 * source + parity``)."""
        s = self.num_states
        src = np.repeat(np.arange(s), 2)
        par = np.tile(np.arange(2), s)
        dst = self.next[src, par]
        inc = np.stack([np.flatnonzero(dst == d) for d in range(s)])
        if inc.shape != (s, 2):
            raise ConfigError(f"{self.name}: every state needs exactly two incoming edges")
        return src, par, inc


#: VVC's dependent quantization: 4 states, Q0 in states 0 and 1, Q1 in states 2 and 3.
VVC4 = StateMachine("tcq", np.array([[0, 2], [2, 0], [1, 3], [3, 1]]), np.array([0, 0, 1, 1]))

#: An 8-state machine built like VVC's: VVC's state is a 2-bit register (b1 b0) whose new
#: high bit is parity XOR b0, with b1 picking the quantizer.  Here the register has 3 bits
#: (b2 b1 b0), the new high bit is parity XOR b0 XOR b1, and b2 picks the quantizer.
VVC8 = StateMachine(
    "tcq8",
    np.array(
        [[((p ^ (s & 1) ^ ((s >> 1) & 1)) << 2) | (s >> 1) for p in (0, 1)] for s in range(8)]
    ),
    np.array([s >> 2 for s in range(8)]),
)


def reconstruction(k: np.ndarray, q: np.ndarray | int) -> np.ndarray:
    """Reconstruction in units of Δ: 2k for Q0, 2k − sgn(k) for Q1."""
    k = np.asarray(k)
    return 2 * k - np.asarray(q) * np.sign(k)


def tcq_tables(
    scale_table: np.ndarray,
    delta: float,
    calibration: Calibration | None = None,
    exact: bool = True,
) -> TableSet:
    """Tables for indices of both quantizers at each scale of ``scale_table``.

    Row ``q * L + l`` holds quantizer q at scale id l: each index's probability is the mass
    of scale l's residual density (a zero-mean Gaussian of scale ``scale_table[l]``, or its
    calibrated density) on its decision interval (between the midpoints to the neighbouring
    reconstructions of the same quantizer).

    ``exact`` (files of container version 3): built without any libm call, the same bits on
    every machine (``docs/exact.md``); ``exact=False``: with libm's ``erfc`` and ``exp``,
    the tables of version-2 files.
    """
    cal = calibration or Calibration.identity(len(scale_table))
    rows, offsets = [], []
    for q in (0, 1):
        for s, a, w in zip(scale_table, cal.scale, cal.laplace, strict=True):
            kmax = int(math.ceil(tail_reach(s, a, w) / (2 * delta))) + 1
            k = np.arange(-kmax, kmax + 1)
            rec = reconstruction(k, q).astype(np.float64)
            edges = np.concatenate([[-np.inf], (rec[1:] + rec[:-1]) / 2, [np.inf]]) * delta
            rows.append(np.diff(level_cdf(edges, s, a, w, exact=exact)))
            offsets.append(-kmax)
    return TableSet.from_rows(rows, offsets, exact=exact)


def channel_tcq_tables(cdf: ChannelCdf, delta: float) -> TableSet:
    """:func:`tcq_tables` for a factorized prior: row ``q * M + c`` holds quantizer q under
    channel c's density (its sampled CDF, :class:`ChannelCdf`, interpolated: the same bits
    on every machine)."""
    kmax = int(math.ceil(cdf.reach / (2 * delta))) + 1
    if 2 * cdf.channels * (2 * kmax + 1) > MAX_CHANNEL_TABLE_ENTRIES:
        raise FormatError(
            f"a step of {delta:g} would make {2 * cdf.channels * (2 * kmax + 1):,} table "
            f"entries for this model (at most {MAX_CHANNEL_TABLE_ENTRIES:,})"
        )
    k = np.arange(-kmax, kmax + 1)
    rows, offsets = [], []
    for q in (0, 1):
        rec = reconstruction(k, q).astype(np.float64)
        edges = np.concatenate([[-np.inf], (rec[1:] + rec[:-1]) / 2, [np.inf]]) * delta
        for c in range(cdf.channels):
            rows.append(np.diff(cdf.at(c, edges)))
            offsets.append(-kmax)
    return TableSet.from_rows(rows, offsets, exact=True)


@dataclass(frozen=True)
class BitsLookup:
    """Code lengths of every index under every table, as one dense array.

    ``dense[t, k + half + 1]`` holds the bits of index k under table t for every
    ``|k| <= half`` (the widest table's reach); indices outside table t's range cost its
    escape symbol plus ``ESCAPE_EXTRA_BITS``, and so do the guard columns at both ends,
    which clipping sends every farther index to.  One gather per lookup.
    """

    dense: np.ndarray  # (T, 2 * half + 3) float64
    half: int

    @property
    def flat(self) -> np.ndarray:
        return self.dense.reshape(-1)

    @property
    def width(self) -> int:
        return self.dense.shape[1]


def bits_lookup(tables: TableSet) -> BitsLookup:
    """The :class:`BitsLookup` of a table set."""
    half = int(max(-tables.offsets.min(), (tables.offsets + tables.lengths - 2).max()))
    dense = np.empty((tables.num_tables, 2 * half + 3))
    for t in range(tables.num_tables):
        row = -np.log2(np.maximum(tables.row(t), 2.0**-24))
        dense[t] = row[-1] + ESCAPE_EXTRA_BITS
        start = tables.offsets[t] + half + 1
        dense[t, start : start + len(row) - 1] = row[:-1]
    return BitsLookup(dense, half)


def index_bits(k: np.ndarray, table: np.ndarray, tables: TableSet, bits: BitsLookup) -> np.ndarray:
    """Bits to code index ``k`` under table ``table`` (broadcasting arrays)."""
    col = np.clip(k + (bits.half + 1), 0, bits.width - 1)
    return bits.flat[table * bits.width + col]


def candidates(u: np.ndarray, q: int) -> np.ndarray:
    """For residuals ``u`` (units of Δ), the two indices of quantizer q whose
    reconstructions bracket u (they differ in parity), plus zero: shape (3, *u.shape).

    The search space, spelled out; :func:`parity_costs` computes the same inline, and the
    exhaustive-search test enumerates paths through these sets."""
    if q == 0:
        ka = np.floor(u / 2)
        kb = ka + 1
    else:
        mag = np.floor((np.abs(u) + 1) / 2)
        sgn = np.where(u < 0, -1, 1)
        ka, kb = sgn * mag, sgn * (mag + 1)
    return np.stack([ka, kb, np.zeros_like(u)]).astype(np.int64)


def parity_costs(
    u: np.ndarray,
    scale_ids: np.ndarray,
    dist_scale: np.ndarray | float,
    lam: float,
    tables: TableSet,
    bits: BitsLookup,
    num_scales: int,
):
    """Best cost and index for every (quantizer, parity) at every latent of (B, T) trellises.

    ``u`` is the residual in units of Δ; the distortion of a reconstruction is
    ``(dist_scale · (u − rec))²``, so ``dist_scale`` is Δ, times the square root of the
    latent's distortion weight where one is used.  Returns ``cost`` (float64) and ``index``
    (int64), both laid out (T, quantizer, parity, B) so that each trellis step reads one
    contiguous block.

    Of the two bracketing candidates one is even and one odd, so each parity has exactly
    one of them; zero (even) replaces the even one only when strictly cheaper, the same
    tie-breaking as trying the candidates in the order (bracket low, bracket high, zero).
    """
    u = np.ascontiguousarray(np.asarray(u, dtype=np.float64).T)
    scale_ids = np.ascontiguousarray(np.asarray(scale_ids).T)
    ds = np.ascontiguousarray(np.broadcast_to(dist_scale, u.T.shape).T)
    t_len, b = u.shape
    cost = np.empty((t_len, 2, 2, b))
    index = np.empty((t_len, 2, 2, b), dtype=np.int64)
    flat, centre, last = bits.flat, bits.half + 1, bits.width - 1
    lo, hi = -centre, last - centre
    au = np.abs(u)
    neg = u < 0
    j0 = np.square(u * ds)
    zero_col = scale_ids * bits.width + centre  # where index 0 of each latent's Q0 table is
    for q in (0, 1):
        row = zero_col + q * num_scales * bits.width
        if q == 0:
            kf = np.floor(u / 2)
            da = u - 2 * kf
            db = u - (2 * kf + 2)
            ka = kf.astype(np.int64)
            step_b = 1  # kb = ka + 1
        else:  # symmetric around zero: work on |u|, then restore the sign
            m = np.floor((au + 1) / 2)
            da = au - (2 * m - (m > 0))
            db = au - (2 * m + 1)
            ka = m.astype(np.int64)
            np.negative(ka, out=ka, where=neg)
            step_b = np.where(neg, -1, 1)  # kb = ka ± 1, away from zero
        kb = ka + step_b
        ja = np.square(da * ds)
        ja += lam * flat[row + np.clip(ka, lo, hi)]
        jb = np.square(db * ds)
        jb += lam * flat[row + np.clip(kb, lo, hi)]
        jz = j0 + lam * flat[row]
        a_odd = (ka & 1).astype(bool)
        c_even = np.where(a_odd, jb, ja)
        zero = jz < c_even
        cost[:, q, 0] = np.where(zero, jz, c_even)
        cost[:, q, 1] = np.where(a_odd, ja, jb)
        k_even = np.where(a_odd, kb, ka)
        k_even[zero] = 0
        index[:, q, 0] = k_even
        index[:, q, 1] = np.where(a_odd, ka, kb)
    return cost, index


def viterbi(cost: np.ndarray, index: np.ndarray, machine: StateMachine) -> np.ndarray:
    """Minimum-cost index paths from :func:`parity_costs`' (T, 2, 2, B) arrays.

    Returns (B, T) int64 indices.  Every trellis starts in state 0; the path with the lowest
    total cost over all end states wins.
    """
    t_len, _, _, b = cost.shape
    src, par, inc = machine.incoming()
    q_edge = machine.quantizer[src]
    n_s = machine.num_states
    edges = inc.T  # (2, S): the first and the second edge into each state
    q_in, p_in, from_state = q_edge[edges], par[edges], src[edges]
    acc = np.full((n_s, b), np.inf)
    acc[0] = 0.0
    back = np.empty((t_len, n_s, b), dtype=bool)
    for t in range(t_len):
        step = cost[t][q_in, p_in]  # (2, S, B)
        first = acc[from_state[0]]
        first += step[0]
        second = acc[from_state[1]]
        second += step[1]
        np.less(second, first, out=back[t])
        acc = np.where(back[t], second, first)
    state = np.argmin(acc, axis=0)
    cols = np.arange(b)
    out = np.empty((b, t_len), dtype=np.int64)
    for t in range(t_len - 1, -1, -1):
        which = back[t, state, cols].astype(np.intp)
        out[:, t] = index[t, q_in[which, state], p_in[which, state], cols]
        state = from_state[which, state]
    return out


def states_along(indices: np.ndarray, machine: StateMachine) -> np.ndarray:
    """The state in which each index of (B, T) trellises was coded."""
    b, t_len = indices.shape
    states = np.empty((b, t_len), dtype=np.int64)
    s = np.zeros(b, dtype=np.int64)
    for t in range(t_len):
        states[:, t] = s
        s = machine.next[s, indices[:, t] & 1]
    return states
