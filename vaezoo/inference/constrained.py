"""The SOS-VAE's Lagrangian objective (``papers/sos-vae-low-rank-observations.txt``, eq. 3): the
reconstruction term under inequality constraints on the KL and on the entropy of the observation
distribution, with multipliers found by the modified differential method of multipliers."""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
from torch.distributions import kl_divergence

from vaezoo.errors import ConfigError, SiteError
from vaezoo.inference import distributed
from vaezoo.inference.objectives import ELBO, Terms, _scaled_sum, _total


def _check_target(name: str, value) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name}={value!r}; expected a finite number, or None for no constraint")
    return float(value)


UPDATES = ("one-sided", "two-sided")


def penalty(g: torch.Tensor, multipliers: torch.Tensor, damping: float, update: str) -> torch.Tensor:
    """The multipliers' term of the loss for the violations ``g`` (differentiable, one per
    constraint) at the multipliers ``multipliers`` (held fixed), summed over the constraints:
    ``(max(0, lam + c g)^2 - lam^2) / (2c)`` one-sided, ``(lam + c sg(g)) g`` two-sided (see
    :class:`Constrained`)."""
    c = damping
    if update == "one-sided":
        return ((multipliers + c * g).clamp(min=0).pow(2) - multipliers.pow(2)).sum() / (2 * c)
    return ((multipliers + c * g.detach()) * g).sum()


@torch.no_grad()
def multiplier_step(multipliers: torch.Tensor, g: torch.Tensor, damping: float, lr: float, update: str) -> torch.Tensor:
    """The multipliers after one ascent step from the violations ``g``, in place: one-sided
    ``lam + lr (max(0, lam + c g) - lam) / c``, two-sided ``max(0, lam + lr g)``; both clipped at 0."""
    c = damping
    if update == "one-sided":
        step = ((multipliers + c * g).clamp(min=0) - multipliers) / c
    else:
        step = g
    return multipliers.add_(lr * step).clamp_(min=0)


class Constrained(ELBO):
    r"""Minimizes :math:`-\mathbb E_q[\log p(x \mid z)]` per datapoint subject to
    :math:`\mathrm{KL}(q(z \mid x) \,\|\, p(z)) \le` ``kl_target`` and
    :math:`\mathrm H[p(x \mid z)] \le` ``entropy_target`` (both per datapoint, averaged over the
    batch; the entropy is the closed form of every observed site's distribution, so that a
    variance that grows without bound is refused). A target of ``None`` drops its constraint; with
    no KL constraint the KL enters with weight 1 (the negative ELBO), which is the unconstrained run
    whose KL and entropy the paper reads to choose the targets.

    Each active constraint has a violation :math:`g = s\,(C - \text{target})` and a multiplier
    :math:`\lambda \ge 0` (``damping`` = :math:`c`, ``multiplier_lr`` = :math:`\eta`; :math:`s = 1`,
    or the batch size :math:`B` with ``batch_sum=True``, below). ``update`` picks one of two forms
    of the modified differential method of multipliers (Platt and Barr 1988):

    ``"one-sided"`` (the default): the augmented Lagrangian term of an inequality,

    .. math:: \frac{\max(0, \lambda + c\, g)^2 - \lambda^2}{2c},

    whose gradient is :math:`\max(0, \lambda + c g) \nabla g` for the networks (the MDMM term
    :math:`\lambda g + \tfrac c2 g^2` while the constraint is active, nothing once it is slack and
    :math:`\lambda = 0`). The multipliers ascend that term's gradient
    :math:`(\max(0, \lambda + c g) - \lambda) / c` with step :math:`\eta`:

    .. math:: \lambda \leftarrow \lambda + \eta\, \frac{\max(0, \lambda + c g) - \lambda}{c},

    which is :math:`\lambda + \eta g` while the constraint is active and a decay towards 0 when it
    is slack; :math:`\eta \le c` keeps :math:`\lambda \ge 0` (:math:`\eta = c` is the classical
    method of multipliers, :math:`\lambda \leftarrow \max(0, \lambda + c g)`). A constraint well
    inside its bound exerts no force: C may stay anywhere below its target.

    ``"two-sided"``: the SOS-VAE reference code's update (biomedia-mira/sos-vae,
    ``src/evaluation/loss.py`` and ``src/train/train.py``), which writes the term with the slack
    :math:`h = \text{target} - C` as :math:`-(\lambda - c\, \mathrm{sg}(h))\, h` (sg: ``.detach()``).
    In terms of :math:`g = -h` the loss gains

    .. math:: (\lambda + c\, \mathrm{sg}(g))\, g \qquad (\text{value } \lambda g + c g^2),

    whose gradient for the networks is :math:`(\lambda + c g) \nabla g` for every sign of
    :math:`g` (the stop-gradient halves the damping's derivative, so that it is the MDMM's
    :math:`\lambda g + \tfrac c2 g^2`): the damping pulls C to its target from above and from
    below, an equality-type constraint once :math:`\lambda = 0`. The multiplier takes one step of
    plain gradient ascent on the term (:math:`\partial/\partial\lambda = g`; the reference negates
    the gradient and steps SGD with learning rate 1) and is then clipped at 0:

    .. math:: \lambda \leftarrow \max(0, \lambda + \eta\, g).

    Sign convention: with the slack written :math:`h = \text{target} - C`, as the reference code
    does, :math:`\lambda` grows while :math:`C > \text{target}` and then pushes C down: the
    :math:`C \le \text{target}` reading, which is this class's. The same formula written with
    :math:`C - \text{target}` in place of :math:`h` would make :math:`\lambda` grow while
    :math:`C < \text{target}` and push C up, a :math:`C \ge \text{target}` constraint; it is
    consistent only with that reading, and is not what the reference code computes. No bound on
    :math:`\eta` is needed (the clip keeps :math:`\lambda \ge 0`).

    ``batch_sum=True`` takes the reference code's units: its reconstruction, KL and entropy are
    sums over the batch and its targets are the per-datapoint ones times :math:`B`, so that its
    violation is :math:`g = B\,(C - \text{target})` with :math:`C` the batch mean. This class
    returns the Lagrangian divided by :math:`B` (a per-datapoint scale for the optimizer; Adam is
    invariant to it), so the networks' gradient is that of the reference divided by :math:`B`
    and the multipliers follow the reference's exactly: the damping and the step act on :math:`B`
    times the per-datapoint violation (:math:`c = 10` at :math:`B = 25` is a per-datapoint damping
    of 250). With ``batch_sum=False`` (the default) :math:`g = C - \text{target}` per datapoint.

    The multipliers are updated once per training call (``training`` mode with gradients enabled;
    under ``torchrun`` from the violations averaged over the processes, so that every process keeps
    the same multipliers), after the loss was formed with their previous values, as in the
    reference. They are the buffer ``multipliers`` (``[kl, entropy]``, the active ones), so they
    are in ``state_dict`` and a resumed run continues exactly.

    Why an update of their own rather than a parameter of the Trainer's optimizer (ascent through a
    negated gradient, as the ``mdmm`` package does): Adam moves every parameter by about its
    learning rate per step whatever the gradient's size, and the multipliers must reach the scale
    of a reconstruction term of thousands of nats (MNIST, a fixed diagonal of 1e-4) within a few
    epochs; at the networks' learning rate they lag behind by orders of magnitude (measured on
    mnist-small: lambda_kl ~1 after 5 epochs, the KL still at 1.7 times its target). The ``mdmm``
    package itself does not fit either: its constraints are closures of no argument, and its
    ascent is a negative learning rate in a param group, which torch's optimizers refuse. (The
    reference code uses a separate SGD optimizer per multiplier, which is the update above.)

    The loss is the Lagrangian's value, not a bound; the terms report ``elbo``, ``log_lik``,
    ``kl``, ``entropy`` (per datapoint) and ``lambda_kl``/``lambda_entropy``. Guides need
    reparameterized sites (no enumeration, no score-function terms).
    """

    weights_kl = False  # its own loss: the Trainer's kl_warmup is refused

    def __init__(self, model: Callable, guide: Callable, kl_target: Optional[float] = None,
                 entropy_target: Optional[float] = None, damping: float = 10.0, multiplier_lr: float = 1.0,
                 update: str = "one-sided", batch_sum: bool = False, analytic_kl: bool = True, check: bool = True,
                 compile: bool = False):
        super().__init__(model, guide, analytic_kl=analytic_kl, check=check, compile=compile)
        self.kl_target = _check_target("kl_target", kl_target)
        self.entropy_target = _check_target("entropy_target", entropy_target)
        if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not (math.isfinite(damping) and damping > 0):
            raise ConfigError(f"damping={damping!r}; expected a finite number > 0")
        self.damping = float(damping)
        if update not in UPDATES:
            raise ConfigError(f"update={update!r}; expected one of {', '.join(UPDATES)}")
        self.update = update
        number = not isinstance(multiplier_lr, bool) and isinstance(multiplier_lr, (int, float)) and math.isfinite(multiplier_lr)
        if update == "one-sided" and not (number and 0 < multiplier_lr <= damping):
            raise ConfigError(f"multiplier_lr={multiplier_lr!r}; expected a number in (0, damping={self.damping:g}] "
                              "for the one-sided update")
        if update == "two-sided" and not (number and multiplier_lr > 0):
            raise ConfigError(f"multiplier_lr={multiplier_lr!r}; expected a finite number > 0")
        self.multiplier_lr = float(multiplier_lr)
        if not isinstance(batch_sum, bool):
            raise ConfigError(f"batch_sum={batch_sum!r}; expected True or False")
        self.batch_sum = batch_sum
        self.constraints = tuple(name for name, t in (("kl", self.kl_target), ("entropy", self.entropy_target)) if t is not None)
        multipliers = torch.zeros(len(self.constraints), dtype=torch.float64) if self.constraints else None
        self.register_buffer("multipliers", multipliers)
        if self.constraints:
            targets = [self.kl_target if c == "kl" else self.entropy_target for c in self.constraints]
            self.register_buffer("targets", torch.tensor(targets, dtype=torch.float64))

    def _refuse(self, model_run, guide_run, structure):
        enumerated, score = structure
        if enumerated:
            raise SiteError("Constrained needs a pair without enumerated sites; expected reparameterized latents")
        if score:
            raise SiteError(
                f"guide site {score[0]!r} has no reparameterized sampler, which the constraints' pathwise "
                "gradients need; expected a reparameterized guide"
            )

    def loss_and_terms(self, x: torch.Tensor) -> Tuple[torch.Tensor, Terms]:
        """``(-log_lik, {"log_lik", "kl", "entropy"})`` per datapoint, all differentiable (the
        part that ``compile=True`` compiles; the multipliers act outside the program, in forward)."""
        model_run, guide_run = self._runs(x)
        model_sites, guide_sites = model_run.sites, guide_run.sites
        if self._analytic is None:
            self._analytic = self._analytic_sites(model_sites, guide_sites) if self.analytic_kl else frozenset()
        n = self._per_datapoint(x)
        log_liks, kls, entropies = [], [], []
        for name, site in model_sites.items():
            if site["is_observed"]:
                log_liks.append(_scaled_sum(site["fn"].log_prob(site["value"]), site))
                entropies.append(_scaled_sum(site["fn"].entropy(), site))
            elif name in self._analytic:
                g = guide_sites[name]
                kls.append(_scaled_sum(kl_divergence(g["fn"], site["fn"]), g))
            else:
                g = guide_sites[name]
                kls.append(_scaled_sum(g["fn"].log_prob(g["value"]), g) - _scaled_sum(site["fn"].log_prob(site["value"]), site))
        log_lik, kl, entropy = _total(log_liks, x) / n, _total(kls, x) / n, _total(entropies, x) / n
        return -log_lik, {"log_lik": log_lik, "kl": kl, "entropy": entropy}

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Terms]:
        neg_log_lik, parts = super().forward(x)
        kl, entropy = parts["kl"], parts["entropy"]
        loss = neg_log_lik if self.kl_target is not None else neg_log_lik + kl
        terms = {"elbo": (-neg_log_lik - kl).detach(), "log_lik": parts["log_lik"].detach(), "kl": kl.detach(),
                 "entropy": entropy.detach()}
        if self.multipliers is None:
            return loss, terms
        values = torch.stack([kl if c == "kl" else entropy for c in self.constraints])
        scale = float(x.shape[0]) if self.batch_sum else 1.0  # the reference code's sums over the batch
        g = scale * (values - self.targets.to(values))  # [number of constraints]
        lam = self.multipliers.to(values, copy=True)  # the update below must not change the loss or the terms
        loss = loss + penalty(g, lam, self.damping, self.update) / scale
        for name, value in zip(self.constraints, lam):
            terms[f"lambda_{name}"] = value
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                g = g.detach().to(self.multipliers)
                if distributed.world_size() > 1:
                    g = distributed.all_reduce_sum(g) / distributed.world_size()
                multiplier_step(self.multipliers, g, self.damping, self.multiplier_lr, self.update)
        return loss, terms
