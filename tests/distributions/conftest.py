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


CASES = [
    # full MatrixNormal: scale shared across a batch, batch only in loc, in one factor, 1 x n
    Case("mn_2x3", MatrixNormal, dict(loc=_randn(2, 3, seed=1), scale_tril_row=_tril(2, 2, seed=2),
                                      scale_tril_column=_tril(3, 3, seed=3))),
    Case("mn_batch4_3x2", MatrixNormal, dict(loc=_randn(4, 3, 2, seed=4), scale_tril_row=_tril(3, 3, seed=5),
                                             scale_tril_column=_tril(4, 2, 2, seed=6))),
    Case("mn_batch2x3_1x5", MatrixNormal, dict(loc=_randn(3, 1, 5, seed=7), scale_tril_row=_tril(2, 1, 1, 1, seed=8),
                                               scale_tril_column=_tril(5, 5, seed=9))),
    # DiagonalMatrixNormal: the spatial VAE's outer-product variances
    Case("diag_mn_3x4", DiagonalMatrixNormal, dict(loc=_randn(3, 4, seed=10), scale_row=_positive(3, seed=11),
                                                   scale_column=_positive(4, seed=12))),
    Case("diag_mn_batch5_2x3", DiagonalMatrixNormal, dict(loc=_randn(5, 2, 3, seed=13), scale_row=_positive(5, 2, seed=14),
                                                          scale_column=_positive(3, seed=15))),
    # AR1Normal: d = 1, negative rho with scalar parameters, near +-1, and d > 32 (blocked filter)
    Case("ar1_d1", AR1Normal, dict(loc=_randn(3, 1, seed=16), scale=_positive(3, seed=17),
                                   rho=torch.tensor([0.3, -0.5, 0.9], dtype=DTYPE))),
    Case("ar1_d6_negative", AR1Normal, dict(loc=_randn(6, seed=18), scale=torch.tensor(0.7, dtype=DTYPE),
                                            rho=torch.tensor(-0.6, dtype=DTYPE))),
    Case("ar1_batch4_d5", AR1Normal, dict(loc=_randn(4, 5, seed=19), scale=_positive(4, seed=20),
                                          rho=torch.tensor([0.999, -0.999, 0.0, 0.5], dtype=DTYPE))),
    Case("ar1_batch2x3_d8_broadcast", AR1Normal, dict(loc=_randn(3, 8, seed=21), scale=_positive(2, 1, seed=22),
                                                      rho=torch.tensor([[-0.995], [0.995]], dtype=DTYPE))),
    Case("ar1_batch2_d40", AR1Normal, dict(loc=_randn(2, 40, seed=23), scale=_positive(2, seed=24),
                                           rho=torch.tensor([0.95, -0.8], dtype=DTYPE))),
]


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request):
    torch.manual_seed(0)
    return request.param
