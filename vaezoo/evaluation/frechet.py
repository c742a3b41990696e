"""The Frechet distance between Gaussians fitted to two samples, computed directly on the data (for
vector data such as the synthetic benchmark; images go through the shared feature-space metric)."""

import warnings

import numpy as np
import torch
from scipy import linalg


def gaussian_frechet(mu1, cov1, mu2, cov2) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Dowson and Landau 1982), in float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    # sqrtm of a product of two PSD matrices: its eigenvalues are real and >= 0 in exact
    # arithmetic, so the imaginary rounding noise scipy returns is dropped
    root = linalg.sqrtm(cov1 @ cov2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1 + cov2 - 2 * root))


def data_frechet_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """The Frechet distance between Gaussians fitted to the samples ``x  # [N, D]`` and
    ``y  # [M, D]`` themselves (means and unbiased covariances), with no feature network between:
    for vector data. Images: :func:`vaezoo.evaluation.frechet_distance` (in a classifier's features)."""
    a = x.detach().reshape(x.shape[0], -1).to("cpu", torch.float64).numpy()
    b = y.detach().reshape(y.shape[0], -1).to("cpu", torch.float64).numpy()
    return gaussian_frechet(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def frechet_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Deprecated name of :func:`data_frechet_distance` (``vaezoo.evaluation.frechet_distance`` is the
    feature-space one, with another signature)."""
    warnings.warn("vaezoo.evaluation.frechet.frechet_distance is deprecated: use data_frechet_distance "
                  "(vaezoo.evaluation.frechet_distance measures images in a classifier's features)",
                  DeprecationWarning, stacklevel=2)
    return data_frechet_distance(x, y)
