"""MaskAAE's objective (Mondal et al., *MaskAAE: latent space optimization for adversarial
auto-encoders*): a deterministic encoder E, a decoder G, a WGAN-GP critic D on masked codes, and a
relaxed binary mask alpha = 1 - exp(-m), m >= 0, over the latent dimensions, applied to the codes
before G and D and to the prior draws before D.

Notation: x a batch of B, z_q = E(x) its codes ``[B, d]`` (unmasked), z_p ~ N(0, I) fresh prior
draws, R = -log p(x | G(alpha * z_q)) the reconstruction per datapoint (the entry's likelihood: the
squared error / 2 sigma^2 by default; the paper's "norm", the released code's binary
cross-entropy), gap = E D(alpha z_q) - E D(alpha z_p) (the critic drives it below 0; -gap is its
Wasserstein estimate, reported as ``wasserstein``), polar = sum_j |alpha_j (1 - alpha_j)|.

Two ways to train (``training``):

``"joint"`` (the default, our earlier choice for stability): the Trainer's one optimizer minimizes
R + ``weight`` x (-gap) + c_t polar over the encoder, decoder and mask together, the critic takes
``critic_steps`` Adam steps of (16) before each step.

``"paper"``: the paper's four losses (supplementary section 8.1, eqs. 14-17), minimized in turn,
each by its own RMSProp over its own parameters only (section 8.2, algorithm 1). The text names the
terms of each loss in words; their exact forms follow the authors' released code:

(14) auto-encoder loss, updates E and G (alpha a constant)::

        L_AE = R + variance_weight * (1/d) sum_j psi(alpha_j) Var_B(z_q[:, j]),   psi(a) = exp(-10 a^2)

     the second term minimizes "the variance over the masked dimensions in the encoded output in
     a batch": Var_B (the biased batch variance) is the diagonal of the codes' covariance Sigma_z
     (eq. 18), psi ~ 1 on a closed dimension and ~ 0 on an open one.
(15) generator loss, updates E:  ``L_G = -E D(alpha z_q)`` (the WGAN generator loss).
(16) critic (distribution-matching) loss, updates D (WGAN-GP, Gulrajani et al. 2017)::

        L_D = E D(alpha z_q) - E D(alpha z_p) + gp_weight E (|grad D(u alpha z_p + (1 - u) alpha z_q)| - 1)^2

     u ~ U(0, 1) per datapoint, gp_weight 10, ``critic_steps`` 5 steps per training step.
(17) mask loss, updates m only, then m is clipped at 0 (projected gradient descent)::

        L_M = mask_recon_weight * R + weight * (1 - gap)^2 + c_t polar

     where c_t (``penalty``, doubling every ``penalty_doubling`` steps up to ``penalty_max``) is
     the polynomial regularizer pushing alpha to 0 or 1. The mask is not stepped during
     ``mask_warmup`` steps (the schedule of c_t waits too).

Per training step, in the released code's order: one L_AE step, ``critic_steps`` L_D steps, one L_G
step, one L_M step, each reading the parameters the previous ones left. RMSProp is torch's with
alpha 0.9 (TensorFlow's decay), rates ``paper_lr`` = (AE, D, G, M) = (5e-4, 1e-4, 1e-4, 5e-4) (the
released code's: 5 x its base rate 1e-4 for the auto-encoder and the mask); the Trainer's own
``lr`` is unused. Differences from the released code: one batch for all four losses (it draws a
batch for each), RMSProp's accumulators start at 0 (TensorFlow's at 1), and its one-off "decay" (the
AE and mask losses scaled by 1/5 at one step) is left out: RMSProp cancels a constant loss scale.

The constraint form of the mask (``mask_rule="tolerance"``, needs ``mask_warmup`` >= 1): an
exponential average (decay 0.9) of the batch reconstruction R is kept from the first step; from the
end of the warm-up the reference R_0 is its lowest value so far (the best reconstruction: a reference
frozen at the warm-up's end left MNIST's still-improving networks 20 nats of room, and the mask
closed every dimension in it). On each later step, the term that closes
dimensions (the critic's: ``weight`` x (1 - gap)^2 in (17), the mask's path through -gap in the joint
loss) is switched on (``closing`` 1) while the average stays within R_0 + ``tolerance`` |R_0|
(``tolerance_unit="relative"``) or R_0 + ``tolerance`` nats per datapoint (``"nats"``), and off
(``closing`` 0) otherwise: the mask then follows only the reconstruction (and the polarizing penalty),
which reopens dimensions until the reconstruction is back within the bound. The relative bound
depends on where R's zero lies, which a continuous likelihood leaves to its constant (a normal of
sigma 0.3 puts R near -20 nats on the synthetic data and -120 on MNIST, so 5% is 1 nat on one and 6
on the other); the bound in nats is the same amount of reconstruction on every data set.

The ablation form (``mask_rule="ablation"``, needs ``mask_warmup`` >= 1), a gate per dimension
instead of one switch: every ``ablation_every`` steps from the end of the warm-up, the rise of R on
``ablation_batch`` datapoints when dimension j alone is zeroed (alpha_j = 0) is measured for every j
(one decoder call over the d + 1 masks) and averaged over the measurements (decay 0.5). The
critic's closing term reaches alpha_j only while that average cost is under ``ablation_nats``
nats per datapoint: a dimension the decoder needs is protected, one it does not need may close. A
reading of the tolerance rule's failure on MNIST (one switch for all dimensions: while the networks
improve, closing any dimension looks free). Our proposal, not the paper's.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from vaezoo import traces
from vaezoo.errors import ConfigError
from vaezoo.inference.adversarial import _Critic, gradient_penalty

TRAINING = ("joint", "paper")
MASK_RULES = ("none", "tolerance", "ablation")
TOLERANCE_UNITS = ("relative", "nats")
#: the rates of the paper mode's RMSProps: auto-encoder (14), critic (16), generator (15), mask (17)
PAPER_LR = (5e-4, 1e-4, 1e-4, 5e-4)
RMSPROP_ALPHA = 0.9  # TensorFlow's RMSProp decay, the released code's optimizer
VARIANCE_SHARPNESS = 10.0  # psi(alpha) = exp(-10 alpha^2) in (14)
TOLERANCE_DECAY = 0.9  # the tolerance rule's exponential average of the reconstruction
ABLATION_DECAY = 0.5  # the ablation rule's exponential average of each dimension's cost


def check_settings(training: str, mask_rule: str, mask_warmup: int, tolerance: float, tolerance_unit: str,
                   ablation_nats: float, ablation_every: int, ablation_batch: int, paper_lr: Sequence[float]) -> None:
    """The settings of the two training modes and the rules, each refused in one line (the objective
    and the zoo entry's config both call this: the config refuses before anything is built)."""
    for name, value, allowed in (("training", training, TRAINING), ("mask_rule", mask_rule, MASK_RULES),
                                 ("tolerance_unit", tolerance_unit, TOLERANCE_UNITS)):
        if value not in allowed:
            raise ConfigError(f"{name}={value!r}; expected {' or '.join(allowed)}")
    if mask_rule != "none" and int(mask_warmup) < 1:
        raise ConfigError(f"mask_warmup={mask_warmup} with mask_rule={mask_rule}; expected an integer >= 1 "
                          "(the rule reads networks trained by the warm-up)")
    for name, value in (("tolerance", tolerance), ("ablation_nats", ablation_nats)):
        if not value > 0:
            raise ConfigError(f"{name}={value}; expected a number > 0")
    for name, value in (("ablation_every", ablation_every), ("ablation_batch", ablation_batch)):
        if int(value) < 1:
            raise ConfigError(f"{name}={value}; expected an integer >= 1")
    if len(paper_lr) != 4 or not all(float(r) > 0 for r in paper_lr):
        raise ConfigError(f"paper_lr={tuple(paper_lr)!r}; expected 4 numbers > 0 (auto-encoder, critic, generator, mask)")


def variance_penalty(q: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The second term of (14) without its weight: (1/d) sum_j exp(-10 alpha_j^2) Var_B(q[:, j]),
    the biased batch variance of each code ``q  # [B, d]`` weighted toward the closed dimensions."""
    return ((q - q.mean(0)).square() * torch.exp(-VARIANCE_SHARPNESS * alpha.square())).mean()


def polar(alpha: torch.Tensor) -> torch.Tensor:
    """The polarizing regularizer sum_j |alpha_j (1 - alpha_j)|: 0 at a binary mask."""
    return (alpha * (1 - alpha)).abs().sum()


class ToleranceRule:
    """Whether the mask may close dimensions: an exponential average of the reconstruction (decay
    :data:`TOLERANCE_DECAY`) from the first step, its lowest value from step ``warmup`` on the
    reference R_0;
    :meth:`update` returns 1.0 while the average is within the bound, R_0 + ``tolerance`` |R_0|
    (``unit="relative"``) or R_0 + ``tolerance`` (``unit="nats"``), else 0.0 (and 0.0 during the
    warm-up, when the mask is held anyway)."""

    def __init__(self, tolerance: float, warmup: int, unit: str = "relative"):
        if unit not in TOLERANCE_UNITS:
            raise ConfigError(f"unit={unit!r}; expected {' or '.join(TOLERANCE_UNITS)}")
        self.tolerance, self.warmup, self.unit = float(tolerance), int(warmup), unit
        self.average: Optional[float] = None
        self.reference: Optional[float] = None

    def bound(self) -> float:
        room = self.tolerance if self.unit == "nats" else self.tolerance * abs(self.reference)
        return self.reference + room

    def update(self, recon: float, step: int) -> float:
        """``recon``: this training step's batch reconstruction; ``step``: the steps before it."""
        a = self.average
        self.average = recon if a is None else TOLERANCE_DECAY * a + (1 - TOLERANCE_DECAY) * recon
        if step < self.warmup:
            return 0.0
        if self.reference is None or self.average < self.reference:
            self.reference = self.average
        return 1.0 if self.average <= self.bound() else 0.0

    def state(self) -> dict:
        """Floats always (NaN for not yet set): a checkpoint's layout does not depend on the step."""
        nan = float("nan")
        return {"average": nan if self.average is None else self.average,
                "reference": nan if self.reference is None else self.reference}

    def load(self, state: dict) -> None:
        unset = lambda v: None if math.isnan(v) else float(v)  # noqa: E731
        self.average, self.reference = unset(state["average"]), unset(state["reference"])


class AblationRule:
    """Which dimensions the mask may close: every ``every`` steps from step ``warmup`` on, the
    reconstruction's rise when one dimension is zeroed (:meth:`update`'s ``cost_fn()`` returns it for every
    dimension, in nats per datapoint, on a sub-batch), averaged over these measurements (decay
    :data:`ABLATION_DECAY`). :meth:`update` returns the gate ``[d]``: 1.0 where the average cost is
    under ``nats`` (the critic may close the dimension), 0.0 where closing it would cost the
    reconstruction ``nats`` or more (the dimension is protected: the mask follows only the
    reconstruction and the polarizing penalty there); all 0.0 during the warm-up."""

    def __init__(self, nats: float, warmup: int, every: int, dim: int):
        self.nats, self.warmup, self.every = float(nats), int(warmup), int(every)
        self.cost = torch.full((dim,), float("nan"), dtype=torch.float64)

    def update(self, cost_fn, step: int) -> torch.Tensor:
        if step < self.warmup:
            return torch.zeros_like(self.cost)
        if (step - self.warmup) % self.every == 0:
            c = cost_fn().detach().to(self.cost)
            self.cost = torch.where(torch.isnan(self.cost), c, ABLATION_DECAY * self.cost + (1 - ABLATION_DECAY) * c)
        return (self.cost < self.nats).to(self.cost.dtype)

    def state(self) -> dict:
        return {"cost": self.cost.tolist()}

    def load(self, state: dict) -> None:
        self.cost = torch.tensor(state["cost"], dtype=torch.float64)


class MaskAAE(_Critic):
    """MaskAAE (see the module docstring for both ``training`` modes, the equations and the
    tolerance rule). ``mask`` is the model's own :class:`vaezoo.models.aae.LatentMask` (or an
    ``OpenMask``: alpha = 1, nothing to train, the paper's baseline). Terms: ``reconstruction``,
    ``wasserstein`` (-gap), ``active_dims`` (alpha >= 0.1), ``penalty`` (c_t); in the paper mode
    ``variance`` (the second term of (14) unweighted); with the tolerance rule ``closing``, with the
    ablation rule ``closable`` (the dimensions the critic may close)."""

    def __init__(self, model, guide, critic: nn.Module, mask: nn.Module, weight: float = 100.0, gp_weight: float = 10.0,
                 penalty: float = 1.0, penalty_doubling: int = 100, penalty_max: float = 100.0, critic_steps: int = 5,
                 critic_lr: float = 1e-3, mask_warmup: int = 0, training: str = "joint",
                 paper_lr: Sequence[float] = PAPER_LR, variance_weight: float = 100.0, mask_recon_weight: float = 1.0,
                 mask_rule: str = "none", tolerance: float = 0.05, tolerance_unit: str = "relative",
                 ablation_nats: float = 1.0, ablation_every: int = 10, ablation_batch: int = 64, **kwargs):
        check_settings(training=training, mask_rule=mask_rule, mask_warmup=mask_warmup, tolerance=tolerance,
                       tolerance_unit=tolerance_unit, ablation_nats=ablation_nats, ablation_every=ablation_every,
                       ablation_batch=ablation_batch, paper_lr=paper_lr)
        if training == "paper" and not (isinstance(model, nn.Module) and isinstance(guide, nn.Module)):
            raise ConfigError("training='paper' with a model or guide that is not an nn.Module; expected modules "
                              "(each of the four losses steps its own modules' parameters)")
        super().__init__(model, guide, critic, weight, critic_steps=critic_steps, critic_lr=critic_lr, **kwargs)
        self._mask = [mask]  # the model's own module: its parameter is in the model's parameters()
        self.gp_weight, self.penalty0 = float(gp_weight), float(penalty)
        self.penalty_doubling, self.penalty_max = int(penalty_doubling), float(penalty_max)
        self.mask_warmup = int(mask_warmup)
        self.mode = training  # not ``self.training``: nn.Module's train/eval flag
        self.paper_lr = tuple(float(r) for r in paper_lr)
        self.variance_weight, self.mask_recon_weight = float(variance_weight), float(mask_recon_weight)
        if mask_rule == "tolerance":
            self.rule = ToleranceRule(tolerance, self.mask_warmup, tolerance_unit)
        elif mask_rule == "ablation":
            self.rule = AblationRule(ablation_nats, self.mask_warmup, ablation_every, mask.alpha().shape[-1])
        else:
            self.rule = None
        self.ablation_batch = int(ablation_batch)
        # the rule's switch on the closing term: a float (the tolerance rule; always 1 without a
        # rule), or one per dimension (the ablation rule: all shut until the rule's first reading)
        self.gate = torch.zeros(self.rule.cost.shape, dtype=torch.float64) if mask_rule == "ablation" else 1.0
        self._paper: Optional[Dict[str, Tuple[torch.optim.Optimizer, List[nn.Parameter]]]] = None

    @property
    def mask(self) -> nn.Module:
        return self._mask[0]

    def penalty(self) -> float:
        mask_steps = max(self.steps - self.mask_warmup, 0)  # the schedule starts with the mask's training
        return min(self.penalty0 * 2.0 ** (mask_steps // self.penalty_doubling), self.penalty_max)

    def critic_loss(self, q, p):
        u = torch.rand(q.shape[0], 1, device=q.device, dtype=q.dtype)
        gp = gradient_penalty(self.critic, p, q, u)
        return self.critic(q).mean() - self.critic(p).mean() + self.gp_weight * gp

    def critic_optimizer(self) -> torch.optim.Optimizer:
        if self.mode != "paper":
            return super().critic_optimizer()
        if self._optimizer is None:
            self._optimizer = torch.optim.RMSprop(self.critic.parameters(), lr=self.paper_lr[1], alpha=RMSPROP_ALPHA)
        return self._optimizer

    def train_critic(self, q, prior):
        alpha = self.mask.alpha().detach()
        super().train_critic(q * alpha, lambda: prior() * alpha)

    def gap(self, q: torch.Tensor, p: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """E D(alpha q) - E D(alpha p) with the critic's weights held (a graph to q, p, alpha only)."""
        return self._frozen_critic(q * alpha).mean() - self._frozen_critic(p * alpha).mean()

    def _gated(self, alpha: torch.Tensor) -> torch.Tensor:
        """alpha as the critic's term sees it: its gradient kept where the gate is 1, removed where
        it is 0 (the same value): the mask does not follow the critic there."""
        if isinstance(self.gate, torch.Tensor):
            g = self.gate.to(alpha)
            return g * alpha + (1 - g) * alpha.detach()
        return alpha if self.gate else alpha.detach()

    def divergence(self, q, p):
        w = -self.gap(q, p, self._gated(self.mask.alpha()))
        return w, {"wasserstein": w.detach(), "active_dims": self.mask.active().to(q.dtype).detach()}

    def _closing(self, recon: torch.Tensor, x: torch.Tensor, q: Optional[torch.Tensor] = None):
        """The rule's switch for this training step (1.0 without a rule)."""
        if self.rule is None:
            return 1.0
        if isinstance(self.rule, AblationRule):
            return self.rule.update(lambda: self.ablation_cost(x, q), self.steps)
        return self.rule.update(float(recon.detach()), self.steps)

    @torch.no_grad()
    def ablation_cost(self, x: torch.Tensor, q: Optional[torch.Tensor] = None) -> torch.Tensor:
        """For each latent dimension j, -log p(x | G(alpha' z_q)) + log p(x | G(alpha z_q)) per
        datapoint, with alpha' = alpha but alpha'_j = 0, on the first ``ablation_batch`` datapoints
        of ``x`` (``q``: their codes, else encoded here): ``[d]``. One decoder call over the d + 1
        masks; the model must be a decoder-and-likelihood pair (``decoder``, ``likelihood``)."""
        x = x[: self.ablation_batch]
        q = self._encode(x) if q is None else q[: self.ablation_batch].detach()
        alpha = self.mask.alpha().detach()
        d = alpha.shape[-1]
        masks = torch.cat([alpha[None], alpha * (1 - torch.eye(d, dtype=alpha.dtype, device=alpha.device))])  # [d + 1, d]
        codes = (masks[:, None, :] * q[None]).reshape(-1, d)  # [(d + 1) B, d]
        xs = x.expand(d + 1, *x.shape).reshape(-1, *x.shape[1:])
        nll = -self.model.likelihood(self.model.decoder(codes)).log_prob(xs).reshape(d + 1, -1).mean(-1)
        return nll[1:] - nll[0]

    def _rule_terms(self, like: torch.Tensor) -> dict:
        if self.rule is None:
            return {}
        if isinstance(self.gate, torch.Tensor):  # the ablation rule: how many dimensions may close
            return {"closable": self.gate.sum().to(like)}
        return {"closing": like.new_tensor(self.gate)}

    def loss_and_terms(self, x):
        if self.mode == "paper":
            return self._paper_loss_and_terms(x)
        self._follow(x)
        self.mask.frozen = self.steps < self.mask_warmup
        recon, q, p = self.codes(x)
        if self.training and torch.is_grad_enabled():
            self.gate = self._closing(recon, x, q)
            self.train_critic(q.detach(), lambda: self._prior_like(x))
            self.steps += 1
        div, terms = self.divergence(q, p)
        c = self.penalty()
        loss = recon + self.weight * div + c * polar(self.mask.alpha())
        terms = dict(terms, reconstruction=recon.detach(), penalty=loss.new_tensor(c), **self._rule_terms(loss))
        return loss, terms

    # ----------------------------------------------------------------------------- the paper's mode
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """The codes E(x) ``[B, d]`` (a guide run alone)."""
        return traces.latent_codes(traces.record(self.guide, x).sites, x.shape[0])

    def _paper_optimizers(self) -> Dict[str, Tuple[torch.optim.Optimizer, List[nn.Parameter]]]:
        """The RMSProps of (14), (15) and (17) over their own parameters (the critic's is
        :meth:`critic_optimizer`), built once, on the parameters as they are then."""
        if self._paper is None:
            mask_ids = {id(p) for p in self.mask.parameters()}
            encoder = [p for p in self.guide.parameters() if p.requires_grad]
            seen = {id(p) for p in encoder} | mask_ids
            decoder = [p for p in self.model.parameters() if p.requires_grad and id(p) not in seen]
            groups = {"autoencoder": (encoder + decoder, self.paper_lr[0]), "generator": (encoder, self.paper_lr[2]),
                      "mask": ([p for p in self.mask.parameters() if p.requires_grad], self.paper_lr[3])}
            self._paper = {k: (torch.optim.RMSprop(ps, lr=lr, alpha=RMSPROP_ALPHA), ps) for k, (ps, lr) in groups.items() if ps}
        return self._paper

    def _descend(self, name: str, loss: torch.Tensor) -> None:
        """One step of ``name``'s RMSProp on ``loss``: the gradient of its own parameters only
        (``autograd.grad``: no other parameter's ``.grad`` is touched), then cleared."""
        opt, params = self._paper_optimizers()[name]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        for p in params:
            p.grad = None

    def autoencoder_loss(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(14) with alpha held: ``(L_AE, R, the unweighted variance term, the codes)``."""
        frozen, self.mask.frozen = self.mask.frozen, True
        try:
            recon, q, _ = self.codes(x)
        finally:
            self.mask.frozen = frozen
        var = variance_penalty(q, self.mask.alpha().detach())
        return recon + self.variance_weight * var, recon, var, q

    def generator_loss(self, q: torch.Tensor) -> torch.Tensor:
        """(15): -E D(alpha q), alpha held, the critic's weights held."""
        return -self._frozen_critic(q * self.mask.alpha().detach()).mean()

    def mask_loss(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """(17): ``mask_recon_weight`` R + ``weight`` (1 - gap)^2 + c_t polar (the gap through the
        rule's gate, :meth:`_gated`), with a graph to
        the mask (the codes and the critic's weights held; the decoder's weights get a gradient
        that :meth:`_descend` never reads)."""
        frozen, self.mask.frozen = self.mask.frozen, False
        try:
            recon, q, _ = self.codes(x)
            alpha = self.mask.alpha()
        finally:
            self.mask.frozen = frozen
        closing = (1 - self.gap(q.detach(), p, self._gated(alpha))).square()
        return self.mask_recon_weight * recon + self.weight * closing + self.penalty() * polar(alpha)

    def _paper_loss_and_terms(self, x):
        self._follow(x)
        if self.training and torch.is_grad_enabled():
            return self._paper_step(x)
        loss, recon, var, q = self.autoencoder_loss(x)  # evaluation: the terms, no update
        div, terms = self.divergence(q, self._prior_like(x))
        return loss, dict(terms, reconstruction=recon.detach(), variance=var.detach(),
                          penalty=loss.new_tensor(self.penalty()), **self._rule_terms(loss))

    def _paper_step(self, x):
        """One learning loop of algorithm 1: (14), (16) x ``critic_steps``, (15), (17).

        The updates run here, inside ``forward``, as :meth:`_Critic.train_critic` does its critic
        steps: the Trainer takes one backward of one loss and one optimizer step over all the pair's
        parameters, while the paper alternates four losses over four parameter sets, each with its
        own RMSProp. What is handed back is L_AE's value as a leaf tensor with no graph to any
        parameter, so the Trainer's backward leaves every ``.grad`` None and its optimizer moves
        nothing; the four optimizers are this objective's extra state (checkpoint, exact resume)."""
        # (14) the auto-encoder: E and G
        l_ae, recon, var, _ = self.autoencoder_loss(x)
        self._descend("autoencoder", l_ae)
        self.gate = self._closing(recon, x)
        # (16) the critic, on the updated encoder's codes
        self.train_critic(self._encode(x).detach(), lambda: self._prior_like(x))
        # (15) the generator: E
        q = self._encode(x)
        p = self._prior_like(x)
        self._descend("generator", self.generator_loss(q))
        with torch.no_grad():
            w = -self.gap(q, p, self.mask.alpha())
        # (17) the mask: m, then m >= 0 (the projection of the released code's non-negativity constraint)
        c = self.penalty()
        if self.steps >= self.mask_warmup and "mask" in self._paper_optimizers():
            self._descend("mask", self.mask_loss(x, self._prior_like(x)))
            with torch.no_grad():
                for m in self._paper_optimizers()["mask"][1]:
                    m.clamp_(min=0)
        self.steps += 1
        loss = l_ae.detach().requires_grad_()
        terms = {"reconstruction": recon.detach(), "variance": var.detach(), "wasserstein": w.detach(),
                 "active_dims": self.mask.active().to(q.dtype).detach(), "penalty": loss.new_tensor(c),
                 **self._rule_terms(loss)}
        return loss, terms

    # --- state: the paper's optimizers and the tolerance rule join the critic's state
    def get_extra_state(self):
        state = super().get_extra_state()
        # built here if not yet: a fresh objective's layout (what a checkpoint is checked against) has them
        paper = self._paper_optimizers() if self.mode == "paper" else {}
        state["paper"] = {k: opt.state_dict() for k, (opt, _) in paper.items()}
        state["rule"] = self.rule.state() if self.rule is not None else None
        state["gate"] = self.gate.tolist() if isinstance(self.gate, torch.Tensor) else self.gate
        return state

    def set_extra_state(self, state):
        super().set_extra_state(state)
        self._paper = None
        for k, opt_state in (state.get("paper") or {}).items():
            self._paper_optimizers()[k][0].load_state_dict(opt_state)  # casts to the parameters' dtype
        if self.rule is not None and state.get("rule") is not None:
            self.rule.load(state["rule"])
        gate = state.get("gate", 1.0)
        self.gate = torch.tensor(gate, dtype=torch.float64) if isinstance(gate, list) else float(gate)

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        for opt, _ in (self._paper or {}).values():  # the moment estimates follow their parameters
            opt.load_state_dict(opt.state_dict())
        return out
