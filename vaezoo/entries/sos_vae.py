"""``sos-vae`` (``papers/sos-vae-low-rank-observations.txt``): a VAE whose observation distribution is
a low-rank-plus-diagonal normal over all the entries of a datapoint, and ``beta-vae-gaussian``, its
pixel-wise independent baseline; both trained by the Lagrangian objective of
:mod:`vaezoo.inference.constrained` on real-valued data in [0, 1]."""

import math
from dataclasses import dataclass
from typing import Optional, Tuple

from vaezoo import zoo
from vaezoo.entries.vae import BINARIZE, validate_networks
from vaezoo.errors import ConfigError
from vaezoo.guides import DiagonalNormalGuide
from vaezoo.inference.constrained import UPDATES, Constrained
from vaezoo.models import VAEModel
from vaezoo.models.low_rank_likelihood import DiagonalNormalLikelihood, LowRankNormalLikelihood
from vaezoo.models.sos_vae import ObservationHeads
from vaezoo.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder


@dataclass
class BetaVAEGaussianConfig:
    """``net``: ``mlp`` (``hidden`` layers) or ``conv`` encoder and decoder trunk; ``features``:
    the trunk's features per position, read by the heads; the observation variance is
    ``cov_diag`` plus a learned softplus when ``learn_diag``; ``warmup_epochs``: epochs with the
    variance heads frozen. The objective's constraints: ``kl_target`` (nats per datapoint) and
    ``entropy_target`` (nats per entry of the datapoint, a pixel of an image, so that one value
    serves every image size: the objective's target is n times it); None: unconstrained; ``damping`` and ``multiplier_lr`` of the method of
    multipliers, ``multiplier_update``: ``one-sided`` (an inequality's augmented Lagrangian) or
    ``two-sided`` (the SOS-VAE reference code's: the damping pulls each constrained value to its
    target from both sides, the multiplier ascends and is clipped at 0), ``batch_sum``: the
    violations in the reference code's units, sums over the batch (see
    :class:`~vaezoo.inference.constrained.Constrained`)."""

    latent_dim: int = 32
    net: str = "mlp"
    hidden: Tuple[int, ...] = (200, 200)
    activation: str = "relu"
    features: int = 16
    cov_diag: float = 1e-3
    learn_diag: bool = True
    binarize: Optional[str] = None
    warmup_epochs: int = 1
    kl_target: Optional[float] = 25.0
    entropy_target: Optional[float] = None
    damping: float = 10.0
    multiplier_lr: float = 1.0
    multiplier_update: str = "one-sided"
    batch_sum: bool = False
    analytic_kl: bool = True

    def validate(self):
        """Ranges and names (make_config has checked the types)."""
        validate_networks(self)
        if self.features < 1:
            raise ConfigError(f"features={self.features}; expected an integer >= 1")
        if not self.cov_diag > 0:
            raise ConfigError(f"cov_diag={self.cov_diag}; expected a number > 0")
        if self.binarize not in BINARIZE:
            raise ConfigError(f"binarize={self.binarize!r}; expected dynamic, fixed or none")
        if self.warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs={self.warmup_epochs}; expected an integer >= 0")
        if not self.damping > 0:
            raise ConfigError(f"damping={self.damping}; expected a number > 0")
        if self.multiplier_update not in UPDATES:
            raise ConfigError(f"multiplier_update={self.multiplier_update!r}; expected one of {', '.join(UPDATES)}")
        if self.multiplier_update == "one-sided" and not 0 < self.multiplier_lr <= self.damping:
            raise ConfigError(f"multiplier_lr={self.multiplier_lr}; expected a number in (0, damping={self.damping:g}] "
                              "for multiplier_update=one-sided")
        if not (self.multiplier_lr > 0 and math.isfinite(self.multiplier_lr)):
            raise ConfigError(f"multiplier_lr={self.multiplier_lr}; expected a finite number > 0")


@dataclass
class SOSVAEConfig(BetaVAEGaussianConfig):
    """The baseline's fields, and ``rank`` of the covariance factor. Defaults: the paper's rank 25
    and fixed diagonal (1e-5 in its code; 1e-4 here, which float32 Cholesky factors of the
    capacitance matrix take on MNIST). The targets were read from unconstrained runs on
    mnist-small (net=conv, 3 epochs) as the paper says: the KL of the beta-VAE baseline (25 nats;
    the paper gives both models the same KL target) and an entropy just below the SOS-VAE's
    (-2435 nats for 784 pixels; the target -3.125 nats per pixel is -2450, above the floor of
    1/2 log(2 pi e 1e-4) = -3.186 per pixel at cov_diag=1e-4)."""

    rank: int = 25
    cov_diag: float = 1e-4
    learn_diag: bool = False
    entropy_target: Optional[float] = -3.125

    def validate(self):
        super().validate()
        if self.rank < 1:
            raise ConfigError(f"rank={self.rank}; expected an integer >= 1")


@dataclass
class SOSVAEPaperConfig(SOSVAEConfig):
    """``sos-vae`` with the paper's constants and its reference code's training rule: latent size
    128, rank 25 (section 4.1; the reference code's default is 5), the covariance diagonal fixed
    at 1e-5 (the reference code's ``EPS``), KL target 45 nats (the paper's CelebA value, for both
    models), damping 10, multipliers by gradient ascent with step 1 clipped at 0
    (``multiplier_update=two-sided``), on violations summed over the batch (``batch_sum=true``),
    the variance heads frozen for the first epoch. The reference trains with Adam at learning
    rate 1e-4 on batches of 25 (its defaults; the paper states neither): pass
    ``--lr 1e-4 --batch-size 25`` to ``vaezoo train``.

    What still differs from the paper:

    - the data: CelebA (colour, 218 x 178 in the reference code, a random 10,000 images of it with
      horizontal flips) and the UK Biobank brain images are not shipped; the entry trains on
      whatever ``--dataset`` gives (MNIST in the checks), so the targets, set for CelebA, are not
      tuned to it (the paper reads them from an unconstrained run on each dataset: 25 nats of KL
      on mnist-small, ``--set kl_target=25``);
    - the entropy target: the paper's CelebA value is not given in a form this entry can use. The
      default, -4.24 nats per pixel, is ``sos-vae``'s target carried to the diagonal of 1e-5: the
      unconstrained mnist-small runs at 1e-4 had an entropy 63 nats above the floor of 784 x 1/2
      log(2 pi e 1e-4) = -2498, which the same factor would put 63 + 25/2 log 10 = 92 nats above
      the floor at 1e-5 (784 x -4.3375 = -3401), less the 15 nats by which ``sos-vae``'s target sits
      below its unconstrained value: -3324, -4.24 per pixel. (``sos-vae``'s -3.125 per pixel leaves
      about 950 nats of entropy to the factor at 1e-5, and on full MNIST the variance then explodes
      as the paper's Appendix A describes: by epoch 7 the means of the test reconstructions were
      2.4e5 in absolute value, cancelled inside the factor's span, bench/RESULTS.md);
    - the networks: ``net=conv`` (two strided convolutions each way, ``features`` channels read by
      1x1 heads) instead of the reference's ResNet (eight residual blocks each way, batch
      normalization, 512 channels); the mean head starts at PyTorch's default weights instead of
      N(0, 1e-5) (see :class:`~vaezoo.models.sos_vae.ObservationHeads`);
    - the budget: the paper trained for 72 hours on a T4 GPU;
    - precision: the reference offers float64 (``-f64``); a diagonal of 1e-5 makes the capacitance
      matrix's Cholesky factor ill-conditioned in float32 (``vaezoo train --dtype float64`` if it
      fails).

    Its baseline with the same constants: ``beta-vae-gaussian-paper``."""

    latent_dim: int = 128
    net: str = "conv"
    cov_diag: float = 1e-5
    kl_target: Optional[float] = 45.0
    entropy_target: Optional[float] = -4.24
    multiplier_update: str = "two-sided"
    batch_sum: bool = True


@dataclass
class BetaVAEGaussianPaperConfig(BetaVAEGaussianConfig):
    """``beta-vae-gaussian`` with the constants of ``sos-vae-paper`` that the baseline shares:
    latent size 128, ``net=conv``, the variance floor 1e-5 under the learned pixel-wise variance,
    KL target 45 nats, the two-sided multiplier update on batch-summed violations (the SOS-VAE
    paper gives both models the same KL target and training rule). Train it as ``sos-vae-paper``
    (``--lr 1e-4 --batch-size 25``)."""

    latent_dim: int = 128
    net: str = "conv"
    cov_diag: float = 1e-5
    kl_target: Optional[float] = 45.0
    multiplier_update: str = "two-sided"
    batch_sum: bool = True


def _heads(config: BetaVAEGaussianConfig, data_shape, rank: int):
    """Encoder ``[B, *data_shape] -> [B, 2 * latent_dim]`` and the decoder with its heads."""
    trunk_shape = (config.features,) + tuple(data_shape[1:])
    if config.net == "mlp":
        encoder = MLPEncoder(data_shape, config.hidden, 2 * config.latent_dim, config.activation)
        trunk = MLPDecoder(config.latent_dim, tuple(reversed(config.hidden)), trunk_shape, config.activation)
    else:
        encoder = ConvEncoder(data_shape, 2 * config.latent_dim)
        trunk = ConvDecoder(config.latent_dim, trunk_shape)
    decoder = ObservationHeads(trunk, data_shape, config.features, rank, config.cov_diag, config.learn_diag,
                               config.warmup_epochs, config.activation)
    return encoder, decoder


def _objective(config: BetaVAEGaussianConfig, model, guide, compile: bool):
    n = math.prod(model.decoder.data_shape)
    entropy = None if config.entropy_target is None else config.entropy_target * n
    return Constrained(model, guide, kl_target=config.kl_target, entropy_target=entropy,
                       damping=config.damping, multiplier_lr=config.multiplier_lr, update=config.multiplier_update,
                       batch_sum=config.batch_sum, analytic_kl=config.analytic_kl, compile=compile)


@zoo.register("sos-vae", SOSVAEConfig,
              "SOS-VAE: low-rank multivariate-normal observations over all pixels, KL and entropy constraints (MDMM)",
              objective=_objective)
def build_sos_vae(config: SOSVAEConfig, data_shape):
    encoder, decoder = _heads(config, data_shape, config.rank)
    model = VAEModel(decoder, LowRankNormalLikelihood(len(data_shape), cov_diag=config.cov_diag), config.latent_dim)
    return model, DiagonalNormalGuide(encoder, config.latent_dim)


@zoo.register("beta-vae-gaussian", BetaVAEGaussianConfig,
              "beta-VAE baseline of the SOS-VAE: pixel-wise normal observations, KL constraint (MDMM)",
              objective=_objective)
def build_beta_vae_gaussian(config: BetaVAEGaussianConfig, data_shape):
    encoder, decoder = _heads(config, data_shape, 0)
    model = VAEModel(decoder, DiagonalNormalLikelihood(len(data_shape)), config.latent_dim)
    return model, DiagonalNormalGuide(encoder, config.latent_dim)


@zoo.register("sos-vae-paper", SOSVAEPaperConfig,
              "sos-vae with the paper's constants: latent 128, rank 25, diagonal 1e-5, KL target 45, entropy target -4.24/pixel, two-sided MDMM",
              objective=_objective)
def build_sos_vae_paper(config: SOSVAEPaperConfig, data_shape):
    return build_sos_vae(config, data_shape)


@zoo.register("beta-vae-gaussian-paper", BetaVAEGaussianPaperConfig,
              "beta-vae-gaussian with sos-vae-paper's shared constants: latent 128, conv, variance floor 1e-5, KL target 45",
              objective=_objective)
def build_beta_vae_gaussian_paper(config: BetaVAEGaussianPaperConfig, data_shape):
    return build_beta_vae_gaussian(config, data_shape)
