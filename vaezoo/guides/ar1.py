"""The rho-VAE guide (Ferdowsi et al., ``papers/rho-vae-ar1-posterior.txt``): q(z | x) is a
Gaussian with AR(1) covariance s * Toeplitz(1, rho, ..., rho^{d-1}), two scalars per datapoint
on top of the mean."""

import pyro
import torch
from pyro.nn import PyroModule
from torch import nn

from vaezoo.distributions import AR1Normal
from vaezoo.traces import data_plate


class AR1Guide(PyroModule):
    """``encoder`` maps ``[B, *data_shape]`` to ``[B, latent_dim + 2]``: the mean mu, log s and a raw
    correlation. As in the paper, rho = tanh(raw), here shrunk by ``1 - rho_margin`` so that
    log(1 - rho^2) stays finite in float32; the marginal standard deviation is sqrt(s).
    Works for any model whose latent site ``site`` is a vector ``[..., B, latent_dim]``.
    A ``PyroModule``: reading ``self.encoder`` in ``forward`` registers it with ``pyro.module``."""

    def __init__(self, encoder: nn.Module, latent_dim: int, site: str = "z", rho_margin: float = 1e-3):
        super().__init__()
        self.encoder = encoder
        self.latent_dim = latent_dim
        self.site = site
        self.rho_margin = rho_margin

    def posterior(self, x: torch.Tensor) -> AR1Normal:
        h = self.encoder(x)
        loc, log_s, raw_rho = h[..., : self.latent_dim], h[..., self.latent_dim], h[..., self.latent_dim + 1]
        rho = (1.0 - self.rho_margin) * torch.tanh(raw_rho)
        return AR1Normal(loc, (0.5 * log_s).exp(), rho)

    def forward(self, x: torch.Tensor) -> None:
        with data_plate(x):
            pyro.sample(self.site, self.posterior(x))
