"""The standard VAE model (Kingma and Welling, 2014): z ~ N(0, I), x | z ~ likelihood(decoder(z))."""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from vaezoo.models.likelihoods import Likelihood
from vaezoo.traces import data_plate


class VAEModel(PyroModule):
    """``forward(x)`` is the Pyro model. ``x``: ``[B, *data_shape]`` (images ``[B, C, H, W]``,
    vectors ``[B, D]``, sequences); latent site ``"z"``: ``[..., B, latent_dim]`` (leading particle
    dimensions broadcast); observation site ``"x"``.

    ``decoder`` maps ``[..., latent_dim]`` to ``[..., P*C, *rest]`` for ``data_shape = (C, *rest)``,
    where ``P`` is the likelihood's number of parameters per entry of ``C``.

    A ``PyroModule`` with plain ``nn.Module`` networks: reading ``self.decoder`` (and
    ``self.likelihood``) inside ``forward`` issues ``pyro.module`` for it, so the parameters are param
    sites of every trace and entries of Pyro's param store (``SVI``, ``Predictive`` and handlers see
    them); the module's own parameters stay the ones used and trained.
    """

    def __init__(self, decoder: nn.Module, likelihood: Likelihood, latent_dim: int):
        super().__init__()
        self.decoder = decoder
        self.likelihood = likelihood
        self.latent_dim = latent_dim

    def prior(self, x: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(x.new_zeros(()), x.new_ones(())).expand([self.latent_dim]).to_event(1)

    def forward(self, x: torch.Tensor) -> None:
        with data_plate(x):
            z = pyro.sample("z", self.prior(x))
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)
