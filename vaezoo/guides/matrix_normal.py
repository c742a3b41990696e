"""The spatial VAEs' guides (Wang, Yuan & Ji 2017, ``papers/spatial-vae-matrix-normal.txt``): q(z | x)
over ``c`` latent feature maps ``[c, d, d]``, independent across maps: naive (a diagonal normal
reshaped), matrix normal with diagonal or full row/column covariances, and low-rank mean."""

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import nn
from vaezoo.distributions.tril import vec_to_tril

from vaezoo.distributions import DiagonalMatrixNormal, MatrixNormal
from vaezoo.traces import data_plate


class SpatialNormalGuide(PyroModule):
    """The naive spatial VAE: q(z | x) = N(mu(x), diag(sigma(x)^2)) over ``c d^2`` units reshaped into
    maps ``[c, d, d]``; ``encoder`` maps ``[B, *data_shape]`` to ``[B, 2 c d^2]`` (mean, raw scale;
    sigma = softplus(raw) + min_scale, as :class:`DiagonalNormalGuide`)."""

    def __init__(self, encoder: nn.Module, map_shape: Sequence[int], site: str = "z", min_scale: float = 1e-4):
        super().__init__()
        self.encoder = encoder
        self.map_shape = tuple(int(s) for s in map_shape)
        self.site = site
        self.min_scale = min_scale

    @staticmethod
    def units(map_shape: Sequence[int]) -> int:
        c, m, n = map_shape
        return 2 * c * m * n

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        h = self.encoder(x)
        loc, raw = h.reshape(h.shape[:-1] + (2,) + self.map_shape).unbind(-4)  # each [B, c, d, d]
        return dist.Normal(loc, F.softplus(raw) + self.min_scale).to_event(3)

    def forward(self, x: torch.Tensor) -> None:
        with data_plate(x):
            pyro.sample(self.site, self.posterior(x))


class MatrixNormalGuide(PyroModule):
    r"""q(z | x) = prod_k MN(z_k; M_k, U_k, V_k) over the ``c`` maps ``z_k`` of ``d x d``.

    ``mean``: ``"full"``, M_k a free ``d x d`` matrix (d^2 units), or ``"outer"``, the low-rank
    M_k = u_k v_k^T (2d units). ``covariance``: ``"diagonal"``, U_k = diag(a_k)^2 and V_k = diag(b_k)^2
    so that the variances are the outer products a_k^2 (b_k^2)^T (2d units; the paper's form), or
    ``"cholesky"``, U_k = L_r L_r^T and V_k = L_c L_c^T with full lower-triangular factors (d(d+1)
    units), which ties locations by correlation and not only through their variances. Positive
    diagonals: softplus(raw) + min_scale. ``encoder`` maps ``[B, *data_shape]`` to
    ``[B, c * units_per_map]`` (:meth:`units`). The site's distribution is the matrix normal of batch
    ``[B, c]`` made ``Independent`` over the maps: event ``[c, d, d]``."""

    def __init__(self, encoder: nn.Module, map_shape: Sequence[int], mean: str = "full",
                 covariance: str = "diagonal", site: str = "z", min_scale: float = 1e-4):
        super().__init__()
        if mean not in ("full", "outer") or covariance not in ("diagonal", "cholesky"):
            raise ValueError(f"mean={mean!r}, covariance={covariance!r}; expected full/outer and diagonal/cholesky")
        self.encoder = encoder
        self.map_shape = tuple(int(s) for s in map_shape)
        self.mean, self.covariance = mean, covariance
        self.site = site
        self.min_scale = min_scale

    @staticmethod
    def units(map_shape: Sequence[int], mean: str = "full", covariance: str = "diagonal") -> int:
        c, m, n = map_shape
        mean_units = m * n if mean == "full" else m + n
        cov_units = m + n if covariance == "diagonal" else (m * (m + 1) + n * (n + 1)) // 2
        return c * (mean_units + cov_units)

    def _positive(self, raw: torch.Tensor) -> torch.Tensor:
        return F.softplus(raw) + self.min_scale

    def _tril(self, raw: torch.Tensor) -> torch.Tensor:  # raw [..., k(k+1)/2] -> [..., k, k]
        tril = vec_to_tril(raw)
        diagonal = tril.diagonal(dim1=-2, dim2=-1)
        return tril - torch.diag_embed(diagonal) + torch.diag_embed(self._positive(diagonal))

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        c, m, n = self.map_shape
        h = self.encoder(x)
        h = h.reshape(h.shape[:-1] + (c, -1))  # [B, c, units per map]
        if self.mean == "full":
            loc, h = h[..., : m * n].reshape(h.shape[:-1] + (m, n)), h[..., m * n :]
        else:
            u, v, h = h[..., :m], h[..., m : m + n], h[..., m + n :]
            loc = u.unsqueeze(-1) * v.unsqueeze(-2)  # u v^T, [B, c, m, n]
        if self.covariance == "diagonal":
            q = DiagonalMatrixNormal(loc, self._positive(h[..., :m]), self._positive(h[..., m:]))
        else:
            rows = m * (m + 1) // 2
            q = MatrixNormal(loc, self._tril(h[..., :rows]), self._tril(h[..., rows:]))
        return q.to_event(1)

    def forward(self, x: torch.Tensor) -> None:
        with data_plate(x):
            pyro.sample(self.site, self.posterior(x))
