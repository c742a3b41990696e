"""The SOS-VAE's Lagrangian objective (``papers/sos-vae-low-rank-observations.txt``, eq. 3): the
reconstruction term under inequality constraints on the KL and on the entropy of the observation
distribution, with multipliers found by the modified differential method of multipliers."""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
from torch import nn
from torch.distributions import kl_divergence

from vaezoo.errors import ConfigError, SiteError
from vaezoo.inference.objectives import ELBO, Terms, _scaled_sum, _total


class _Ascent(torch.autograd.Function):
    """Identity whose backward negates the gradient: the multipliers, which the method of
    multipliers moves *up* the Lagrangian, can then share the descending optimizer of the
    networks (the trick of the ``mdmm`` package, without its separate negative-lr param group)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


def _check_target(name: str, value) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name}={value!r}; expected a finite number, or None for no constraint")
    return float(value)


class Constrained(ELBO):
    r"""Minimizes :math:`-\mathbb E_q[\log p(x \mid z)]` per datapoint subject to
    :math:`\mathrm{KL}(q(z \mid x) \,\|\, p(z)) \le` ``kl_target`` and
    :math:`\mathrm H[p(x \mid z)] \le` ``entropy_target`` (both per datapoint, averaged over the
    batch; the entropy is the closed form of every observed site's distribution, so that a
    variance that grows without bound is refused). A target of ``None`` drops its constraint; with
    no KL constraint the KL enters with weight 1 (the negative ELBO), which is the unconstrained run
    whose KL and entropy the paper reads to choose the targets.

    Each active constraint :math:`g = C - \text{target} \le 0` has a multiplier :math:`\lambda \ge 0`
    and enters the loss as the augmented Lagrangian term for an inequality (Platt and Barr 1988's
    modified differential method of multipliers with damping ``damping`` = :math:`c`):

    .. math:: \frac{\max(0, \lambda + c\, g)^2 - \lambda^2}{2c},

    whose gradient is :math:`\max(0, \lambda + c g) \nabla g` for the networks (the MDMM term
    :math:`\lambda g + \tfrac c2 g^2` while the constraint is active, nothing once it is slack and
    :math:`\lambda = 0`) and :math:`g` (or :math:`-\lambda / c` when slack) for :math:`\lambda`. The
    multipliers are the parameter ``multipliers`` (``[kl, entropy]``, the active ones): their
    gradient is negated on the way back (:class:`_Ascent`), so the Trainer's optimizer, which
    descends, moves them by gradient *ascent*, and each call projects them back onto
    :math:`\lambda \ge 0` before use. Being a parameter they are in ``state_dict`` and the
    optimizer's state, so a resumed run continues exactly. (The ``mdmm`` package implements the
    same method but its constraints are closures of no argument and its ascent is a negative
    learning rate, which torch's optimizers refuse in one param group with the networks: it does
    not fit an objective whose ``forward(x)`` returns the loss.)

    The loss is the Lagrangian's value, not a bound; the terms report ``elbo``, ``log_lik``,
    ``kl``, ``entropy`` (per datapoint) and ``lambda_kl``/``lambda_entropy``. Guides need
    reparameterized sites (no enumeration, no score-function terms).
    """

    def __init__(self, model: Callable, guide: Callable, kl_target: Optional[float] = None,
                 entropy_target: Optional[float] = None, damping: float = 10.0, analytic_kl: bool = True,
                 check: bool = True, jit: bool = False):
        super().__init__(model, guide, analytic_kl=analytic_kl, check=check, jit=jit)
        self.kl_target = _check_target("kl_target", kl_target)
        self.entropy_target = _check_target("entropy_target", entropy_target)
        if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not (math.isfinite(damping) and damping > 0):
            raise ConfigError(f"damping={damping!r}; expected a finite number > 0")
        self.damping = float(damping)
        self.constraints = tuple(name for name, t in (("kl", self.kl_target), ("entropy", self.entropy_target)) if t is not None)
        self.multipliers: Optional[nn.Parameter] = None
        if self.constraints:
            self.multipliers = nn.Parameter(torch.zeros(len(self.constraints)))
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
        part that ``jit=True`` traces; the multipliers act outside the trace, in forward)."""
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
        if self.multipliers is not None:
            with torch.no_grad():  # projection onto lambda >= 0 after the optimizer's last step
                self.multipliers.clamp_(min=0)
        neg_log_lik, parts = super().forward(x)
        kl, entropy = parts["kl"], parts["entropy"]
        loss = neg_log_lik if self.kl_target is not None else neg_log_lik + kl
        terms = {"elbo": (-neg_log_lik - kl).detach(), "log_lik": parts["log_lik"].detach(), "kl": kl.detach(),
                 "entropy": entropy.detach()}
        if self.multipliers is not None:
            values = torch.stack([kl if c == "kl" else entropy for c in self.constraints])
            g = values - self.targets.to(values)  # [number of constraints]
            lam = _Ascent.apply(self.multipliers).to(values)
            c = self.damping
            loss = loss + ((lam + c * g).clamp(min=0).pow(2) - lam.pow(2)).sum() / (2 * c)
            for name, value in zip(self.constraints, self.multipliers.detach().to(values)):
                terms[f"lambda_{name}"] = value
        return loss, terms
