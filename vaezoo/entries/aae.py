"""Autoencoders with a deterministic encoder whose aggregate posterior is matched to N(0, I):
``aae``, ``wae-gan``, ``wae-mmd``, ``mask-aae`` (MaskAAE, papers/mask-aae-latent-masking.txt) and
``mask-aae-open`` (the same with the mask held open: the paper's baseline)."""

from dataclasses import dataclass
from typing import Optional, Tuple

from vaezoo import zoo
from vaezoo.entries.vae import BINARIZE, MAX_WIDTH, build_nets
from vaezoo.errors import ConfigError
from vaezoo.guides.deterministic import DeltaGuide
from vaezoo.inference.adversarial import AAE, WAEMMD
from vaezoo.inference.mask_aae import PAPER_LR, MaskAAE, check_settings
from vaezoo.models import LIKELIHOODS
from vaezoo.models.aae import LatentMask, MaskedDecoderModel, OpenMask
from vaezoo.nets import ACTIVATIONS, MLP


@dataclass
class WAEConfig:
    """Config of the deterministic-encoder entries: ``latent_dim`` codes; ``net``: ``mlp``
    (``hidden`` layers of ``activation``) or ``conv``; ``likelihood`` of the reconstruction
    (``normal`` with ``likelihood_scale`` sigma: the squared error / 2 sigma^2, the WAE's L2 cost);
    ``weight``: the divergence's weight against the reconstruction per datapoint. WAE-MMD takes
    weight 10 (Tolstikhin et al.'s MNIST setting) and the IMQ kernel."""

    latent_dim: int = 16
    net: str = "mlp"
    hidden: Tuple[int, ...] = (256, 256)
    activation: str = "relu"
    likelihood: str = "normal"
    likelihood_scale: float = 0.3
    learn_scale: bool = False
    binarize: Optional[str] = None
    weight: float = 10.0

    def validate(self):
        if not 1 <= self.latent_dim <= MAX_WIDTH:
            raise ConfigError(f"latent_dim={self.latent_dim}; expected an integer from 1 to {MAX_WIDTH}")
        if self.net not in ("mlp", "conv"):
            raise ConfigError(f"net={self.net!r}; expected mlp or conv")
        for name in ("hidden",) + (("critic_hidden",) if hasattr(self, "critic_hidden") else ()):
            if any(not 1 <= h <= MAX_WIDTH for h in getattr(self, name)):
                raise ConfigError(f"{name}={getattr(self, name)!r}; expected layer sizes from 1 to {MAX_WIDTH}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation={self.activation!r}; expected one of {', '.join(sorted(ACTIVATIONS))}")
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(f"likelihood={self.likelihood!r}; expected one of {', '.join(sorted(LIKELIHOODS))}")
        if self.binarize not in BINARIZE:
            raise ConfigError(f"binarize={self.binarize!r}; expected dynamic, fixed or none")
        for name in ("likelihood_scale", "weight", "critic_lr"):
            if hasattr(self, name) and not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)}; expected a number > 0")
        if hasattr(self, "critic_steps") and not 1 <= self.critic_steps <= 100:
            raise ConfigError(f"critic_steps={self.critic_steps}; expected an integer from 1 to 100")


@dataclass
class AAEConfig(WAEConfig):
    """The GAN-critic entries: a critic MLP of ``critic_hidden`` ReLU layers, ``critic_steps`` Adam
    steps (``critic_lr``, betas 0.5, 0.9) per training step of the pair; ``weight`` of the
    non-saturating generator loss. ``aae`` takes weight 1 (Makhzani et al.), ``wae-gan`` 10."""

    weight: float = 1.0
    critic_hidden: Tuple[int, ...] = (256, 256)
    critic_steps: int = 2
    critic_lr: float = 5e-4


@dataclass
class WAEGANConfig(AAEConfig):
    weight: float = 10.0


@dataclass
class MaskAAEConfig(AAEConfig):
    """MaskAAE: ``latent_dim`` is the capacity m; the mask alpha = 1 - exp(-m_j), m_j ~ U(0,
    ``mask_init``) (the released code's parametrization). Our choices for stability (the released
    code was found unstable): a WGAN-GP critic (``gp_weight`` 10) with Adam (``critic_lr`` 1e-3,
    betas 0.5, 0.9) and 5 ``critic_steps`` per step, rather than RMSProp; the pair and the mask
    trained together by the Trainer's one optimizer on reconstruction (the squared error / 2 sigma^2
    of the other entries, sigma 0.3) + ``weight`` 10 x the critic's Wasserstein estimate (the mask
    through both its masked inputs) + c_t sum |alpha (1 - alpha)|, with c_t from ``penalty`` 1
    doubling every ``penalty_doubling`` 100 steps up to ``penalty_max``; the mask moves
    ``mask_rate`` 20 times faster than the networks (the paper's separate mask learning rate), from
    the first step or after ``mask_warmup`` steps of the networks alone (the penalty's schedule
    starts with it). The paper's (1 - gap)^2 mask term (``training=paper`` has it) and its
    loss-scaling "decay", which RMSProp cancels, are left out. ``weight`` (against the
    reconstruction's scale) sets how many dimensions survive, and no single value served both benchmarks (bench/mask_aae_synthetic.py, bench/mask_aae_mnist.py,
    bench/RESULTS.md): on the synthetic data, ``weight=50, mask_warmup=480`` over 960 steps of 256
    finds n within 1 in 19 of 27 runs (every run for n = 4, 8 of 9 for n = 8, 2 of 9 for n = 16),
    where the default keeps about 2/3 of m; on MNIST that setting closes every dimension at m >= 32.
    The default (weight 10, no warm-up) is MNIST's: 5-11 dimensions kept, Frechet distances below
    wae-mmd's at m >= 32. One setting served both once the mask's closing was bounded by the
    reconstruction in nats: ``weight=50, mask_warmup=480, mask_rule=tolerance, tolerance=1,
    tolerance_unit=nats`` (at m = 2n on the synthetic data; bench/RESULTS.md).

    ``training``: ``joint`` (the above) or ``paper``: the paper's four losses (eqs. 14-17: the
    auto-encoder's with its ``variance_weight`` term on the closed dimensions, the generator's, the
    WGAN-GP critic's, the mask's with ``mask_recon_weight`` x reconstruction + ``weight`` x the
    critic's (1 - gap)^2 + the penalty) alternated in each step, each by its own RMSProp over its own
    parameters at ``paper_lr`` = (auto-encoder, critic, generator, mask) rates; the Trainer's lr and
    ``critic_lr`` and ``mask_rate`` are then unused (vaezoo/inference/mask_aae.py states each loss).
    ``mask_rule``: ``none``, ``tolerance`` or ``ablation``, each after a ``mask_warmup`` (>= 1).
    ``tolerance``: the critic's term closes dimensions only while the reconstruction's running
    average stays within ``tolerance`` x |its best value| above it (``tolerance_unit=relative``), or
    within ``tolerance`` nats per datapoint (``tolerance_unit=nats``: the same amount on every data
    set; a relative bound moves with the likelihood's constant). ``ablation``: the critic's term
    reaches only the dimensions whose zeroing costs the reconstruction under ``ablation_nats`` nats
    per datapoint (measured every ``ablation_every`` steps on ``ablation_batch`` datapoints)."""

    weight: float = 10.0
    critic_steps: int = 5
    critic_lr: float = 1e-3
    gp_weight: float = 10.0
    penalty: float = 1.0
    penalty_doubling: int = 100
    penalty_max: float = 100.0
    mask_init: float = 5.0
    mask_rate: float = 20.0
    mask_warmup: int = 0
    training: str = "joint"
    paper_lr: Tuple[float, ...] = PAPER_LR
    variance_weight: float = 100.0
    mask_recon_weight: float = 1.0
    mask_rule: str = "none"
    tolerance: float = 0.05
    tolerance_unit: str = "relative"
    ablation_nats: float = 1.0
    ablation_every: int = 10
    ablation_batch: int = 64

    def validate(self):
        super().validate()
        check_settings(training=self.training, mask_rule=self.mask_rule, mask_warmup=self.mask_warmup,
                       tolerance=self.tolerance, tolerance_unit=self.tolerance_unit, ablation_nats=self.ablation_nats,
                       ablation_every=self.ablation_every, ablation_batch=self.ablation_batch, paper_lr=self.paper_lr)
        for name in ("variance_weight", "mask_recon_weight", "gp_weight", "penalty", "penalty_max", "mask_init",
                     "mask_rate"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)}; expected a number > 0")
        if self.penalty_doubling < 1:
            raise ConfigError(f"penalty_doubling={self.penalty_doubling}; expected an integer >= 1")
        if self.mask_warmup < 0:
            raise ConfigError(f"mask_warmup={self.mask_warmup}; expected an integer >= 0")


def _pair(config: WAEConfig, data_shape, mask=None):
    encoder, decoder, likelihood = build_nets(config, data_shape, config.latent_dim)
    return MaskedDecoderModel(decoder, likelihood, config.latent_dim, mask), DeltaGuide(encoder, config.latent_dim)


def _critic(config: AAEConfig):
    return MLP(config.latent_dim, config.critic_hidden, 1, "relu")


def _gan_objective(c, model, guide, compile):
    return AAE(model, guide, _critic(c), weight=c.weight, critic_steps=c.critic_steps, critic_lr=c.critic_lr)


@zoo.register("aae", AAEConfig, "adversarial autoencoder: deterministic encoder, GAN critic on the codes (Makhzani et al. 2016)", objective=_gan_objective)
def build_aae(config: AAEConfig, data_shape):
    return _pair(config, data_shape)


@zoo.register("wae-gan", WAEGANConfig, "Wasserstein autoencoder, GAN penalty in latent space (Tolstikhin et al. 2018)", objective=_gan_objective)
def build_wae_gan(config: WAEGANConfig, data_shape):
    return _pair(config, data_shape)


def _mmd_objective(c, model, guide, compile):
    return WAEMMD(model, guide, weight=c.weight)


@zoo.register("wae-mmd", WAEConfig, "Wasserstein autoencoder, MMD penalty with IMQ kernels (Tolstikhin et al. 2018)", objective=_mmd_objective)
def build_wae_mmd(config: WAEConfig, data_shape):
    return _pair(config, data_shape)


def _mask_objective(c, model, guide, compile):
    return MaskAAE(model, guide, _critic(c), model.mask, weight=c.weight, gp_weight=c.gp_weight, penalty=c.penalty,
                   penalty_doubling=c.penalty_doubling, penalty_max=c.penalty_max, critic_steps=c.critic_steps,
                   critic_lr=c.critic_lr, mask_warmup=c.mask_warmup, training=c.training, paper_lr=c.paper_lr,
                   variance_weight=c.variance_weight, mask_recon_weight=c.mask_recon_weight, mask_rule=c.mask_rule,
                   tolerance=c.tolerance, tolerance_unit=c.tolerance_unit, ablation_nats=c.ablation_nats,
                   ablation_every=c.ablation_every, ablation_batch=c.ablation_batch)


@zoo.register("mask-aae", MaskAAEConfig, "MaskAAE: WGAN-GP critic on masked codes, a trainable mask finds the latent dimension", objective=_mask_objective)
def build_mask_aae(config: MaskAAEConfig, data_shape):
    # the paper's mode steps the mask with its own RMSProp: no relative rate
    rate = 1.0 if config.training == "paper" else config.mask_rate
    return _pair(config, data_shape, LatentMask(config.latent_dim, config.mask_init, rate))


@zoo.register("mask-aae-open", MaskAAEConfig, "MaskAAE's baseline: the same pair, critic and losses with the mask held open (alpha = 1)", objective=_mask_objective)
def build_mask_aae_open(config: MaskAAEConfig, data_shape):
    return _pair(config, data_shape, OpenMask(config.latent_dim))
