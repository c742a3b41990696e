"""Structured Gaussian distributions for vaezoo's posteriors and likelihoods, as Pyro
distributions with closed-form KL divergences (registered on import), and low-rank Gaussian
helpers. Imports only torch and pyro."""

from . import kl as _kl  # noqa: F401  (registers the KL divergences)
from .ar1_normal import AR1Normal
from .diagonal_matrix_normal import DiagonalMatrixNormal
from .gaussian import conditional, principal_directions
from .matrix_normal import MatrixNormal

__all__ = [
    "AR1Normal",
    "DiagonalMatrixNormal",
    "MatrixNormal",
    "conditional",
    "principal_directions",
]
