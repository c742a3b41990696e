"""The baseline entries: ``vae`` (Kingma and Welling, 2014) and ``iwae`` (Burda et al., 2016),
with the MLP of Burda et al. by default or a convolutional encoder/decoder."""

from dataclasses import dataclass
from typing import Optional, Tuple

from vaezoo import zoo
from vaezoo.errors import ConfigError
from vaezoo.guides import DiagonalNormalGuide
from vaezoo.inference.estimators import ESTIMATORS
from vaezoo.models import LIKELIHOODS, VAEModel, make_likelihood
from vaezoo.nets import ACTIVATIONS, ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder

BINARIZE = (None, "dynamic", "fixed")


#: the largest latent size, layer width or particle count a config accepts
MAX_WIDTH = 1 << 16
#: the conv decoder's channels at H/4 and H/2, for configs without a ``decoder_channels`` field
CONV_DECODER_CHANNELS = (64, 32)


@dataclass
class CommonConfig:
    """The fields every VAE entry shares: ``likelihood``: ``bernoulli``, ``normal``
    (``likelihood_scale``, learned if ``learn_scale``) or ``continuous-bernoulli``; ``binarize``:
    how the training data are binarized (``dynamic``, ``fixed`` or ``None``); ``objective``:
    ``elbo`` or ``iwae`` with ``num_particles``; ``analytic_kl``: closed-form KL terms in the ELBO
    where they are exact; ``estimator``: the gradient estimator, ``standard``, ``stl`` (ELBO:
    sticking the landing) or ``dreg`` (IWAE: doubly reparameterized), see
    :mod:`vaezoo.inference.estimators`; ``beta`` and ``mmd_weight`` (objective ``elbo``): the weight
    of the KL term in the training loss and of an MMD between the codes and the prior (beta-VAE:
    ``beta`` > 1; InfoVAE: ``beta = 1 - alpha``, ``mmd_weight = alpha + lambda - 1``; see
    :class:`~vaezoo.inference.ELBO`); the reported ELBO stays the unweighted bound."""

    likelihood: str = "bernoulli"
    likelihood_scale: float = 0.1
    learn_scale: bool = False
    binarize: Optional[str] = "dynamic"
    objective: str = "elbo"
    num_particles: int = 1
    analytic_kl: bool = True
    estimator: str = "standard"
    beta: float = 1.0
    mmd_weight: float = 0.0

    def validate(self):
        """Ranges and names (make_config has checked the types)."""
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(f"likelihood={self.likelihood!r}; expected one of {', '.join(sorted(LIKELIHOODS))}")
        if not self.likelihood_scale > 0:
            raise ConfigError(f"likelihood_scale={self.likelihood_scale}; expected a number > 0")
        if self.binarize not in BINARIZE:
            raise ConfigError(f"binarize={self.binarize!r}; expected dynamic, fixed or none")
        if self.objective not in ("elbo", "iwae"):
            raise ConfigError(f"objective={self.objective!r}; expected elbo or iwae")
        if not 1 <= self.num_particles <= MAX_WIDTH:
            raise ConfigError(f"num_particles={self.num_particles}; expected an integer from 1 to {MAX_WIDTH}")
        for name in ("beta", "mmd_weight"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name}={getattr(self, name)}; expected a number >= 0")
        if self.objective != "elbo" and (self.beta != 1 or self.mmd_weight != 0):
            raise ConfigError(f"beta={self.beta}, mmd_weight={self.mmd_weight} with objective={self.objective}; "
                              "expected beta=1 and mmd_weight=0 (they weight the ELBO's terms)")
        allowed = ESTIMATORS["ELBO" if self.objective == "elbo" else "IWAE"]
        if self.estimator not in allowed:
            raise ConfigError(f"estimator={self.estimator!r} with objective={self.objective}; expected one of {', '.join(allowed)}")


@dataclass
class VAEConfig(CommonConfig):
    """Config of the baseline VAE: ``latent_dim`` latents; ``net``: ``mlp`` (Burda et al.:
    ``hidden`` layers of ``activation``) or ``conv``, whose decoder maps z through 256 units to
    ``decoder_channels[0]`` maps of H/4 x W/4, then ``decoder_channels[1]`` of H/2 x W/2 (narrow
    it to match another decoder's size); the other fields as :class:`CommonConfig`."""

    latent_dim: int = 50
    net: str = "mlp"
    hidden: Tuple[int, ...] = (200, 200)
    activation: str = "tanh"
    decoder_channels: Tuple[int, ...] = CONV_DECODER_CHANNELS

    def validate(self):
        super().validate()
        validate_networks(self)


def validate_networks(config) -> None:
    """The checks of the network fields a config shares with ``vae``: ``latent_dim``, ``net``,
    ``hidden``, ``activation``. Upper bounds too: a width of 10^20 would fail deep inside torch's
    allocator instead of in one line."""
    if not 1 <= config.latent_dim <= MAX_WIDTH:
        raise ConfigError(f"latent_dim={config.latent_dim}; expected an integer from 1 to {MAX_WIDTH}")
    if config.net not in ("mlp", "conv"):
        raise ConfigError(f"net={config.net!r}; expected mlp or conv")
    if any(not 1 <= h <= MAX_WIDTH for h in config.hidden):
        raise ConfigError(f"hidden={config.hidden!r}; expected layer sizes from 1 to {MAX_WIDTH}")
    if config.activation not in ACTIVATIONS:
        raise ConfigError(f"activation={config.activation!r}; expected one of {', '.join(sorted(ACTIVATIONS))}")
    channels = getattr(config, "decoder_channels", CONV_DECODER_CHANNELS)
    if len(channels) != 2 or any(not 1 <= c <= MAX_WIDTH for c in channels):
        raise ConfigError(f"decoder_channels={channels!r}; expected two channel counts from 1 to {MAX_WIDTH}")


@dataclass
class IWAEConfig(VAEConfig):
    objective: str = "iwae"
    num_particles: int = 5


def build_nets(config: VAEConfig, data_shape, encoder_out: int):
    """Encoder ``[B, *data_shape] -> [B, encoder_out]``, decoder ``[..., latent] -> [..., P*C, *rest]``
    for ``data_shape = (C, *rest)`` (``P``: the likelihood's outputs per entry of C), likelihood."""
    likelihood = make_likelihood(config.likelihood, len(data_shape), config.likelihood_scale, config.learn_scale)
    out_shape = (likelihood.params_per_channel * data_shape[0],) + tuple(data_shape[1:])
    if config.net == "mlp":
        encoder = MLPEncoder(data_shape, config.hidden, encoder_out, config.activation)
        decoder = MLPDecoder(config.latent_dim, tuple(reversed(config.hidden)), out_shape, config.activation)
    else:
        encoder = ConvEncoder(data_shape, encoder_out)
        decoder = ConvDecoder(config.latent_dim, out_shape, channels=tuple(getattr(config, "decoder_channels", CONV_DECODER_CHANNELS)))
    return encoder, decoder, likelihood


@zoo.register("vae", VAEConfig, "standard VAE: N(0, I) prior, diagonal-normal guide, Burda MLP (or conv), ELBO")
def build_vae(config: VAEConfig, data_shape):
    encoder, decoder, likelihood = build_nets(config, data_shape, 2 * config.latent_dim)
    return VAEModel(decoder, likelihood, config.latent_dim), DiagonalNormalGuide(encoder, config.latent_dim)


@zoo.register("iwae", IWAEConfig, "the vae pair trained on the importance-weighted bound IWAE-K (Burda et al. 2016)")
def build_iwae(config: IWAEConfig, data_shape):
    return build_vae(config, data_shape)
