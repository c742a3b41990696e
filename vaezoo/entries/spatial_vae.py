"""The spatial VAEs (Wang, Yuan & Ji 2017, ``papers/spatial-vae-matrix-normal.txt``): latent feature
maps ``[c, d, d]`` decoded by a deconvolutional net, with a naive, a matrix-normal, a low-rank
matrix-normal and a full-covariance matrix-normal guide; ELBO with the analytic KL."""

from dataclasses import dataclass
from typing import Optional, Tuple

from vaezoo import zoo
from vaezoo.entries.vae import MAX_WIDTH, CommonConfig
from vaezoo.errors import ConfigError
from vaezoo.guides import MatrixNormalGuide, SpatialNormalGuide
from vaezoo.models import SpatialVAEModel, make_likelihood
from vaezoo.nets import ConvEncoder, DeconvDecoder
from vaezoo.nets.deconv import upsampling_stages

#: image side -> default (maps c, map size d); see SpatialVAEConfig
DEFAULT_MAPS = {28: (16, 7), 32: (32, 4), 64: (64, 4)}


@dataclass
class SpatialVAEConfig(CommonConfig):
    """Config of the spatial VAEs, for images ``(C, H, H)`` only. ``maps`` feature maps of
    ``map_size x map_size`` form the latent ``z``; ``None`` picks them from the image size:

    - 28x28 (MNIST): 16 maps of 7x7 (784 latent units). 7 = 28 / 4 is the grid on which the ``conv``
      baseline's decoder starts its two transposed convolutions, so both decoders have the same
      up-sampling stages and differ only in where the latent enters (a vector through fully
      connected layers there, maps here); 4x4 maps cannot reach 28 by doublings, and 14x14 maps
      would leave a single stage and make rows and columns of 14 (the matrix normal's O(d^3) full
      covariance then costs most).
    - 32x32 colour (CIFAR-10): 32 maps of 4x4 (512 units), three doublings.
    - 64x64 colour (CelebA): 64 maps of 4x4 (1024 units): the paper's 64 maps, with 4x4 in place of its
      3x3 so that four stride-2 stages reach 64 exactly.
    - other sizes (the encoder needs 4 to divide H): 16 maps of H/4, two stages as for 28x28.

    ``decoder_width``: channels of the decoder's first convolution (halved at every up-sampling
    stage); ``encoder_hidden``: the conv encoder's fully connected layer. The fields of
    :class:`~vaezoo.entries.vae.CommonConfig` mean what they mean for ``vae``: ``normal`` (``likelihood_scale``, learned if
    ``learn_scale``) for colour images, ``bernoulli`` with ``binarize`` for binary ones."""

    maps: Optional[int] = None
    map_size: Optional[int] = None
    decoder_width: int = 64
    encoder_hidden: int = 256

    def validate(self):
        """Ranges and names (make_config has checked the types)."""
        super().validate()
        for name in ("maps", "map_size"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= MAX_WIDTH:
                raise ConfigError(f"{name}={value}; expected an integer from 1 to {MAX_WIDTH}, or None (chosen from the image size)")
        for name in ("decoder_width", "encoder_hidden"):
            if not 1 <= getattr(self, name) <= MAX_WIDTH:
                raise ConfigError(f"{name}={getattr(self, name)}; expected an integer from 1 to {MAX_WIDTH}")


def map_shape(config: SpatialVAEConfig, data_shape) -> Tuple[int, int, int]:
    """``(c, d, d)`` for images ``data_shape = (C, H, H)``, or a one-line :class:`ConfigError`."""
    if len(data_shape) != 3 or data_shape[1] != data_shape[2]:
        raise ConfigError(
            f"the spatial VAEs need square images, data of shape (C, H, H), got shape {tuple(data_shape)}; "
            "use vae or rho-vae for vectors and sequences"
        )
    side = data_shape[1]
    if side % 4:
        raise ConfigError(f"the spatial VAEs' conv encoder needs an image side divisible by 4, got {side}x{side} images")
    default_maps, default_size = DEFAULT_MAPS.get(side, (16, side // 4))
    maps = config.maps if config.maps is not None else default_maps
    size = config.map_size if config.map_size is not None else default_size
    upsampling_stages(size, side)  # raises unless side = size * 2^k
    return maps, size, size


def build_spatial(config: SpatialVAEConfig, data_shape, guide: str):
    """The pair for ``guide`` = ``naive``, ``mvn``, ``lowrank`` or ``mvn-full``."""
    shape = map_shape(config, data_shape)
    likelihood = make_likelihood(config.likelihood, 3, config.likelihood_scale, config.learn_scale)
    out_shape = (likelihood.params_per_channel * data_shape[0],) + tuple(data_shape[1:])
    decoder = DeconvDecoder(shape, out_shape, config.decoder_width)
    if guide == "naive":
        units = SpatialNormalGuide.units(shape)
    else:
        mean, covariance = {"mvn": ("full", "diagonal"), "lowrank": ("outer", "diagonal"), "mvn-full": ("full", "cholesky")}[guide]
        units = MatrixNormalGuide.units(shape, mean, covariance)
    encoder = ConvEncoder(data_shape, units, hidden=config.encoder_hidden)
    q = SpatialNormalGuide(encoder, shape) if guide == "naive" else MatrixNormalGuide(encoder, shape, mean, covariance)
    return SpatialVAEModel(decoder, likelihood, shape), q


@zoo.register("spatial-vae-naive", SpatialVAEConfig,
              "spatial VAE: latent maps [c, d, d], deconv decoder, a diagonal normal reshaped into the maps")
def build_spatial_vae_naive(config: SpatialVAEConfig, data_shape):
    return build_spatial(config, data_shape, "naive")


@zoo.register("spatial-vae-mvn", SpatialVAEConfig,
              "spatial VAE with matrix-normal maps MN(M_k, diag(a_k)^2, diag(b_k)^2): variances are outer products a_k^2 (b_k^2)^T")
def build_spatial_vae_mvn(config: SpatialVAEConfig, data_shape):
    return build_spatial(config, data_shape, "mvn")


@zoo.register("spatial-vae-lowrank", SpatialVAEConfig,
              "spatial VAE with low-rank matrix-normal maps: mean u_k v_k^T, diagonal row/column covariances")
def build_spatial_vae_lowrank(config: SpatialVAEConfig, data_shape):
    return build_spatial(config, data_shape, "lowrank")


@zoo.register("spatial-vae-mvn-full", SpatialVAEConfig,
              "spatial VAE with matrix-normal maps of full (Cholesky) row and column covariances")
def build_spatial_vae_mvn_full(config: SpatialVAEConfig, data_shape):
    return build_spatial(config, data_shape, "mvn-full")
