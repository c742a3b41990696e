"""``rho-vae`` (Ferdowsi et al.): the ``vae`` model with an AR(1)-covariance posterior, trained
with the closed-form KL to N(0, I) of ``papers/README.md``."""

from dataclasses import dataclass

from vaezoo import zoo
from vaezoo.entries.vae import VAEConfig, build_nets
from vaezoo.guides import AR1Guide
from vaezoo.models import VAEModel


@dataclass
class RhoVAEConfig(VAEConfig):
    """The ``vae`` config; the encoder has ``latent_dim + 2`` outputs (mu, log s, raw rho)."""


@zoo.register("rho-vae", RhoVAEConfig, "rho-VAE: the vae model with an AR(1) posterior N(mu, s Toeplitz(rho^|i-j|)), analytic KL")
def build_rho_vae(config: RhoVAEConfig, data_shape):
    encoder, decoder, likelihood = build_nets(config, data_shape, config.latent_dim + 2)
    return VAEModel(decoder, likelihood, config.latent_dim), AR1Guide(encoder, config.latent_dim)
