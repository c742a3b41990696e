"""Amortized posteriors q(z | x): ``PyroModule``s whose forward is a Pyro guide registering its
networks with Pyro."""

from vaezoo.guides.ar1 import AR1Guide
from vaezoo.guides.deterministic import DeltaGuide
from vaezoo.guides.diagonal import DiagonalNormalGuide
from vaezoo.guides.matrix_normal import MatrixNormalGuide, SpatialNormalGuide
from vaezoo.guides.pose import PoseGuide

__all__ = ["AR1Guide", "DeltaGuide", "DiagonalNormalGuide", "MatrixNormalGuide", "PoseGuide", "SpatialNormalGuide"]
