"""The transformer VAE (T-VAE) model of ``papers/transformer-vae-pose-latents.txt``: a content latent z
decoded in a reference pose, warped by a spatial transformer with pose parameters u, and a
pose prior that is flat, a learned diagonal normal, or the paper's rank-r normal N(b, W W^T)."""

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import nn
from torch.distributions import constraints

from vaezoo.errors import ConfigError
from vaezoo.models.likelihoods import Likelihood
from vaezoo.nets.transformers import SpatialTransformer
from vaezoo.traces import data_plate

POSE_PRIORS = ("none", "normal", "full-rank")


class FlatPose(dist.ImproperUniform):
    """The flat (improper) prior of a deterministic pose: log-density 0 everywhere on R^k, so with
    a ``Delta`` guide the pose's KL term is zero. Not a normalized density, so it has no samples;
    ``sample`` returns ``reference  # [k]`` (the identity pose) instead, so that the model still
    generates, in the reference pose. Pyro's ``ImproperUniform`` is subclassed because its
    ``log_prob`` is a float32 CPU zero whatever the value's dtype and device."""

    def __init__(self, reference: torch.Tensor, batch_shape=torch.Size()):
        self.reference = reference
        super().__init__(constraints.real, batch_shape, reference.shape[-1:])

    def expand(self, batch_shape, _instance=None):
        return FlatPose(self.reference, torch.Size(batch_shape))

    def log_prob(self, value):
        batch_shape = torch.broadcast_shapes(value.shape[: value.dim() - 1], self.batch_shape)
        return value.new_zeros(()).expand(batch_shape)

    def sample(self, sample_shape=torch.Size()):
        return self.reference.expand(torch.Size(sample_shape) + self.batch_shape + self.event_shape)


def _softplus_inverse(y: float) -> float:
    return float(torch.tensor(y, dtype=torch.float64).expm1().log())


class PosePrior(nn.Module):
    """The prior of the pose and how it becomes the transformer's parameters u  ``[..., k]``:

    - ``none``: site ``"u"`` with the flat :class:`FlatPose` (a deterministic pose: pair it with a
      ``Delta`` guide); log p(x) is then the likelihood of the content model at the inferred pose,
      not a marginal over poses;
    - ``normal``: site ``"u"`` ~ N(loc, diag(scale^2)), both learned, loc starting at the identity
      pose and scale at ``init_scale``;
    - ``full-rank``: site ``"v"``, a pose code of dimension ``rank`` r <= k with prior N(0, I_r),
      mapped to u = b + W v by ``pose_map`` (an ``nn.Linear``, b starting at the identity pose and
      W at ``init_scale`` times the first r columns of I_k): a Gaussian prior N(b, W W^T) of rank r.

    ``site``: the latent site's name; ``dim``: its size (k, or r).
    """

    def __init__(self, kind: str, identity: torch.Tensor, rank: int, init_scale: float = 0.1):
        super().__init__()
        if kind not in POSE_PRIORS:
            raise ConfigError(f"pose prior {kind!r}; expected one of {', '.join(POSE_PRIORS)}")
        self.kind = kind
        k = identity.shape[-1]
        self.site = "v" if kind == "full-rank" else "u"
        self.dim = rank if kind == "full-rank" else k
        self.register_buffer("identity", identity.clone())
        if kind == "normal":
            self.loc = nn.Parameter(identity.clone())
            self.raw_scale = nn.Parameter(identity.new_full((k,), _softplus_inverse(init_scale)))
        if kind == "full-rank":
            self.pose_map = nn.Linear(rank, k)
            with torch.no_grad():
                self.pose_map.bias.copy_(identity)
                self.pose_map.weight.copy_(init_scale * torch.eye(k, rank))
        else:
            self.pose_map = nn.Identity()

    def forward(self, like: torch.Tensor) -> dist.TorchDistribution:
        """The prior of the pose site, on the device and of the dtype of ``like``."""
        if self.kind == "none":
            return FlatPose(self.identity.to(like))
        if self.kind == "normal":
            return dist.Normal(self.loc, F.softplus(self.raw_scale)).to_event(1)
        return dist.Normal(like.new_zeros(()), like.new_ones(())).expand([self.dim]).to_event(1)

    def mean_pose(self, like: torch.Tensor) -> torch.Tensor:
        """The transformer's parameters at the prior mean of the pose site: ``[k]``."""
        if self.kind == "normal":
            return self.loc.to(like)
        if self.kind == "full-rank":
            return self.pose_map.bias.to(like)
        return self.identity.to(like)


class TransformerVAEModel(PyroModule):
    """``forward(x)`` is the Pyro model, for images ``x  # [B, C, H, W]``::

        pose ~ pose_prior            site "u" [..., B, k] (or "v" [..., B, r], see PosePrior)
        z    ~ N(0, I)               site "z" [..., B, latent_dim]
        x    ~ likelihood(T_u(decoder(z)))

    ``decoder`` maps ``[..., latent_dim]`` to the likelihood's parameters in the reference pose,
    ``[..., P*C, H, W]``; the ``transformer`` warps them by u (output(p) = template(T_u(p))), and
    locations sampled outside the template read a learned ``background`` per output channel (for
    a Bernoulli likelihood the logit of the empty border). The pose is drawn first, so that a guide
    drawing it before z gets closed-form KL terms for both sites.
    """

    def __init__(self, decoder: nn.Module, likelihood: Likelihood, transformer: SpatialTransformer,
                 pose_prior: PosePrior, latent_dim: int, channels: int):
        super().__init__()
        self.decoder = decoder
        self.likelihood = likelihood
        self.transformer = transformer
        self.pose_prior = pose_prior
        self.latent_dim = latent_dim
        self.background = nn.Parameter(torch.zeros(channels, 1, 1))

    def render(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The likelihood's parameters ``[..., P*C, H, W]`` for content ``z  # [..., latent_dim]``
        in pose ``u  # [..., k]`` (the transformer's parameters, not the pose code)."""
        return self.transformer(self.decoder(z), u, background=self.background)

    def forward(self, x: torch.Tensor) -> None:
        pose_prior = self.pose_prior
        with data_plate(x):
            pose = pyro.sample(pose_prior.site, pose_prior(x))
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), x.new_ones(())).expand([self.latent_dim]).to_event(1))
            pyro.sample("x", self.likelihood(self.render(z, pose_prior.pose_map(pose))), obs=x)
