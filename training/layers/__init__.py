"""Network building blocks: GDN/IGDN and the reparametrizations they rely on."""

from qaft.training.layers.gdn import GDN, LowerBound, NonNegativeParametrizer

__all__ = ["GDN", "LowerBound", "NonNegativeParametrizer"]
