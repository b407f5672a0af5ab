"""Trellis-coded (dependent) quantization as in VVC, vectorized over many trellises.

Two scalar quantizers share a step Δ: ``Q0`` reconstructs index k as 2kΔ, ``Q1`` as
(2k − sgn k)Δ.  A state machine, advanced by the parity of each index, picks the quantizer
of the next latent.  The encoder chooses all indices of a trellis jointly by a Viterbi
search minimizing D + λ·R, with R the code length under exactly the tables the entropy
coder uses (the state's quantizer, the latent's scale level).

The search runs over *many* trellises at once: all per-latent candidate costs are computed
up front with whole-array operations, and the only Python loop runs over trellis steps,
each step a handful of operations on (edges × trellises) arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qaft.runtime.entropy.tables import TAIL_SIGMAS, TableSet, gaussian_cdf

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
            raise ValueError(f"{self.name}: every state needs exactly two incoming edges")
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

MACHINES = {"tcq": VVC4, "tcq8": VVC8}


def reconstruction(k: np.ndarray, q: np.ndarray | int) -> np.ndarray:
    """Reconstruction in units of Δ: 2k for Q0, 2k − sgn(k) for Q1."""
    k = np.asarray(k)
    return 2 * k - np.asarray(q) * np.sign(k)


def tcq_tables(levels: np.ndarray, step: float) -> TableSet:
    """Tables for indices of both quantizers at each scale level.

    Row ``q * L + l`` holds quantizer q at level l: each index's probability is the mass of
    a zero-mean Gaussian of scale ``levels[l]`` on its decision interval (between the
    midpoints to the neighbouring reconstructions of the same quantizer).
    """
    rows, offsets = [], []
    for q in (0, 1):
        for s in levels:
            kmax = int(math.ceil(TAIL_SIGMAS * s / (2 * step))) + 1
            k = np.arange(-kmax, kmax + 1)
            rec = reconstruction(k, q).astype(np.float64)
            edges = np.concatenate([[-np.inf], (rec[1:] + rec[:-1]) / 2, [np.inf]]) * step
            rows.append(np.diff(gaussian_cdf(edges / s)))
            offsets.append(-kmax)
    return TableSet.from_rows(rows, offsets)


def bits_lookup(tables: TableSet) -> tuple[np.ndarray, np.ndarray]:
    """Code length (bits) of every symbol of every table, flattened, and row starts.

    An index outside its table costs the escape symbol plus ``ESCAPE_EXTRA_BITS``.
    """
    starts = np.concatenate([[0], np.cumsum(tables.lengths)[:-1]])
    flat = np.concatenate(
        [-np.log2(np.maximum(tables.row(t), 2.0**-24)) for t in range(tables.num_tables)]
    )
    return flat, starts


def index_bits(k: np.ndarray, table: np.ndarray, tables: TableSet, bits: tuple) -> np.ndarray:
    """Bits to code index ``k`` under table ``table`` (broadcasting arrays)."""
    flat, starts = bits
    sym = k - tables.offsets[table]
    esc = tables.lengths[table] - 1
    inside = (sym >= 0) & (sym < esc)
    b = flat[starts[table] + np.where(inside, sym, esc)]
    return np.where(inside, b, b + ESCAPE_EXTRA_BITS)


def candidates(u: np.ndarray, q: int) -> np.ndarray:
    """For residuals ``u`` (units of Δ), the two indices of quantizer q whose
    reconstructions bracket u (they differ in parity), plus zero: shape (3, *u.shape)."""
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
    level: np.ndarray,
    dist_scale: np.ndarray | float,
    lam: float,
    tables: TableSet,
    bits: tuple,
    num_levels: int,
):
    """Best cost and index for every (quantizer, parity) at every latent.

    ``u`` is the residual in units of Δ; the distortion of a reconstruction is
    ``(dist_scale · (u − rec))²``, so ``dist_scale`` is Δ, times the square root of the
    latent's distortion weight where one is used.  Returns ``cost[q, p, ...]`` (float64)
    and ``index[q, p, ...]`` (int64).
    """
    cost = np.empty((2, 2, *u.shape))
    index = np.empty((2, 2, *u.shape), dtype=np.int64)
    for q in (0, 1):
        k = candidates(u, q)
        d = ((u - reconstruction(k, q)) * dist_scale) ** 2
        j = d + lam * index_bits(k, q * num_levels + level, tables, bits)
        par = k & 1
        for p in (0, 1):
            jp = np.where(par == p, j, np.inf)
            best = np.argmin(jp, axis=0)
            cost[q, p] = np.take_along_axis(jp, best[None], 0)[0]
            index[q, p] = np.take_along_axis(k, best[None], 0)[0]
    return cost, index


def viterbi(cost: np.ndarray, index: np.ndarray, machine: StateMachine) -> np.ndarray:
    """Minimum-cost index paths for trellises laid out as (..., B, T) in ``cost[q, p]``.

    ``cost`` and ``index`` are (2, 2, B, T); returns (B, T) int64 indices.  Every trellis
    starts in state 0; the path with the lowest total cost over all end states wins.
    """
    _, _, b, t_len = cost.shape
    src, par, inc = machine.incoming()
    q_edge = machine.quantizer[src]
    acc = np.full((machine.num_states, b), np.inf)
    acc[0] = 0.0
    back = np.empty((t_len, machine.num_states, b), dtype=np.int8)
    for t in range(t_len):
        edge = acc[src] + cost[q_edge, par, :, t]  # (2S, B)
        first, second = edge[inc[:, 0]], edge[inc[:, 1]]
        choose = second < first
        back[t] = choose
        acc = np.where(choose, second, first)
    state = np.argmin(acc, axis=0)
    cols = np.arange(b)
    out = np.empty((b, t_len), dtype=np.int64)
    for t in range(t_len - 1, -1, -1):
        e = inc[state, back[t, state, cols]]
        out[:, t] = index[q_edge[e], par[e], cols, t]
        state = src[e]
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
