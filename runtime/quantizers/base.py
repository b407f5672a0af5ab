"""The interface every quantizer implements, and what it is given."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from qaft.runtime.errors import QaftError
from qaft.runtime.model_tables import ModelTables

#: Steps Δ a file may carry: the trellis tables grow as 1/Δ, and the useful steps (measured
#: defaults 0.5-0.8) sit far inside.
DELTA_RANGE = (1 / 16, 16.0)


@dataclass(frozen=True)
class QuantizerParams:
    """``delta``: the step Δ, written into the file (float32); ``rdo_lambda``: weight of the
    rate in the encoder's D + λ·R search (the decoder never needs it).

    Manifests and model files store them under the keys ``step`` and ``lmbda``."""

    delta: float = 1.0
    rdo_lambda: float = 0.0

    def __post_init__(self):
        if not DELTA_RANGE[0] <= self.delta <= DELTA_RANGE[1]:
            raise QaftError(
                f"quantizer step {self.delta!r} is outside [{DELTA_RANGE[0]}, {DELTA_RANGE[1]}]"
            )
        if not (np.isfinite(self.rdo_lambda) and self.rdo_lambda >= 0):
            raise QaftError(f"quantizer λ {self.rdo_lambda!r} must be a finite number >= 0")


@dataclass(frozen=True)
class TuningGrid:
    """The settings ``qaft tune-quantizer`` tries: every Δ with every λ."""

    deltas: tuple[float, ...]
    rdo_lambdas: tuple[float, ...]

    def __iter__(self) -> Iterator[QuantizerParams]:
        for delta, lam in itertools.product(self.deltas, self.rdo_lambdas):
            yield QuantizerParams(delta, lam)

    @property
    def tunable(self) -> bool:
        """Whether there is anything to choose (``sq`` has one setting)."""
        return len(self.deltas) * len(self.rdo_lambdas) > 1


@dataclass(frozen=True)
class Prior:
    """What the entropy parameters say about each latent, all shaped like y: its mean, its
    scale id (the int32 index of its table in ``tables.scale_table``), the model's tables,
    and (encoder only) the cost in bits of a unit squared error of each latent, broadcast to
    y (None: 1 everywhere)."""

    means: np.ndarray  # float32
    scale_ids: np.ndarray  # int32
    tables: ModelTables
    weights: np.ndarray | None = None

    def rows(self, rows: slice) -> Prior:
        """The prior of the y rows ``rows`` (a band); the weights are per channel."""
        return Prior(self.means[:, :, rows], self.scale_ids[:, :, rows], self.tables, self.weights)


@dataclass
class QuantizedLatent:
    """The encoder's result: the file's y sections, the indices and the decoder's ŷ."""

    sections: list[bytes]
    indices: np.ndarray  # int32, shaped like y
    y_hat: np.ndarray  # float32, shaped like y


class LatentQuantizer(Protocol):
    """Chooses and codes the indices of ``y`` given its :class:`Prior`."""

    name: str
    id: int  # the one byte the container names it by
    uses_delta: bool  # whether the file's step Δ means anything to this quantizer
    format_version: int  # the container version its files are written with
    fallback: QuantizerParams  # settings for models without measured ones
    grid: TuningGrid  # what tuning tries

    def quantize(
        self, y: np.ndarray, prior: Prior, params: QuantizerParams
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices, ŷ): what the encoder writes and what the decoder will rebuild.

        Searches minimize weights·error² + λ·bits (``prior.weights``)."""

    def floor_bits(self, tables: ModelTables, delta: float) -> float:
        """Fewest bits any one latent can cost: with the number of latents, a bound the
        decoder checks before the hyper-synthesis runs."""

    def min_bits(self, prior: Prior, delta: float) -> float:
        """A lower bound on the bits of the y sections of latents of ``prior``: the decoder
        refuses a shorter section before decoding it."""

    def code(self, indices: np.ndarray, prior: Prior, delta: float) -> list[bytes]:
        """The file's y sections for ``indices``."""

    def decode(
        self, sections: list[bytes], prior: Prior, delta: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices, ŷ) from the file's y sections."""

    def offsets(self, indices: np.ndarray, delta: float) -> np.ndarray:
        """ŷ − μ of each index (float64, shaped like ``indices``, any batch size)."""

    def decision_intervals(
        self, indices: np.ndarray, delta: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) bounds of the residual y − μ that each index stands for (float64,
        shaped like ``indices``): the interval whose probability mass under the latent's
        density is the index's rate."""


def encode_latent(
    quantizer: LatentQuantizer, y: np.ndarray, prior: Prior, params: QuantizerParams
) -> QuantizedLatent:
    """Quantize, then code: the y part of a file."""
    idx, y_hat = quantizer.quantize(y, prior, params)
    return QuantizedLatent(quantizer.code(idx, prior, params.delta), idx, y_hat)


def distortion_weights(model_lmbda: float, gain: np.ndarray) -> np.ndarray:
    """Bits per unit squared error of each latent channel, shaped (1, M, 1, 1).

    ``gain[c]`` is the pixel squared error (0-255, summed over colours) that a unit squared
    error of one latent of channel c causes.  The training loss λ·255²·MSE + bpp, counted
    per image, is λ/3 · (that pixel squared error) + bits, hence λ·gain/3.
    """
    return (model_lmbda * np.asarray(gain, dtype=np.float64) / 3.0).reshape(1, -1, 1, 1)
