"""Entropy coding: probability tables and the constriction-based range coder."""

from qaft.runtime.entropy.coder import CodedArray, DecodeError, decode, encode
from qaft.runtime.entropy.tables import (
    SCALE_LEVELS,
    TableSet,
    gaussian_tables,
    scale_to_level,
)

__all__ = [
    "CodedArray",
    "DecodeError",
    "SCALE_LEVELS",
    "TableSet",
    "decode",
    "encode",
    "gaussian_tables",
    "scale_to_level",
]
