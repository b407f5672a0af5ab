"""Plain-loop reference of the trellis search: the oracle for tests and benchmarks.

It walks every trellis, step, state and candidate one by one, in the same order and with
the same tie-breaking as :func:`qaft.runtime.quantizers.trellis.viterbi`, so both must
return identical indices.  Code lengths come straight from the tables' probabilities, not
from the vectorized search's lookup array.  Written with scalars and NumPy arrays only, so
that ``numba.njit(viterbi_reference)`` compiles it unchanged (the benchmark does; Numba is
never a runtime dependency).
"""

from __future__ import annotations

import numpy as np


def _bits(k, tab, offsets, lengths, pmfs, escape_bits):
    """Code length of index k under table tab."""
    sym = k - offsets[tab]
    esc = lengths[tab] - 1
    if 0 <= sym < esc:
        return -np.log2(max(pmfs[tab, sym], 2.0**-24))
    return -np.log2(max(pmfs[tab, esc], 2.0**-24)) + escape_bits


def _rec(k, q):
    return 2 * k - q * (1 if k > 0 else (-1 if k < 0 else 0))


def viterbi_reference(
    u, scale_ids, dist_scale, lam, nxt, quant, offsets, lengths, pmfs, n_scales, escape_bits
):
    """Indices (B, T) minimizing sum (s(u − rec))² + λ·bits along each trellis.

    ``u``: residuals in units of Δ, (B, T); ``scale_ids``: scale ids (B, T); ``dist_scale``
    (B, T): s, Δ times the root of each latent's distortion weight; ``nxt`` (S, 2) and
    ``quant`` (S,): the state machine; ``offsets``, ``lengths``, ``pmfs``: the tables.
    """
    n_b, n_t = u.shape
    n_s = quant.shape[0]
    out = np.zeros((n_b, n_t), dtype=np.int64)
    for b in range(n_b):
        acc = np.full(n_s, np.inf)
        acc[0] = 0.0
        back_state = np.zeros((n_t, n_s), dtype=np.int64)
        back_index = np.zeros((n_t, n_s), dtype=np.int64)
        for t in range(n_t):
            x = u[b, t]
            new = np.full(n_s, np.inf)
            # Edges in the vectorized order (source state, then parity); the first edge
            # into a state wins ties.
            for s in range(n_s):
                q = quant[s]
                if q == 0:
                    ka = np.floor(x / 2.0)
                    kb = ka + 1.0
                else:
                    mag = np.floor((abs(x) + 1.0) / 2.0)
                    sgn = -1.0 if x < 0 else 1.0
                    ka = sgn * mag
                    kb = sgn * (mag + 1.0)
                cands = (int(ka), int(kb), 0)
                tab = q * n_scales + scale_ids[b, t]
                for p in range(2):
                    best_j = np.inf
                    best_k = 0
                    for k in cands:
                        if (k & 1) != p:
                            continue
                        d = ((x - _rec(k, q)) * dist_scale[b, t]) ** 2
                        j = d + lam * _bits(k, tab, offsets, lengths, pmfs, escape_bits)
                        if j < best_j:
                            best_j = j
                            best_k = k
                    dst = nxt[s, p]
                    c = acc[s] + best_j
                    if c < new[dst]:
                        new[dst] = c
                        back_state[t, dst] = s
                        back_index[t, dst] = best_k
            acc = new
        s = int(np.argmin(acc))
        for t in range(n_t - 1, -1, -1):
            out[b, t] = back_index[t, s]
            s = back_state[t, s]
    return out


def path_cost(
    k, u, scale_ids, dist_scale, lam, nxt, quant, offsets, lengths, pmfs, n_scales, escape_bits
):
    """Total cost of given index paths (B, T), walking the state machine from state 0."""
    total = np.zeros(k.shape[0])
    for b in range(k.shape[0]):
        s = 0
        for t in range(k.shape[1]):
            q = quant[s]
            kk = int(k[b, t])
            tab = q * n_scales + scale_ids[b, t]
            r = _bits(kk, tab, offsets, lengths, pmfs, escape_bits)
            total[b] += ((u[b, t] - _rec(kk, q)) * dist_scale[b, t]) ** 2 + lam * r
            s = nxt[s, kk & 1]
    return total
