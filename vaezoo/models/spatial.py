"""The spatial VAE model (Wang, Yuan & Ji 2017, ``papers/spatial-vae-matrix-normal.txt``): latent
feature maps z ~ N(0, I) of shape ``[c, d, d]``, x | z ~ likelihood(deconvolutional decoder(z))."""

import math
from typing import Sequence

import pyro.distributions as dist
import torch
from torch import nn

from vaezoo.models.likelihoods import Likelihood
from vaezoo.models.vae import VAEModel


class SpatialVAEModel(VAEModel):
    """:class:`VAEModel` whose latent site ``"z"`` is ``[..., B, c, d, d]`` (``map_shape = (c, d, d)``):
    ``c`` feature maps of ``d x d`` with a standard normal prior, event ``[c, d, d]``. ``decoder`` maps
    ``[..., c, d, d]`` to ``[..., P*C, H, W]``.

    The prior is ``Normal(0, 1)`` over the three event dimensions: equal in distribution to ``c``
    standard matrix normals, and the one form every spatial guide has a closed-form KL to (a
    ``MatrixNormal`` guide through Pyro's ``Independent``/``Independent`` rule and the registered
    ``KL(MatrixNormal || Independent(Normal))``, the naive guide through Normal/Normal)."""

    def __init__(self, decoder: nn.Module, likelihood: Likelihood, map_shape: Sequence[int]):
        super().__init__(decoder, likelihood, math.prod(map_shape))
        self.map_shape = tuple(int(s) for s in map_shape)

    def prior(self, x: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(x.new_zeros(()), x.new_ones(())).expand(self.map_shape).to_event(3)
