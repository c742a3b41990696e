"""Generative programs p(x, z): priors, decoders and likelihoods, as nn.Modules whose forward is a
Pyro model keeping the contract of DESIGN.md."""

from vaezoo.models.likelihoods import LIKELIHOODS, Likelihood, make_likelihood
from vaezoo.models.vae import VAEModel

__all__ = ["VAEModel", "Likelihood", "LIKELIHOODS", "make_likelihood"]
