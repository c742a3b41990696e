"""Observation likelihoods p(x | decoder output) for data of any event shape (images, vectors,
sequences), chosen by name in a config.

A likelihood is a small nn.Module: it says how many decoder outputs it needs per entry of the
data's first event dimension (a channel of an image, a coordinate of a vector), turns the decoder's
output into a Pyro distribution whose event is one datapoint (``event_dim`` dimensions), and checks
that data lie in its support (one clear error instead of a NaN loss later).
"""

import math
from typing import Optional

import pyro.distributions as dist
import torch
from torch import nn

from vaezoo.errors import ConfigError, SupportError


class Likelihood(nn.Module):
    """``event_dim``: the number of event dimensions of one datapoint, ``len(data_shape)``."""

    #: decoder outputs per entry of the data's first event dimension
    params_per_channel = 1
    #: "binary", "unit" ([0, 1]) or "real"
    support = "real"

    def __init__(self, event_dim: int):
        super().__init__()
        self.event_dim = event_dim

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:  # out [..., P*C, *rest of data_shape]
        raise NotImplementedError

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return self(out).mean

    def check_support(self, x: torch.Tensor) -> None:
        if self.support == "binary":
            bad = (x != 0) & (x != 1)
            if bool(bad.any()):
                v = x[bad][0].item()
                unit = bool(((x >= 0) & (x <= 1)).all())
                # binarizing reads values as probabilities: only data within [0, 1] can be binarized
                fix = ("binarize them (--set binarize=dynamic) or choose another likelihood" if unit else
                       "these data are not within [0, 1], so they cannot be binarized: choose a real-valued "
                       "likelihood (--set likelihood=normal)")
                raise SupportError(f"data value {v:g} is outside the support of the Bernoulli likelihood; expected binary "
                                   f"data: {fix}")
        elif self.support == "unit":
            bad = (x < 0) | (x > 1)
            if bool(bad.any()):
                v = x[bad][0].item()
                raise SupportError(f"data value {v:g} is outside [0, 1], the support of the continuous Bernoulli")


def binary_data_warning(support: str, x: torch.Tensor, binarize) -> Optional[str]:
    """The warning for a real-valued likelihood (``support`` "real", a density) given binary data
    (binarized, or only 0s and 1s), else None: a density on two values is unbounded above as its
    variance shrinks, so its log p(x) is neither a probability nor comparable with a Bernoulli
    entry's."""
    if support != "real":
        return None
    binary = binarize in ("dynamic", "fixed") or bool(((x == 0) | (x == 1)).all())
    if not binary:
        return None
    how = f"binarize={binarize}" if binarize in ("dynamic", "fixed") else "the data hold only 0s and 1s"
    return (f"a real-valued likelihood on binary data ({how}): its log p(x) is a density on two values, unbounded "
            "above as the variance shrinks and not comparable with a Bernoulli entry's; expected likelihood=bernoulli "
            "for binary data, or binarize=None for grey levels")


class BernoulliLogits(dist.Bernoulli):
    """Pyro's ``Bernoulli(logits=...)`` with a cheaper ``log_prob``: ``logsigmoid(logits) +
    (value - 1) * logits``, the same function as torch's ``-binary_cross_entropy_with_logits``
    (exact for every value in [0, 1], as stable) in two passes over the logits. Torch's version
    first expands the data to the logits' shape, which is slow when the logits carry particle
    dimensions the data lack (importance sampling: [K, N, ...] logits against [N, ...] images).
    Written here because no library distribution does it."""

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        logits = self.logits
        out = torch.nn.functional.logsigmoid(logits)
        if value.dtype == out.dtype and torch.broadcast_shapes(value.shape, out.shape) == out.shape:
            # in place on the fresh output (logsigmoid's backward needs only its input); value - 1
            # is computed at the data's size, without the particle dimensions
            return out.addcmul_(value - 1, logits)
        return out + (value - 1) * logits  # data with dimensions (or a dtype) the logits lack


class Bernoulli(Likelihood):
    """x ~ Bernoulli(sigmoid(logits)), independently per entry."""

    support = "binary"

    def forward(self, out):
        return BernoulliLogits(logits=out).to_event(self.event_dim)

    def mean(self, out):
        return torch.sigmoid(out)


class ContinuousBernoulli(Likelihood):
    """x ~ ContinuousBernoulli(logits) on [0, 1] (Loaiza-Ganem and Cunningham, 2019)."""

    support = "unit"

    def forward(self, out):
        return dist.ContinuousBernoulli(logits=out).to_event(self.event_dim)


class Normal(Likelihood):
    """x ~ Normal(mu, sigma) per entry; sigma fixed, or one learned scalar (``learn_scale``)."""

    def __init__(self, event_dim: int, scale: float = 0.1, learn_scale: bool = False):
        super().__init__(event_dim)
        if not scale > 0:
            raise ConfigError(f"likelihood_scale={scale}; expected a number > 0")
        log_scale = torch.tensor(math.log(scale))
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def forward(self, out):
        return dist.Normal(out, self.log_scale.exp().to(out)).to_event(self.event_dim)

    def mean(self, out):
        return out


LIKELIHOODS = {
    "bernoulli": Bernoulli,
    "continuous-bernoulli": ContinuousBernoulli,
    "normal": Normal,
}


def make_likelihood(name: str, event_dim: int, scale: float = 0.1, learn_scale: bool = False) -> Likelihood:
    """The likelihood ``name`` for datapoints of ``event_dim`` dimensions (``len(data_shape)``)."""
    if name not in LIKELIHOODS:
        raise ConfigError(f"likelihood={name!r}; expected one of {', '.join(sorted(LIKELIHOODS))}")
    if name == "normal":
        return Normal(event_dim, scale, learn_scale)
    return LIKELIHOODS[name](event_dim)
