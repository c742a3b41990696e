"""The mean-field Gaussian guide q(z | x) = N(mu(x), diag(sigma(x)^2)) of the standard VAE."""

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import nn

from vaezoo.traces import data_plate


class DiagonalNormalGuide(PyroModule):
    """``encoder`` maps ``[B, *data_shape]`` to ``[B, 2 * latent_dim]``: the mean and a raw scale,
    sigma = softplus(raw) + min_scale (softplus rather than exp keeps early training stable).
    A ``PyroModule``: reading ``self.encoder`` in ``forward`` registers it with ``pyro.module``."""

    def __init__(self, encoder: nn.Module, latent_dim: int, site: str = "z", min_scale: float = 1e-4):
        super().__init__()
        self.encoder = encoder
        self.latent_dim = latent_dim
        self.site = site
        self.min_scale = min_scale

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        loc, raw = self.encoder(x).chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(raw) + self.min_scale).to_event(1)

    def forward(self, x: torch.Tensor) -> None:
        with data_plate(x):
            pyro.sample(self.site, self.posterior(x))
