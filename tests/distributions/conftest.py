"""The one list of distributions that every conformance check in ``test_distributions.py`` runs
on, with a dense reference (mean vector and covariance matrix) for each. Add every new
distribution of ``vaezoo.distributions`` here."""

from dataclasses import dataclass, field

import pytest
import torch

from vaezoo.distributions import AR1Normal, DiagonalMatrixNormal, MatrixNormal

DTYPE = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed):
    return torch.randn(*shape, generator=_gen(seed), dtype=DTYPE)


def _positive(*shape, seed):
    return 0.5 + torch.rand(*shape, generator=_gen(seed), dtype=DTYPE)


def _tril(*shape, seed):
    """A well-conditioned lower Cholesky factor of shape ``[..., k, k]``."""
    a = _randn(*shape, seed=seed).tril(-1) * 0.4
    return a + torch.diag_embed(_positive(*shape[:-1], seed=seed + 1))


@dataclass
class Case:
    """A distribution: its class and float64 parameters (rebuilt fresh by ``make``)."""

    name: str
    cls: type
    params: dict = field(repr=False)

    def make(self, validate_args=None, **overrides):
        params = {**self.params, **overrides}
        return self.cls(**params, validate_args=validate_args)


def _rho(*values):
    return torch.tensor(values, dtype=DTYPE)


def _mn(name, loc, row, column):
    return Case(name, MatrixNormal, dict(loc=loc, scale_tril_row=row, scale_tril_column=column))


def _diag_mn(name, loc, row, column):
    return Case(name, DiagonalMatrixNormal, dict(loc=loc, scale_row=row, scale_column=column))


def _ar1(name, loc, scale, rho):
    return Case(name, AR1Normal, dict(loc=loc, scale=scale, rho=rho))


CASES = [
    # full MatrixNormal: no batch; batch in loc and one factor; 2-d batch from broadcasting, 1 x n
    _mn("mn_2x3", _randn(2, 3, seed=1), _tril(2, 2, seed=2), _tril(3, 3, seed=3)),
    _mn("mn_batch4_3x2", _randn(4, 3, 2, seed=4), _tril(3, 3, seed=5), _tril(4, 2, 2, seed=6)),
    _mn("mn_batch2x3_1x5", _randn(3, 1, 5, seed=7), _tril(2, 1, 1, 1, seed=8), _tril(5, 5, seed=9)),
    # DiagonalMatrixNormal: the spatial VAE's outer-product variances
    _diag_mn("diag_mn_3x4", _randn(3, 4, seed=10), _positive(3, seed=11), _positive(4, seed=12)),
    _diag_mn("diag_mn_batch5_2x3", _randn(5, 2, 3, seed=13), _positive(5, 2, seed=14),
             _positive(3, seed=15)),
    # AR1Normal: d = 1; negative rho with 0-d scale and rho; near +-1 and 0; broadcasting of
    # per-batch scale/rho against loc; d = 40
    _ar1("ar1_d1", _randn(3, 1, seed=16), _positive(3, seed=17), _rho(0.3, -0.5, 0.9)),
    _ar1("ar1_d6_negative", _randn(6, seed=18), torch.tensor(0.7, dtype=DTYPE),
         torch.tensor(-0.6, dtype=DTYPE)),
    _ar1("ar1_batch4_d5", _randn(4, 5, seed=19), _positive(4, seed=20),
         _rho(0.999, -0.999, 0.0, 0.5)),
    _ar1("ar1_batch2x3_d8_broadcast", _randn(3, 8, seed=21), _positive(2, 1, seed=22),
         _rho(-0.995, 0.995).reshape(2, 1)),
    _ar1("ar1_batch2_d40", _randn(2, 40, seed=23), _positive(2, seed=24), _rho(0.95, -0.8)),
]


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request):
    torch.manual_seed(0)
    return request.param
