"""The two-stochastic-layer entries of Burda et al. (2016): ``vae-2l`` (ELBO) and ``iwae-2l``
(IWAE, K = 5), with their architecture by default: the guide x -> two tanh layers of 200 -> z1 (100)
-> two tanh layers of 100 -> z2 (50), the model z2 ~ N(0, I) -> two tanh layers of 100 -> z1 -> two
tanh layers of 200 -> x."""

from dataclasses import dataclass
from typing import Tuple

from vaezoo import zoo
from vaezoo.entries.vae import MAX_WIDTH, CommonConfig
from vaezoo.errors import ConfigError
from vaezoo.models import make_likelihood
from vaezoo.models.vae2l import TwoLayerGuide, TwoLayerVAEModel
from vaezoo.nets import ACTIVATIONS, MLP, MLPDecoder, MLPEncoder


@dataclass
class TwoLayerConfig(CommonConfig):
    """``latent1_dim`` units in z1, ``latent2_dim`` in z2; ``hidden1``: the layers between x and z1
    (the guide's, and reversed the model's), ``hidden2``: those between z1 and z2; ``activation``
    after every hidden layer; the other fields as :class:`~vaezoo.entries.vae.CommonConfig`."""

    latent1_dim: int = 100
    latent2_dim: int = 50
    hidden1: Tuple[int, ...] = (200, 200)
    hidden2: Tuple[int, ...] = (100, 100)
    activation: str = "tanh"

    def validate(self):
        super().validate()
        for name in ("latent1_dim", "latent2_dim"):
            if not 1 <= getattr(self, name) <= MAX_WIDTH:
                raise ConfigError(f"{name}={getattr(self, name)}; expected an integer from 1 to {MAX_WIDTH}")
        for name in ("hidden1", "hidden2"):
            if any(not 1 <= h <= MAX_WIDTH for h in getattr(self, name)):
                raise ConfigError(f"{name}={getattr(self, name)!r}; expected layer sizes from 1 to {MAX_WIDTH}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation={self.activation!r}; expected one of {', '.join(sorted(ACTIVATIONS))}")


@dataclass
class TwoLayerIWAEConfig(TwoLayerConfig):
    objective: str = "iwae"
    num_particles: int = 5


@zoo.register("vae-2l", TwoLayerConfig,
              "VAE with two stochastic layers (Burda et al. 2016): z2 (50) -> z1 (100) -> x, tanh MLPs, ELBO")
def build_vae_2l(config: TwoLayerConfig, data_shape):
    likelihood = make_likelihood(config.likelihood, len(data_shape), config.likelihood_scale, config.learn_scale)
    out_shape = (likelihood.params_per_channel * data_shape[0],) + tuple(data_shape[1:])
    act = config.activation
    model = TwoLayerVAEModel(
        MLP(config.latent2_dim, tuple(reversed(config.hidden2)), 2 * config.latent1_dim, act),
        MLPDecoder(config.latent1_dim, tuple(reversed(config.hidden1)), out_shape, act),
        likelihood, config.latent1_dim, config.latent2_dim,
    )
    guide = TwoLayerGuide(
        MLPEncoder(data_shape, config.hidden1, 2 * config.latent1_dim, act),
        MLP(config.latent1_dim, config.hidden2, 2 * config.latent2_dim, act),
    )
    return model, guide


@zoo.register("iwae-2l", TwoLayerIWAEConfig,
              "the vae-2l pair trained on the importance-weighted bound IWAE-K (Burda et al. 2016)")
def build_iwae_2l(config: TwoLayerIWAEConfig, data_shape):
    return build_vae_2l(config, data_shape)
