"""Amortized posteriors q(z | x): nn.Modules whose forward is a Pyro guide."""

from vaezoo.guides.ar1 import AR1Guide
from vaezoo.guides.diagonal import DiagonalNormalGuide

__all__ = ["AR1Guide", "DiagonalNormalGuide"]
