"""Observation likelihoods with a predicted covariance, for the SOS-VAE
(``papers/sos-vae-low-rank-observations.txt``): a low-rank-plus-diagonal normal over all the entries
of a datapoint, and its pixel-wise independent baseline."""

import math
from typing import Optional

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from vaezoo.models.likelihoods import Likelihood


def _numel(shape) -> int:
    return math.prod(shape)


class LowRankNormal(TorchDistribution):
    r"""A datapoint ``x`` of shape ``event_shape`` (an image ``(C, H, W)``, a vector ``(D,)``) whose
    ``n`` entries, flattened in row-major order, are jointly normal:

    .. math:: \mathrm{vec}(x) \sim \mathcal N(\mathrm{vec}(\mu), P P^\top + \mathrm{diag}(D)).

    ``loc`` :math:`\mu` ``[..., *event_shape]``, ``cov_factor`` :math:`P` ``[..., n, r]``,
    ``cov_diag`` :math:`D` ``[..., n]``. Scoring, sampling and the entropy are torch's
    ``LowRankMultivariateNormal`` on the flattened event (Woodbury identity and determinant lemma:
    cost and memory O(n r^2), never an n x n matrix); this class only keeps the datapoint's own
    shape for the event, so that the observation site scores the data as they are and the mean is
    an image. ``flat`` is that flattened distribution, for the observation-space tools.
    """

    arg_constraints = {}
    has_rsample = True

    def __init__(self, loc, cov_factor, cov_diag, event_dim: int, validate_args=None,
                 compute_dtype: Optional[torch.dtype] = None):
        event_shape = loc.shape[loc.dim() - event_dim:]
        batch_shape = loc.shape[: loc.dim() - event_dim]
        n = _numel(event_shape)
        # ``compute_dtype``: the Woodbury algebra in another dtype than the inputs', results cast back.
        # With a diagonal of 1e-5 the capacitance I + P^T D^-1 P reaches ~1e8 and float32 loses the
        # identity in it (its Cholesky fails): float64 there costs O(n r) memory, not O(n^2).
        self.dtype = loc.dtype
        if compute_dtype is not None and compute_dtype != loc.dtype:
            loc, cov_factor, cov_diag = (t.to(compute_dtype) for t in (loc, cov_factor, cov_diag))
        self.flat = dist.LowRankMultivariateNormal(loc.reshape(batch_shape + (n,)), cov_factor, cov_diag, validate_args=validate_args)
        super().__init__(self.flat.batch_shape, event_shape, validate_args=validate_args)

    @constraints.dependent_property
    def support(self):
        return constraints.independent(constraints.real, len(self.event_shape))

    def _flatten(self, value: torch.Tensor) -> torch.Tensor:
        k = len(self.event_shape)
        return value.reshape(value.shape[: value.dim() - k] + (-1,))

    def _unflatten(self, value: torch.Tensor) -> torch.Tensor:
        return value.reshape(value.shape[:-1] + self.event_shape)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(LowRankNormal, _instance)
        new.flat, new.dtype = self.flat.expand(batch_shape), self.dtype
        super(LowRankNormal, new).__init__(new.flat.batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return self.flat.log_prob(self._flatten(value).to(self.flat.loc.dtype)).to(self.dtype)

    def rsample(self, sample_shape=torch.Size()):
        return self._unflatten(self.flat.rsample(sample_shape).to(self.dtype))

    def entropy(self):
        return self.flat.entropy().to(self.dtype)

    @property
    def mean(self):
        return self._unflatten(self.flat.mean.to(self.dtype))

    @property
    def variance(self):
        return self._unflatten(self.flat.variance.to(self.dtype))


class LowRankNormalLikelihood(Likelihood):
    """x ~ :class:`LowRankNormal` from the decoder's ``(loc, cov_factor, cov_diag)``; with
    ``float64_below`` a diagonal floor, a float32 pair whose floor ``cov_diag`` is below it does
    the likelihood's algebra in float64 (see :class:`LowRankNormal`)."""

    def __init__(self, event_dim: int, cov_diag: Optional[float] = None, float64_below: float = 1e-4):
        super().__init__(event_dim)
        self.upcast = cov_diag is not None and cov_diag < float64_below

    def forward(self, out):
        loc, cov_factor, cov_diag = out
        compute = torch.float64 if self.upcast and loc.dtype == torch.float32 else None
        return LowRankNormal(loc, cov_factor, cov_diag, self.event_dim, compute_dtype=compute)

    def mean(self, out):
        return out[0]


class DiagonalNormalLikelihood(Likelihood):
    """x ~ Normal(loc, sqrt(variance)) independently per entry, from the decoder's
    ``(loc, None, variance)`` (``variance`` of the data's shape): the beta-VAE baseline's
    pixel-wise independent observation model."""

    def forward(self, out):
        loc, _, variance = out
        return dist.Normal(loc, variance.sqrt()).to_event(self.event_dim)

    def mean(self, out):
        return out[0]
