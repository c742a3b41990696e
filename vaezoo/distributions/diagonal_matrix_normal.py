"""The matrix normal distribution with diagonal row and column covariances, the posterior of the
spatial VAE's matrix-variate normal variant (Wang, Yuan & Ji 2017)."""

import torch
from torch.distributions import constraints
from torch.distributions.utils import _standard_normal, lazy_property

from vaezoo.errors import ShapeError

from .matrix_normal import MatrixNormal


class DiagonalMatrixNormal(MatrixNormal):
    r"""
    :class:`MatrixNormal` whose row and column covariances are diagonal,

    .. math::

        X \sim \mathcal{MN}(M,\ \operatorname{diag}(a)^2,\ \operatorname{diag}(b)^2), \qquad
        X_{ij} \sim \mathcal N(M_{ij},\ a_i^2 b_j^2) \text{ independently},

    so that the variances form the outer product :math:`a^2 (b^2)^\top` of a row vector and a
    column vector, as in the spatial VAE (whose :math:`\operatorname{diag}(U)` and
    :math:`\operatorname{diag}(V)` are :math:`a^2` and :math:`b^2`). With
    :math:`E_{ij}` iid :math:`\mathcal N(0, 1)`, :math:`X = M + a b^\top \odot E`, and

    .. math::

        \log p(X) = -\frac{mn}{2}\log 2\pi - n \sum_i \log a_i - m \sum_j \log b_j
                    - \frac12 \sum_{ij} \frac{(X_{ij} - M_{ij})^2}{a_i^2 b_j^2} .

    Sampling, ``log_prob``, ``entropy`` and the KL to a diagonal normal cost :math:`O(mn)`.
    It is a subclass of :class:`MatrixNormal`: ``scale_tril_row`` and ``scale_tril_column`` are
    available (as dense diagonal matrices built on first use), and every KL registered for
    :class:`MatrixNormal` applies. The factorization is identifiable only up to
    :math:`(a, b) \to (c a, b / c)`.

    :param torch.Tensor loc: the mean :math:`M`, shape ``[..., m, n]``.
    :param torch.Tensor scale_row: :math:`a > 0`, the diagonal of :math:`L_r`, shape ``[..., m]``.
    :param torch.Tensor scale_column: :math:`b > 0`, the diagonal of :math:`L_c`, shape
        ``[..., n]``.

    ``batch_shape`` is the broadcast of the three leading shapes ``...``; ``event_shape`` is
    ``(m, n)``.
    """

    arg_constraints = {
        "loc": constraints.independent(constraints.real, 2),
        "scale_row": constraints.independent(constraints.positive, 1),
        "scale_column": constraints.independent(constraints.positive, 1),
    }

    def __init__(self, loc, scale_row, scale_column, validate_args=None):
        if loc.dim() < 2:
            raise ShapeError(
                f"DiagonalMatrixNormal: loc must have shape [..., m, n], got {tuple(loc.shape)}"
            )
        m, n = loc.shape[-2:]
        if scale_row.dim() < 1 or scale_row.shape[-1] != m:
            raise ShapeError(
                f"DiagonalMatrixNormal: scale_row must have shape [..., {m}] for loc of shape "
                f"{tuple(loc.shape)}, got {tuple(scale_row.shape)}"
            )
        if scale_column.dim() < 1 or scale_column.shape[-1] != n:
            raise ShapeError(
                f"DiagonalMatrixNormal: scale_column must have shape [..., {n}] for loc of shape "
                f"{tuple(loc.shape)}, got {tuple(scale_column.shape)}"
            )
        batch_shape = torch.broadcast_shapes(
            loc.shape[:-2], scale_row.shape[:-1], scale_column.shape[:-1]
        )
        self.loc = loc.expand(batch_shape + (m, n))
        self.scale_row = scale_row.expand(batch_shape + (m,))
        self.scale_column = scale_column.expand(batch_shape + (n,))
        # TorchDistribution.__init__: MatrixNormal.__init__ would want the triangular factors
        super(MatrixNormal, self).__init__(batch_shape, torch.Size((m, n)), validate_args)

    @classmethod
    def infer_shapes(cls, loc, scale_row, scale_column):
        batch_shape = torch.broadcast_shapes(loc[:-2], scale_row[:-1], scale_column[:-1])
        return batch_shape, torch.Size(loc[-2:])

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(DiagonalMatrixNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        m, n = self.event_shape
        new.loc = self.loc.expand(batch_shape + (m, n))
        new.scale_row = self.scale_row.expand(batch_shape + (m,))
        new.scale_column = self.scale_column.expand(batch_shape + (n,))
        super(MatrixNormal, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @lazy_property
    def scale_tril_row(self):
        return torch.diag_embed(self.scale_row)

    @lazy_property
    def scale_tril_column(self):
        return torch.diag_embed(self.scale_column)

    @lazy_property
    def _scale(self):
        """Elementwise standard deviations ``a b^T``, shape ``[..., m, n]``."""
        return self.scale_row.unsqueeze(-1) * self.scale_column.unsqueeze(-2)

    def _whiten(self, diff):
        return diff / self._scale

    def _half_log_det(self):
        m, n = self.event_shape
        return n * self.scale_row.log().sum(-1) + m * self.scale_column.log().sum(-1)

    @lazy_property
    def _row_variance(self):
        return self.scale_row.pow(2)

    @lazy_property
    def _column_variance(self):
        return self.scale_column.pow(2)

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        eps = _standard_normal(shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + self._scale * eps
