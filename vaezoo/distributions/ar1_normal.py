"""The Gaussian with AR(1) (Kac-Murdock-Szego) covariance, the encoder posterior of the rho-VAE
(Ferdowsi et al., ``papers/rho-vae-ar1-posterior.txt``, with the corrected sampler of
``papers/README.md``)."""

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import biject_to, constraints, transform_to
from torch.distributions.transforms import AffineTransform, ComposeTransform, SigmoidTransform
from torch.distributions.utils import _standard_normal

from vaezoo.errors import ShapeError


class _OpenInterval(constraints.Constraint):
    """Constrain to the open real interval ``(lower_bound, upper_bound)``."""

    def __init__(self, lower_bound, upper_bound):
        self.lower_bound = lower_bound
        self.upper_bound = upper_bound
        super().__init__()

    def check(self, value):
        return (self.lower_bound < value) & (value < self.upper_bound)

    def __repr__(self):
        return f"OpenInterval(lower_bound={self.lower_bound}, upper_bound={self.upper_bound})"


def _open_interval_transform(constraint):
    scale = constraint.upper_bound - constraint.lower_bound
    return ComposeTransform([SigmoidTransform(), AffineTransform(constraint.lower_bound, scale)])


# So that pyro.param(..., constraint=AR1Normal.arg_constraints["rho"]) works.
biject_to.register(_OpenInterval, _open_interval_transform)
transform_to.register(_OpenInterval, _open_interval_transform)


def _ar1_filter(w, rho):
    r"""
    Solve the recursion :math:`y_1 = w_1,\ y_j = \rho\, y_{j-1} + w_j` along the last dim, i.e.
    :math:`y_j = \sum_{k \le j} \rho^{j-k} w_k`; ``w`` is ``[..., d]`` and ``rho`` broadcasts with
    ``w.shape[:-1]``.

    A doubling (Hillis-Steele) scan: after the step with offset :math:`s = 2^i`,
    :math:`y_j = \sum_{j - 2s < k \le j} \rho^{j-k} w_k`, obtained from the previous step as
    :math:`y_j + \rho^{s} y_{j-s}`. That is :math:`\lceil \log_2 d \rceil` vectorized steps and
    O(d log d) work; the Python loop runs over the steps, never over coordinates. Every step only
    multiplies by :math:`|\rho|^s \le 1` and adds terms of the final sum, so it is as stable as
    the sequential recursion. (The closed form :math:`\rho^j \sum_k \rho^{-k} w_k` by a cumulative
    sum overflows for small :math:`|\rho|` and cancels catastrophically for large d; a blocked
    product with the dense decay matrix :math:`\rho^{j-k}` is also exact but builds a
    ``[..., block, block]`` matrix per distribution and measured slower.)
    """
    d = w.size(-1)
    coef = rho.unsqueeze(-1)  # rho^s
    s = 1
    while s < d:
        w = torch.cat([w[..., :s], torch.addcmul(w[..., s:], coef, w[..., :-s])], -1)
        coef = coef * coef
        s *= 2
    return w


class AR1Normal(TorchDistribution):
    r"""
    Multivariate normal over :math:`\mathbb R^d` whose covariance is that of a stationary AR(1)
    process with marginal standard deviation ``scale`` and lag-one correlation ``rho``:

    .. math::

        z \sim \mathcal N\big(\mu,\ s\, T(\rho)\big), \qquad T(\rho)_{jk} = \rho^{|j - k|},
        \qquad s = \mathrm{scale}^2,\ -1 < \rho < 1 .

    This is the rho-VAE posterior, where ``s`` and ``rho`` are two scalars per datapoint. The
    reparametrized sample is the AR(1) recursion

    .. math::

        z_1 = \mu_1 + \sqrt{s}\, \epsilon_1, \qquad
        z_j = \mu_j + \rho (z_{j-1} - \mu_{j-1}) + \sqrt{s (1 - \rho^2)}\, \epsilon_j ,

    computed by a vectorized doubling scan in :math:`\lceil\log_2 d\rceil` steps (see
    ``_ar1_filter``) rather than a Python loop over ``d``. Its inverse gives the innovations
    :math:`\epsilon` of a value in O(d), whence

    .. math::

        \log p(z) = -\frac d2 \log 2\pi - \frac d2 \log s - \frac{d-1}{2} \log(1 - \rho^2)
                    - \frac12 \|\epsilon\|^2 ,

    and the entropy
    :math:`\frac d2 (1 + \log 2\pi) + \frac d2 \log s + \frac{d-1}{2}\log(1-\rho^2)`.
    :math:`1 - \rho^2` is evaluated as :math:`(1 - \rho)(1 + \rho)` to stay accurate near
    :math:`|\rho| = 1`.

    :param torch.Tensor loc: the mean :math:`\mu`, shape ``[..., d]``.
    :param scale: the marginal standard deviation :math:`\sqrt s` of every coordinate, one per
        distribution: shape broadcastable to ``batch_shape``, **without** a trailing ``d`` or
        ``1`` (an encoder head of shape ``[B, 1]`` must be squeezed to ``[B]``; ``[B, 1]`` would
        broadcast against ``loc``'s batch ``[B]`` to a ``[B, B]`` batch).
    :param rho: the lag-one correlation, in the open interval ``(-1, 1)``; shape as ``scale``.

    ``batch_shape`` is the broadcast of ``loc.shape[:-1]``, ``scale.shape`` and ``rho.shape``;
    ``event_shape`` is ``(d,)``.
    """

    arg_constraints = {
        "loc": constraints.real_vector,
        "scale": constraints.positive,
        "rho": _OpenInterval(-1.0, 1.0),
    }
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc, scale, rho, validate_args=None):
        if loc.dim() < 1:
            raise ShapeError(f"AR1Normal: loc must have shape [..., d], got {tuple(loc.shape)}")
        scale = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device)
        rho = torch.as_tensor(rho, dtype=loc.dtype, device=loc.device)
        batch_shape = torch.broadcast_shapes(loc.shape[:-1], scale.shape, rho.shape)
        self.loc = loc.expand(batch_shape + loc.shape[-1:])
        self.scale = scale.expand(batch_shape)
        self.rho = rho.expand(batch_shape)
        super().__init__(batch_shape, loc.shape[-1:], validate_args=validate_args)

    @classmethod
    def infer_shapes(cls, loc, scale, rho):
        return torch.broadcast_shapes(loc[:-1], scale, rho), torch.Size(loc[-1:])

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(AR1Normal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape + self.event_shape)
        new.scale = self.scale.expand(batch_shape)
        new.rho = self.rho.expand(batch_shape)
        super(AR1Normal, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _innovation_scale(self):
        """``sqrt(1 - rho^2)``, shape ``batch_shape``."""
        return ((1 - self.rho) * (1 + self.rho)).sqrt()

    def _whiten(self, diff):
        """The innovations ``epsilon`` of a centred value ``diff = z - loc``, ``[..., d]``."""
        rho = self.rho.unsqueeze(-1)
        rest = (diff[..., 1:] - rho * diff[..., :-1]) / self._innovation_scale().unsqueeze(-1)
        return torch.cat([diff[..., :1], rest], -1) / self.scale.unsqueeze(-1)

    def _half_log_det(self):
        """``1/2 log|s T(rho)| = d log scale + (d - 1)/2 log(1 - rho^2)``, shape ``batch_shape``."""
        d = self.event_shape[0]
        log_one_minus_rho2 = torch.log1p(-self.rho) + torch.log1p(self.rho)
        return d * self.scale.log() + 0.5 * (d - 1) * log_one_minus_rho2

    @property
    def mean(self):
        return self.loc

    @property
    def variance(self):
        return self.scale.pow(2).unsqueeze(-1).expand(self.batch_shape + self.event_shape)

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        eps = _standard_normal(shape, dtype=self.loc.dtype, device=self.loc.device)
        w = torch.cat([eps[..., :1], self._innovation_scale().unsqueeze(-1) * eps[..., 1:]], -1)
        return self.loc + self.scale.unsqueeze(-1) * _ar1_filter(w, self.rho)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        d = self.event_shape[0]
        maha = self._whiten(value - self.loc).pow(2).sum(-1)
        return -0.5 * (d * math.log(2 * math.pi) + maha) - self._half_log_det()

    def entropy(self):
        d = self.event_shape[0]
        return 0.5 * d * (1.0 + math.log(2 * math.pi)) + self._half_log_det()
