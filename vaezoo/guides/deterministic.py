"""A deterministic encoder as a guide: q(z | x) = Delta(f(x)), the encoder of adversarial and
Wasserstein autoencoders (AAE, WAE, MaskAAE)."""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from vaezoo.traces import data_plate


class DeltaGuide(PyroModule):
    """``encoder`` maps ``[B, *data_shape]`` to the codes ``[B, latent_dim]``; site ``"z"`` is a
    ``Delta`` at the code (it has no density: the log-marginal estimators refuse it)."""

    def __init__(self, encoder: nn.Module, latent_dim: int, site: str = "z"):
        super().__init__()
        self.encoder = encoder
        self.latent_dim = latent_dim
        self.site = site

    def forward(self, x: torch.Tensor) -> None:
        with data_plate(x):
            pyro.sample(self.site, dist.Delta(self.encoder(x)).to_event(1))
