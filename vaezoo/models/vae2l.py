"""The VAE with two stochastic layers of Burda et al. (2016): the model z2 -> z1 -> x and the guide
x -> z1 -> z2, every conditional a diagonal normal from an MLP (the likelihood's for x)."""

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import nn

from vaezoo.models.likelihoods import Likelihood
from vaezoo.traces import data_plate


def diagonal_normal(params: torch.Tensor, min_scale: float) -> dist.TorchDistribution:
    """N(loc, diag(sigma^2)) from ``params  # [..., 2 * D]``: the mean and a raw scale, sigma =
    softplus(raw) + min_scale (as the one-layer guide's)."""
    loc, raw = params.chunk(2, dim=-1)
    return dist.Normal(loc, F.softplus(raw) + min_scale).to_event(1)


class TwoLayerVAEModel(PyroModule):
    """``forward(x)`` is the Pyro model: ``"z2"  # [..., B, latent2_dim]`` from N(0, I), ``"z1"  #
    [..., B, latent1_dim]`` from the diagonal normal ``top(z2)`` gives (``[..., 2 * latent1_dim]``),
    and the observation ``"x"`` from ``likelihood(decoder(z1))``. Leading particle dimensions
    broadcast through every network."""

    def __init__(self, top: nn.Module, decoder: nn.Module, likelihood: Likelihood, latent1_dim: int, latent2_dim: int,
                 min_scale: float = 1e-4):
        super().__init__()
        self.top = top
        self.decoder = decoder
        self.likelihood = likelihood
        self.latent1_dim = latent1_dim
        self.latent2_dim = latent2_dim
        self.min_scale = min_scale

    def prior(self, x: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(x.new_zeros(()), x.new_ones(())).expand([self.latent2_dim]).to_event(1)

    def forward(self, x: torch.Tensor) -> None:
        with data_plate(x):
            z2 = pyro.sample("z2", self.prior(x))
            z1 = pyro.sample("z1", diagonal_normal(self.top(z2), self.min_scale))
            pyro.sample("x", self.likelihood(self.decoder(z1)), obs=x)


class TwoLayerGuide(PyroModule):
    """``forward(x)`` is the Pyro guide: ``"z1"`` from the diagonal normal ``encoder(x)`` gives
    (``[B, 2 * latent1_dim]``), then ``"z2"`` from the one ``upper(z1)`` gives."""

    def __init__(self, encoder: nn.Module, upper: nn.Module, min_scale: float = 1e-4):
        super().__init__()
        self.encoder = encoder
        self.upper = upper
        self.min_scale = min_scale

    def forward(self, x: torch.Tensor) -> None:
        with data_plate(x):
            z1 = pyro.sample("z1", diagonal_normal(self.encoder(x), self.min_scale))
            pyro.sample("z2", diagonal_normal(self.upper(z1), self.min_scale))
