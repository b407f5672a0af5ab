"""``tcq`` / ``tcq8``: trellis-coded quantization of the latent, and its entropy coding.

Trellis layout (part of the format, ``docs/bitstream.md``): the latent y of shape
(1, M, h, w) is cut into M·h independent trellises, one per row of each channel, each
running left to right over w latents.  Every trellis starts in state 0.  Symbols are
entropy coded step by step: at column t, the indices of all trellises at that column,
grouped by table; a symbol's table is (quantizer of its trellis state, scale level).
"""

from __future__ import annotations

import numpy as np

from qaft.runtime.entropy import coder
from qaft.runtime.errors import QaftError
from qaft.runtime.model_tables import ModelTables
from qaft.runtime.quantizers import trellis as T
from qaft.runtime.quantizers.base import QuantizerParams


def _as_trellises(a: np.ndarray) -> np.ndarray:
    """(1, M, h, w) -> (M·h, w): one row per trellis."""
    return a.reshape(-1, a.shape[-1])


def _file_step(params: QuantizerParams) -> QuantizerParams:
    """The step as the file carries it (float32), so both sides use the same Δ."""
    return QuantizerParams(float(np.float32(params.step)), params.lmbda)


class TrellisQuantizer:
    """Dependent quantization with a given state machine."""

    uses_step = True

    def __init__(self, machine: T.StateMachine):
        self.machine = machine
        self.name = machine.name
        self.id = {"tcq": 2, "tcq8": 3}[machine.name]

    @staticmethod
    def tables_for(tables: ModelTables, step: float):
        """(TableSet, bits lookup) for step Δ, built once per model and step."""

        def build():
            t = T.tcq_tables(tables.scale_levels, step, tables.calibration)
            return t, T.bits_lookup(t)

        return tables.cached(("tcq", step), build)

    def search(
        self,
        y,
        means,
        levels,
        tables: ModelTables,
        params: QuantizerParams,
        weights: np.ndarray | None = None,
    ):
        """Indices (B, T) chosen by the Viterbi search, and the per-latent table ids."""
        step = params.step
        if not step > 0 or params.lmbda < 0:
            raise QaftError(f"{self.name} needs a positive step and a non-negative λ")
        tset, bits = self.tables_for(tables, step)
        u = _as_trellises((y - means).astype(np.float64) / step)
        lev = _as_trellises(levels).astype(np.int64)
        n_levels = len(tables.scale_levels)
        scale = (
            step
            if weights is None
            else _as_trellises(step * np.sqrt(np.broadcast_to(weights, y.shape)))
        )
        cost, index = T.parity_costs(u, lev, scale, params.lmbda, tset, bits, n_levels)
        k = T.viterbi(cost, index, self.machine)
        q = self.machine.quantizer[T.states_along(k, self.machine)]
        return k, q, q * n_levels + lev, tset

    def _cheapest(self, tables: ModelTables, step: float) -> np.ndarray:
        """Per level, the fewest bits of a latent under the quantizers a state can pick."""

        def build():
            tset, _ = self.tables_for(tables, float(step))
            bits = coder.min_bits_per_table(tset).reshape(-1, len(tables.scale_levels))
            return bits[np.unique(self.machine.quantizer)].min(axis=0)

        return tables.cached((self.name, "min_bits", float(step)), build)

    def floor_bits(self, tables: ModelTables, step: float) -> float:
        """Fewest bits any one latent can cost, whatever its level."""
        return float(self._cheapest(tables, step).min())

    def min_bits(self, levels: np.ndarray, tables: ModelTables, step: float) -> float:
        """Fewest bits a y section can hold the indices of latents of ``levels`` in: each
        latent at the cheaper of its level's tables over the quantizers a state can pick."""
        cheapest = self._cheapest(tables, step)
        return float(coder.level_counts(levels, len(cheapest)) @ cheapest)

    def code(self, indices, levels, tables: ModelTables, step: float) -> list[bytes]:
        """The y sections of a file holding ``indices``: column by column, each symbol
        under the table of its trellis state's quantizer and its scale level."""
        step = float(np.float32(step))
        tset, _ = self.tables_for(tables, step)
        k = _as_trellises(indices).astype(np.int64)
        q = self.machine.quantizer[T.states_along(k, self.machine)]
        table_ids = q * len(tables.scale_levels) + _as_trellises(levels).astype(np.int64)
        enc = coder.Encoder(tset)
        for t in range(k.shape[1]):
            enc.encode(k[:, t], table_ids[:, t])
        code = enc.finish()
        return [code.stream, code.escapes_bytes()]

    def quantize(
        self,
        y,
        means,
        levels,
        tables: ModelTables,
        params: QuantizerParams,
        weights: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices, ŷ): what the encoder writes and what the decoder will rebuild."""
        params = _file_step(params)
        k, q, _, _ = self.search(y, means, levels, tables, params, weights)
        return k.reshape(y.shape).astype(np.int32), self._reconstruct(k, q, means, params.step)

    def _reconstruct(self, k, q, means, step):
        rec = (T.reconstruction(k, q) * step).reshape(means.shape)
        return (rec.astype(np.float32) + means).astype(np.float32)

    def decode(self, sections, means, levels, tables: ModelTables, step: float):
        if len(sections) != 2 or len(sections[1]) % 4:
            raise coder.DecodeError("malformed y sections")
        if not step > 0 or not np.isfinite(step):
            raise coder.DecodeError(f"invalid step {step} in the header")
        tset, _ = self.tables_for(tables, float(step))
        lev = _as_trellises(levels).astype(np.int64)
        b, t_len = lev.shape
        n_levels = len(tables.scale_levels)
        dec = coder.Decoder(sections[0], np.frombuffer(sections[1], "<i4"), tset)
        k = np.empty((b, t_len), dtype=np.int64)
        q = np.empty((b, t_len), dtype=np.int64)
        state = np.zeros(b, dtype=np.int64)
        for t in range(t_len):
            q[:, t] = self.machine.quantizer[state]
            k[:, t] = dec.decode(q[:, t] * n_levels + lev[:, t])
            state = self.machine.next[state, k[:, t] & 1]
        dec.finish()
        return k.reshape(means.shape).astype(np.int32), self._reconstruct(k, q, means, step)
