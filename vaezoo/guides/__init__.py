"""Amortized posteriors q(z | x): nn.Modules whose forward is a Pyro guide."""

from vaezoo.guides.diagonal import DiagonalNormalGuide

__all__ = ["DiagonalNormalGuide"]
