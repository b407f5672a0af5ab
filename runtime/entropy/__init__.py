"""Entropy coding: probability tables and the constriction-based range coder."""

from qaft.runtime.entropy.coder import CodedArray, DecodeError, decode, encode
from qaft.runtime.entropy.tables import (
    SCALE_TABLE,
    TableSet,
    gaussian_tables,
    scale_to_id,
)

__all__ = [
    "CodedArray",
    "DecodeError",
    "SCALE_TABLE",
    "TableSet",
    "decode",
    "encode",
    "gaussian_tables",
    "scale_to_id",
]
