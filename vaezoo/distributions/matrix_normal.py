"""The matrix normal distribution MN(M, U, V) over m x n matrices, the latent feature maps of the
spatial VAE (Wang, Yuan & Ji 2017, ``papers/spatial-vae-matrix-normal.txt``)."""

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import _standard_normal, lazy_property

from vaezoo.errors import ShapeError


class MatrixNormal(TorchDistribution):
    r"""
    Matrix normal distribution of an ``m x n`` random matrix :math:`X`, parametrized as in
    ``numpyro.distributions.MatrixNormal`` by its mean and the Cholesky factors of its row and
    column covariances:

    .. math::

        X \sim \mathcal{MN}(M, U, V), \qquad U = L_r L_r^\top \ (m \times m), \qquad
        V = L_c L_c^\top \ (n \times n),

    that is :math:`\operatorname{vec}(X) \sim \mathcal N(\operatorname{vec}(M), V \otimes U)` with
    ``vec`` stacking columns, or :math:`X = M + L_r E L_c^\top` with :math:`E_{ij}` iid
    :math:`\mathcal N(0, 1)` (the reparametrized sampler). The log-density,

    .. math::

        \log p(X) = -\frac{mn}{2}\log 2\pi - n \log|L_r| - m \log|L_c|
                    - \frac12 \big\| L_r^{-1} (X - M) L_c^{-\top} \big\|_F^2 ,

    is computed by two triangular solves in :math:`O(m^2 n + m n^2)`; the ``mn x mn`` Kronecker
    product is never formed. When both factors are diagonal use :class:`DiagonalMatrixNormal`,
    which does everything in :math:`O(mn)`.

    :param torch.Tensor loc: the mean :math:`M`, shape ``[..., m, n]``.
    :param torch.Tensor scale_tril_row: :math:`L_r`, lower triangular with a positive diagonal,
        shape ``[..., m, m]``.
    :param torch.Tensor scale_tril_column: :math:`L_c`, lower triangular with a positive diagonal,
        shape ``[..., n, n]``.

    ``batch_shape`` is the broadcast of the three leading shapes ``...``; ``event_shape`` is
    ``(m, n)``.
    """

    arg_constraints = {
        "loc": constraints.independent(constraints.real, 2),
        "scale_tril_row": constraints.lower_cholesky,
        "scale_tril_column": constraints.lower_cholesky,
    }
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, loc, scale_tril_row, scale_tril_column, validate_args=None):
        if loc.dim() < 2:
            raise ShapeError(
                f"MatrixNormal: loc must have shape [..., m, n], got {tuple(loc.shape)}"
            )
        m, n = loc.shape[-2:]
        if scale_tril_row.dim() < 2 or scale_tril_row.shape[-2:] != (m, m):
            raise ShapeError(
                f"MatrixNormal: scale_tril_row must have shape [..., {m}, {m}] for loc of shape "
                f"{tuple(loc.shape)}, got {tuple(scale_tril_row.shape)}"
            )
        if scale_tril_column.dim() < 2 or scale_tril_column.shape[-2:] != (n, n):
            raise ShapeError(
                f"MatrixNormal: scale_tril_column must have shape [..., {n}, {n}] for loc of shape "
                f"{tuple(loc.shape)}, got {tuple(scale_tril_column.shape)}"
            )
        batch_shape = torch.broadcast_shapes(
            loc.shape[:-2], scale_tril_row.shape[:-2], scale_tril_column.shape[:-2]
        )
        self.loc = loc.expand(batch_shape + (m, n))
        self.scale_tril_row = scale_tril_row.expand(batch_shape + (m, m))
        self.scale_tril_column = scale_tril_column.expand(batch_shape + (n, n))
        super().__init__(batch_shape, torch.Size((m, n)), validate_args=validate_args)

    @classmethod
    def infer_shapes(cls, loc, scale_tril_row, scale_tril_column):
        batch_shape = torch.broadcast_shapes(loc[:-2], scale_tril_row[:-2], scale_tril_column[:-2])
        return batch_shape, torch.Size(loc[-2:])

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(MatrixNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        m, n = self.event_shape
        new.loc = self.loc.expand(batch_shape + (m, n))
        new.scale_tril_row = self.scale_tril_row.expand(batch_shape + (m, m))
        new.scale_tril_column = self.scale_tril_column.expand(batch_shape + (n, n))
        super(MatrixNormal, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    # The three primitives below are all that depends on the form of the factors;
    # DiagonalMatrixNormal overrides them (and rsample) with O(mn) versions.

    def _whiten(self, diff):
        """``L_r^{-1} diff L_c^{-T}`` for a centred value ``diff`` of shape ``[..., m, n]``."""
        y = torch.linalg.solve_triangular(self.scale_tril_row, diff, upper=False)
        return torch.linalg.solve_triangular(self.scale_tril_column.mT, y, upper=True, left=False)

    def _half_log_det(self):
        """``1/2 log|V (x) U| = n log|L_r| + m log|L_c|``, shape ``batch_shape``."""
        m, n = self.event_shape
        log_det_row = self.scale_tril_row.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        log_det_column = self.scale_tril_column.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return n * log_det_row + m * log_det_column

    @lazy_property
    def _row_variance(self):
        """``diag(U)``, shape ``[..., m]``."""
        return self.scale_tril_row.pow(2).sum(-1)

    @lazy_property
    def _column_variance(self):
        """``diag(V)``, shape ``[..., n]``."""
        return self.scale_tril_column.pow(2).sum(-1)

    @property
    def mean(self):
        return self.loc

    @property
    def variance(self):
        return self._row_variance.unsqueeze(-1) * self._column_variance.unsqueeze(-2)

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        eps = _standard_normal(shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + self.scale_tril_row @ eps @ self.scale_tril_column.mT

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        m, n = self.event_shape
        maha = self._whiten(value - self.loc).pow(2).sum((-2, -1))
        return -0.5 * (m * n * math.log(2 * math.pi) + maha) - self._half_log_det()

    def entropy(self):
        m, n = self.event_shape
        return 0.5 * m * n * (1.0 + math.log(2 * math.pi)) + self._half_log_det()
