"""The interface every quantizer implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from qaft.runtime.errors import QaftError
from qaft.runtime.model_tables import ModelTables

#: Steps Δ a file may carry: the trellis tables grow as 1/Δ, and the useful steps (measured
#: defaults 0.5-0.8) sit far inside.
STEP_RANGE = (1 / 16, 16.0)


@dataclass(frozen=True)
class QuantizerParams:
    """``step``: Δ, written into the file (float32); ``lmbda``: weight of the rate in the
    encoder's D + λ·R search (the decoder never needs it)."""

    step: float = 1.0
    lmbda: float = 0.0

    def __post_init__(self):
        if not STEP_RANGE[0] <= self.step <= STEP_RANGE[1]:
            raise QaftError(
                f"quantizer step {self.step!r} is outside [{STEP_RANGE[0]}, {STEP_RANGE[1]}]"
            )
        if not (np.isfinite(self.lmbda) and self.lmbda >= 0):
            raise QaftError(f"quantizer λ {self.lmbda!r} must be a finite number >= 0")


@dataclass
class QuantizedLatent:
    """The encoder's result: the file's y sections, the indices and the decoder's ŷ."""

    sections: list[bytes]
    indices: np.ndarray  # int32, shaped like y
    y_hat: np.ndarray  # float32, shaped like y


class LatentQuantizer(Protocol):
    """Chooses and codes the indices of ``y`` given its mean and scale level."""

    name: str
    id: int
    uses_step: bool  # whether the file's step Δ means anything to this quantizer

    def quantize(
        self,
        y: np.ndarray,
        means: np.ndarray,
        levels: np.ndarray,
        tables: ModelTables,
        params: QuantizerParams,
        weights: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices, ŷ): what the encoder writes and what the decoder will rebuild.

        ``weights`` (broadcast to y): cost of a unit squared error of each latent, in bits;
        searches minimize weights·error² + λ·bits (1 where None)."""

    def floor_bits(self, tables: ModelTables, step: float) -> float:
        """Fewest bits any one latent can cost: with the number of latents, a bound the
        decoder checks before the hyper-synthesis runs."""

    def min_bits(self, levels: np.ndarray, tables: ModelTables, step: float) -> float:
        """A lower bound on the bits of the y sections of latents of ``levels``: the decoder
        refuses a shorter section before decoding it."""

    def code(
        self, indices: np.ndarray, levels: np.ndarray, tables: ModelTables, step: float
    ) -> list[bytes]:
        """The file's y sections for ``indices``."""

    def decode(
        self,
        sections: list[bytes],
        means: np.ndarray,
        levels: np.ndarray,
        tables: ModelTables,
        step: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices, ŷ) from the file's y sections."""


def encode_latent(
    quantizer: LatentQuantizer,
    y: np.ndarray,
    means: np.ndarray,
    levels: np.ndarray,
    tables: ModelTables,
    params: QuantizerParams,
    weights: np.ndarray | None = None,
) -> QuantizedLatent:
    """Quantize, then code: the y part of a file."""
    idx, y_hat = quantizer.quantize(y, means, levels, tables, params, weights)
    return QuantizedLatent(quantizer.code(idx, levels, tables, params.step), idx, y_hat)


def distortion_weights(model_lmbda: float, gain: np.ndarray) -> np.ndarray:
    """Bits per unit squared error of each latent channel, shaped (1, M, 1, 1).

    ``gain[c]`` is the pixel squared error (0-255, summed over colours) that a unit squared
    error of one latent of channel c causes.  The training loss λ·255²·MSE + bpp, counted
    per image, is λ/3 · (that pixel squared error) + bits, hence λ·gain/3.
    """
    return (model_lmbda * np.asarray(gain, dtype=np.float64) / 3.0).reshape(1, -1, 1, 1)
