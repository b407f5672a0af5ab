"""``tcq`` / ``tcq8``: trellis-coded quantization of the latent, and its entropy coding.

Trellis layout (part of the format, ``docs/bitstream.md``): the latent y of shape
(1, M, h, w) is cut into M·h independent trellises, one per row of each channel, each
running left to right over w latents.  Every trellis starts in state 0.  Symbols are
entropy coded step by step: at column t, the indices of all trellises at that column,
grouped by table; a symbol's table is (quantizer of its trellis state, scale id).
"""

from __future__ import annotations

import numpy as np

from qaft.runtime.container import EXACT_TABLES_VERSION
from qaft.runtime.entropy import coder
from qaft.runtime.errors import QaftError
from qaft.runtime.model_tables import ModelTables
from qaft.runtime.quantizers import trellis as T
from qaft.runtime.quantizers.base import Prior, QuantizerParams, TuningGrid


def _as_trellises(a: np.ndarray) -> np.ndarray:
    """(B, M, h, w) -> (B·M·h, w): one row per trellis."""
    return a.reshape(-1, a.shape[-1])


def _file_delta(params: QuantizerParams) -> QuantizerParams:
    """The step as the file carries it (float32), so both sides use the same Δ."""
    return QuantizerParams(float(np.float32(params.delta)), params.rdo_lambda)


class TrellisQuantizer:
    """Dependent quantization with a given state machine; ``id`` is its byte in files.

    ``exact``: tables derived without libm (container version 3, what is written); False
    only for reading version-2 files, whose tables came from libm's ``erfc`` and ``exp``."""

    uses_delta = True
    fallback = QuantizerParams(0.6, 0.1)
    grid = TuningGrid((0.5, 0.55, 0.6, 0.65, 0.7, 0.8), (0.1, 0.2, 0.35, 0.5, 0.7, 1.0))

    def __init__(self, machine: T.StateMachine, id: int, exact: bool = True):
        self.machine = machine
        self.name = machine.name
        self.id = id
        self.exact = exact
        self.format_version = EXACT_TABLES_VERSION if exact else EXACT_TABLES_VERSION - 1

    def tables_for(self, tables: ModelTables, delta: float):
        """(TableSet, bits lookup) for step Δ, built once per model and step."""

        def build():
            if tables.channel_cdf is not None:  # a factorized prior's (exact either way)
                t = T.channel_tcq_tables(tables.channel_cdf, delta)
            else:
                t = T.tcq_tables(tables.scale_table, delta, tables.calibration, exact=self.exact)
            return t, T.bits_lookup(t)

        return tables.cached(("tcq", delta, self.exact), build)

    def search(self, y: np.ndarray, prior: Prior, params: QuantizerParams):
        """Indices (B, T) chosen by the Viterbi search, and the per-latent table ids."""
        delta = params.delta
        if not delta > 0 or params.rdo_lambda < 0:
            raise QaftError(f"{self.name} needs a positive step and a non-negative λ")
        tables = prior.tables
        tset, bits = self.tables_for(tables, delta)
        u = _as_trellises((y - prior.means).astype(np.float64) / delta)
        sid = _as_trellises(prior.scale_ids).astype(np.int64)
        n_scales = len(tables.scale_table)
        scale = (
            delta
            if prior.weights is None
            else _as_trellises(delta * np.sqrt(np.broadcast_to(prior.weights, y.shape)))
        )
        cost, index = T.parity_costs(u, sid, scale, params.rdo_lambda, tset, bits, n_scales)
        k = T.viterbi(cost, index, self.machine)
        q = self.machine.quantizer[T.states_along(k, self.machine)]
        return k, q, q * n_scales + sid, tset

    def _cheapest(self, tables: ModelTables, delta: float) -> np.ndarray:
        """Per scale id, the fewest bits of a latent under the quantizers a state can pick."""

        def build():
            tset, _ = self.tables_for(tables, float(delta))
            bits = coder.min_bits_per_table(tset).reshape(-1, len(tables.scale_table))
            return bits[np.unique(self.machine.quantizer)].min(axis=0)

        return tables.cached((self.name, "min_bits", float(delta), self.exact), build)

    def floor_bits(self, tables: ModelTables, delta: float) -> float:
        """Fewest bits any one latent can cost, whatever its scale id."""
        return float(self._cheapest(tables, delta).min())

    def min_bits(self, prior: Prior, delta: float) -> float:
        """Fewest bits a y section can hold the indices of latents of ``prior`` in: each
        latent at the cheaper of its scale's tables over the quantizers a state can pick."""
        cheapest = self._cheapest(prior.tables, delta)
        return float(coder.scale_id_counts(prior.scale_ids, len(cheapest)) @ cheapest)

    def code(self, indices: np.ndarray, prior: Prior, delta: float) -> list[bytes]:
        """The y sections of a file holding ``indices``: column by column, each symbol
        under the table of its trellis state's quantizer and its scale id."""
        delta = float(np.float32(delta))
        tset, _ = self.tables_for(prior.tables, delta)
        k = _as_trellises(indices).astype(np.int64)
        q = self._quantizers(k)
        n_scales = len(prior.tables.scale_table)
        table_ids = q * n_scales + _as_trellises(prior.scale_ids).astype(np.int64)
        enc = coder.Encoder(tset)
        for t in range(k.shape[1]):
            enc.encode(k[:, t], table_ids[:, t])
        code = enc.finish()
        return [code.stream, code.escapes_bytes()]

    def quantize(
        self, y: np.ndarray, prior: Prior, params: QuantizerParams
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices, ŷ): what the encoder writes and what the decoder will rebuild."""
        params = _file_delta(params)
        k, q, _, _ = self.search(y, prior, params)
        y_hat = self._reconstruct(k, q, prior.means, params.delta)
        return k.reshape(y.shape).astype(np.int32), y_hat

    def _quantizers(self, k: np.ndarray) -> np.ndarray:
        """The quantizer (0 or 1) each index of (B, T) trellises was chosen with."""
        return self.machine.quantizer[T.states_along(k, self.machine)]

    def _reconstruct(self, k, q, means, delta):
        rec = (T.reconstruction(k, q) * delta).reshape(means.shape)
        return (rec.astype(np.float32) + means).astype(np.float32)

    def offsets(self, indices: np.ndarray, delta: float) -> np.ndarray:
        """ŷ − μ of each index, walking each trellis from state 0."""
        k = _as_trellises(indices).astype(np.int64)
        return (T.reconstruction(k, self._quantizers(k)) * delta).reshape(indices.shape)

    def decision_intervals(
        self, indices: np.ndarray, delta: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """From midway to the previous reconstruction of the same quantizer to midway to the
        next: the intervals the trellis tables integrate over."""
        k = _as_trellises(indices).astype(np.int64)
        q = self._quantizers(k)
        rec = T.reconstruction(k, q)
        lo = (rec + T.reconstruction(k - 1, q)) / 2 * delta
        hi = (rec + T.reconstruction(k + 1, q)) / 2 * delta
        return lo.reshape(indices.shape), hi.reshape(indices.shape)

    def decode(
        self, sections: list[bytes], prior: Prior, delta: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices, ŷ) from the file's y sections, walking the trellises as the encoder."""
        if len(sections) != 2 or len(sections[1]) % 4:
            raise coder.DecodeError("malformed y sections")
        if not delta > 0 or not np.isfinite(delta):
            raise coder.DecodeError(f"invalid step {delta} in the header")
        tset, _ = self.tables_for(prior.tables, float(delta))
        sid = _as_trellises(prior.scale_ids).astype(np.int64)
        b, t_len = sid.shape
        n_scales = len(prior.tables.scale_table)
        dec = coder.Decoder(sections[0], np.frombuffer(sections[1], "<i4"), tset)
        k = np.empty((b, t_len), dtype=np.int64)
        q = np.empty((b, t_len), dtype=np.int64)
        state = np.zeros(b, dtype=np.int64)
        for t in range(t_len):
            q[:, t] = self.machine.quantizer[state]
            k[:, t] = dec.decode(q[:, t] * n_scales + sid[:, t])
            state = self.machine.next[state, k[:, t] & 1]
        dec.finish()
        means = prior.means
        return k.reshape(means.shape).astype(np.int32), self._reconstruct(k, q, means, delta)
