"""Transformer VAEs (``papers/transformer-vae-pose-latents.txt``): ``tvae-affine``, ``tvae-affine5``,
``tvae-tps`` (content z rendered in a reference pose and warped by a pose u) and ``dtvae-affine``,
``dtvae-tps`` (the encoder also un-warps the image by the pose before encoding its content)."""

from dataclasses import dataclass
from typing import ClassVar, Optional, Tuple

import torch

from vaezoo import zoo
from vaezoo.entries.vae import VAEConfig, build_nets
from vaezoo.errors import ConfigError
from vaezoo.guides.pose import PoseGuide, pose_outputs
from vaezoo.models.transformer_vae import POSE_PRIORS, PosePrior, TransformerVAEModel
from vaezoo.nets import MLPEncoder
from vaezoo.nets.transformers import make_transformer


@dataclass
class TransformerVAEConfig(VAEConfig):
    """The ``vae`` config (its nets, by default the paper's two ReLU layers of 256 units, encode
    and decode the content z) plus the pose: ``loc_hidden``: the localization network's layers
    (the paper's one layer of 128); ``pose_prior``: ``none`` (a deterministic pose: flat prior,
    Delta guide), ``normal`` (learned mean and diagonal covariance) or ``full-rank`` (a pose code
    v ~ N(0, I_r) with r = ``pose_rank``, all of u's dimensions if None, and u = b + W v);
    ``pose_guide``: ``diagonal`` (the default with a prior) or ``full-rank`` normal q(u | x) or
    q(v | x); without a prior the pose guide is a Delta and ``pose_guide`` stays None;
    ``pose_scale``: the prior's initial standard deviations (W = pose_scale I for full-rank)."""

    transformer: ClassVar[str] = "affine"
    unwarp: ClassVar[bool] = False

    latent_dim: int = 20
    hidden: Tuple[int, ...] = (256, 256)
    activation: str = "relu"
    loc_hidden: Tuple[int, ...] = (128,)
    pose_prior: str = "none"
    pose_guide: Optional[str] = None
    pose_rank: Optional[int] = None
    pose_scale: float = 0.1

    def pose_params(self) -> int:
        """The transformer's number of parameters, k."""
        return make_transformer(self.transformer, getattr(self, "grid_size", 3)).num_params

    def validate(self):
        super().validate()
        if any(h < 1 for h in self.loc_hidden):
            raise ConfigError(f"loc_hidden={self.loc_hidden!r}; expected layer sizes >= 1")
        if self.pose_prior not in POSE_PRIORS:
            raise ConfigError(f"pose_prior={self.pose_prior!r}; expected one of {', '.join(POSE_PRIORS)}")
        if self.pose_guide not in (None, "diagonal", "full-rank"):
            raise ConfigError(f"pose_guide={self.pose_guide!r}; expected diagonal, full-rank or none")
        if self.pose_guide is not None and self.pose_prior == "none":
            raise ConfigError(
                f"pose_guide={self.pose_guide!r} needs a pose prior (pose_prior=normal or full-rank); "
                "with pose_prior=none the pose is deterministic (a Delta guide)"
            )
        k = self.pose_params()
        if self.pose_rank is not None and not 1 <= self.pose_rank <= k:
            raise ConfigError(f"pose_rank={self.pose_rank}; expected an integer from 1 to {k} (the pose's dimension), or none")
        if not self.pose_scale > 0:
            raise ConfigError(f"pose_scale={self.pose_scale}; expected a number > 0")


@dataclass
class TPSConfig(TransformerVAEConfig):
    """``grid_size``: s, the thin-plate spline's s x s control points (2 s^2 pose parameters)."""

    transformer: ClassVar[str] = "tps"
    grid_size: int = 3

    def validate(self):
        if self.grid_size < 2:
            raise ConfigError(f"grid_size={self.grid_size}; expected an integer >= 2")
        super().validate()


@dataclass
class Affine5Config(TransformerVAEConfig):
    transformer: ClassVar[str] = "affine5"


@dataclass
class DTVAEAffineConfig(TransformerVAEConfig):
    unwarp: ClassVar[bool] = True


@dataclass
class DTVAETPSConfig(TPSConfig):
    unwarp: ClassVar[bool] = True


def build_transformer_vae(config: TransformerVAEConfig, data_shape):
    if len(data_shape) != 3:
        raise ConfigError(
            f"the transformer VAEs need image data of shape (C, H, W), got shape {tuple(data_shape)}; "
            "use vae for vectors and sequences"
        )
    transformer = make_transformer(config.transformer, getattr(config, "grid_size", 3))
    k = transformer.num_params
    encoder, decoder, likelihood = build_nets(config, data_shape, 2 * config.latent_dim)
    identity = transformer.identity(torch.zeros(()))  # [k], in the default dtype as the networks are
    rank = config.pose_rank if config.pose_rank is not None else k
    pose_prior = PosePrior(config.pose_prior, identity, rank, config.pose_scale)
    pose_kind = "delta" if config.pose_prior == "none" else config.pose_guide or "diagonal"
    localizer = MLPEncoder(data_shape, config.loc_hidden, pose_outputs(pose_kind, pose_prior.dim), config.activation)
    # the guide's mean starts at the pose of the identity warp: u = identity, or the code v = 0
    pose_init = identity if pose_prior.site == "u" else identity.new_zeros(rank)
    # q's initial scales: half the prior's for u; for a code v ~ N(0, I), whose prior scale is 1, a half
    guide = PoseGuide(
        encoder, localizer, config.latent_dim, pose_prior.site, pose_prior.dim, pose_kind, pose_init,
        init_scale=0.5 * config.pose_scale if pose_prior.site == "u" else 0.5,
        transformer=transformer if config.unwarp else None,
        pose_map=pose_prior.pose_map if config.unwarp else None,
    )
    channels = likelihood.params_per_channel * data_shape[0]
    model = TransformerVAEModel(decoder, likelihood, transformer, pose_prior, config.latent_dim, channels)
    return model, guide


_POSE = "pose prior none/normal/full-rank (site u, or the pose code v)"
zoo.register("tvae-affine", TransformerVAEConfig, f"transformer VAE: content z warped by a 6-parameter affine pose u; {_POSE}")(build_transformer_vae)
zoo.register("tvae-affine5", Affine5Config, f"transformer VAE with the paper's 5-parameter affine pose (rotation, log scales, shift); {_POSE}")(build_transformer_vae)
zoo.register("tvae-tps", TPSConfig, f"transformer VAE with a thin-plate-spline pose (2 s^2 parameters, s = 3); {_POSE}")(build_transformer_vae)
zoo.register("dtvae-affine", DTVAEAffineConfig, f"double transformer VAE: the affine pose also un-warps x before the content encoder; {_POSE}")(build_transformer_vae)
zoo.register("dtvae-tps", DTVAETPSConfig, f"double transformer VAE with a thin-plate-spline pose; {_POSE}")(build_transformer_vae)
