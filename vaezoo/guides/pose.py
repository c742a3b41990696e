"""The guide of the transformer VAEs: a localization network for q(pose | x) and a content encoder
for q(z | x), or, in the double-transformer VAE (DTVAE), for q(z | x un-warped by the pose)."""

from typing import Optional

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import nn
from vaezoo.distributions.tril import vec_to_tril

from vaezoo.nets.transformers import SpatialTransformer
from vaezoo.traces import data_plate

POSE_GUIDES = ("delta", "diagonal", "full-rank")


def pose_outputs(kind: str, dim: int) -> int:
    """The localization network's outputs for a pose site of size ``dim``: the mean, then a raw
    scale per coordinate (``diagonal``) or the raw lower triangle of a Cholesky factor
    (``full-rank``, diagonal entries first)."""
    return {"delta": dim, "diagonal": 2 * dim, "full-rank": dim + dim * (dim + 1) // 2}[kind]


class PoseGuide(PyroModule):
    """``forward(x)`` is the Pyro guide, for images ``x  # [B, C, H, W]``::

        pose ~ q(pose | x)         site pose_site [..., B, pose_dim]: Delta, diagonal or full-rank normal
        z    ~ N(mu, diag(sigma^2)) site "z" [..., B, latent_dim], of content_encoder(x) or, with
                                    ``transformer``, of content_encoder(T_u^{-1}(x)) (the DTVAE)

    ``localizer`` maps ``[B, C, H, W]`` to ``[B, pose_outputs(pose_kind, pose_dim)]``; its last
    ``nn.Linear`` is initialized at ``pose_init`` (zero weights, the mean's bias at the pose of
    the identity warp, scales at ``init_scale``): the paper's remedy for poor local minima.
    ``content_encoder`` maps ``[..., C, H, W]`` to ``[..., 2 * latent_dim]`` (mean, raw scale;
    sigma = softplus(raw) + min_scale). For the DTVAE, ``pose_map`` turns a pose sample into
    the transformer's parameters u (the model's own map b + W v for a pose code, shared with it),
    and x is un-warped by the sampled u before the content encoder sees it.
    """

    def __init__(self, content_encoder: nn.Module, localizer: nn.Module, latent_dim: int, pose_site: str,
                 pose_dim: int, pose_kind: str, pose_init: torch.Tensor, init_scale: float = 0.05,
                 transformer: Optional[SpatialTransformer] = None, pose_map: Optional[nn.Module] = None,
                 min_scale: float = 1e-4):
        super().__init__()
        if pose_kind not in POSE_GUIDES:
            raise ValueError(f"pose guide {pose_kind!r}; expected one of {', '.join(POSE_GUIDES)}")
        self.content_encoder = content_encoder
        self.localizer = localizer
        self.latent_dim = latent_dim
        self.pose_site = pose_site
        self.pose_dim = pose_dim
        self.pose_kind = pose_kind
        self.transformer = transformer
        self.pose_map = pose_map if pose_map is not None else nn.Identity()
        self.min_scale = min_scale
        last = [m for m in localizer.modules() if isinstance(m, nn.Linear)][-1]
        bias = torch.zeros(pose_outputs(pose_kind, pose_dim))
        bias[:pose_dim] = pose_init
        raw = float(torch.tensor(max(init_scale - min_scale, 1e-6), dtype=torch.float64).expm1().log())
        bias[pose_dim : 2 * pose_dim] = raw  # the (diagonal) scales; off-diagonal entries stay 0
        with torch.no_grad():
            last.weight.zero_()
            last.bias.copy_(bias)

    def pose_posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        h = self.localizer(x)  # [B, outputs]
        d = self.pose_dim
        loc = h[..., :d]
        if self.pose_kind == "delta":
            return dist.Delta(loc, event_dim=1)
        scale = F.softplus(h[..., d : 2 * d]) + self.min_scale
        if self.pose_kind == "diagonal":
            return dist.Normal(loc, scale).to_event(1)
        tril = torch.diag_embed(scale) + vec_to_tril(h[..., 2 * d :], diag=-1)  # [B, d, d]
        return dist.MultivariateNormal(loc, scale_tril=tril)

    def content_posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        loc, raw = self.content_encoder(x).chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(raw) + self.min_scale).to_event(1)

    def forward(self, x: torch.Tensor) -> None:
        with data_plate(x):
            pose = pyro.sample(self.pose_site, self.pose_posterior(x))
            if self.transformer is not None:
                x = self.transformer(x, self.pose_map(pose), inverse=True)  # [..., B, C, H, W]
            pyro.sample("z", self.content_posterior(x))
