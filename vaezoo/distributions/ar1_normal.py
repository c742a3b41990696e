"""The Gaussian with AR(1) (Kac-Murdock-Szego) covariance, the encoder posterior of the rho-VAE
(Ferdowsi et al., ``papers/rho-vae-ar1-posterior.txt``, with the corrected sampler of
``papers/README.md``)."""

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import biject_to, constraints, transform_to
from torch.distributions.transforms import AffineTransform, ComposeTransform, SigmoidTransform
from torch.distributions.utils import _standard_normal

# Blocks of the blocked AR(1) filter: a dense BLOCK x BLOCK product per block is cheap, and
# d <= BLOCK**2 (1024 for 32) is filtered in two levels. See _ar1_filter.
_BLOCK = 32


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


def _decay_matrix(rho, size):
    """Lower-triangular Toeplitz ``T[j, k] = rho^(j - k)`` for ``j >= k``; rho ``[...]`` ->
    ``[..., size, size]``."""
    k = torch.arange(size, device=rho.device)
    lag = (k.unsqueeze(-1) - k).to(rho.dtype)  # [size, size]
    powers = rho[..., None, None] ** lag.clamp(min=0)
    return torch.where(lag >= 0, powers, torch.zeros((), dtype=rho.dtype, device=rho.device))


def _filter_blocks(w, rho):
    """Filter each row of ``w`` ``[*sample, *batch, rows, size]`` from a zero state, with ``rho``
    of shape ``batch``: one matmul by the decay matrix. The sample dims are folded into the rows
    so that the ``[*batch, size, size]`` matrix is not broadcast (copied) across the samples."""
    rows, size = w.shape[-2:]
    decay_t = _decay_matrix(rho, size).mT  # [*batch, size, size]
    batch = rho.shape
    if w.dim() - 2 == len(batch):
        return w @ decay_t
    sample = w.shape[: w.dim() - 2 - len(batch)]
    w = w.reshape((-1,) + batch + (rows, size)).movedim(0, len(batch))  # [*batch, S, rows, size]
    y = w.reshape(batch + (-1, size)) @ decay_t
    return y.reshape(batch + (-1, rows, size)).movedim(len(batch), 0).reshape(sample + batch + (rows, size))


def _ar1_filter(w, rho):
    r"""
    Solve the recursion :math:`y_1 = w_1,\ y_j = \rho\, y_{j-1} + w_j` along the last dim.

    ``w`` is ``[..., d]`` and ``rho`` broadcasts with ``w.shape[:-1]``. The sequence is cut into
    blocks of ``_BLOCK``: inside a block the recursion from a zero state is one product with the
    decay matrix :math:`\rho^{j-k}`; the states at the block ends obey the same recursion with
    :math:`\rho^{B}` and are filtered recursively; each block then adds :math:`\rho^{i}` times
    the state carried in. This is O(d B) work in O(log_B d) vectorized levels, and it only ever
    multiplies by powers :math:`|\rho|^k \le 1`, so it is as stable as the sequential loop (the
    closed form :math:`\rho^j \sum_k \rho^{-k} w_k` by a cumulative sum overflows for small
    :math:`|\rho|` and cancels catastrophically for large d).
    """
    d = w.size(-1)
    rho = rho.expand(w.shape[-1 - rho.dim() : -1])  # the trailing dims of w's leading shape
    if d <= _BLOCK:
        return _filter_blocks(w.unsqueeze(-2), rho).squeeze(-2)
    num_blocks = -(-d // _BLOCK)
    w = torch.nn.functional.pad(w, (0, num_blocks * _BLOCK - d))
    w = w.reshape(w.shape[:-1] + (num_blocks, _BLOCK))
    local = _filter_blocks(w, rho)  # [..., num_blocks, B], each from a zero state
    ends = _ar1_filter(local[..., -1], rho**_BLOCK)  # [..., num_blocks], true state at block ends
    carry = torch.nn.functional.pad(ends[..., :-1], (1, 0))  # state entering each block
    lags = torch.arange(1, _BLOCK + 1, device=w.device, dtype=w.dtype)
    y = local + carry.unsqueeze(-1) * (rho.unsqueeze(-1) ** lags).unsqueeze(-2)
    return y.flatten(-2)[..., :d]


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

    computed by a blocked, vectorized filter (see ``_ar1_filter``) rather than a Python loop over
    ``d``. Its inverse gives the innovations :math:`\epsilon` of a value in O(d), whence

    .. math::

        \log p(z) = -\frac d2 \log 2\pi - \frac d2 \log s - \frac{d-1}{2} \log(1 - \rho^2)
                    - \frac12 \|\epsilon\|^2 ,

    and the entropy :math:`\frac d2 (1 + \log 2\pi) + \frac d2 \log s + \frac{d-1}{2}\log(1-\rho^2)`.
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
            raise ValueError(f"AR1Normal: loc must have shape [..., d], got {tuple(loc.shape)}")
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
        return d * self.scale.log() + 0.5 * (d - 1) * (torch.log1p(-self.rho) + torch.log1p(self.rho))

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
