"""Quantizers: map latents to integer indices and back.

Each has a one-byte id written into the container so the decoder needs nothing else.
"""

QUANTIZER_IDS = {"sq": 0}
QUANTIZER_NAMES = {v: k for k, v in QUANTIZER_IDS.items()}

__all__ = ["QUANTIZER_IDS", "QUANTIZER_NAMES"]
