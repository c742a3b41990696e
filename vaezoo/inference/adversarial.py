"""Objectives that match the aggregate posterior to the prior in latent space: adversarially (AAE,
WAE-GAN, MaskAAE's WGAN-GP) or by the MMD (WAE-MMD). The critic and its optimizer live inside the
objective, which takes its own critic steps in ``forward``: one Trainer, one optimizer for the pair.
MaskAAE's objective is in :mod:`vaezoo.inference.mask_aae`."""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from vaezoo import traces
from vaezoo.arguments import check_int
from vaezoo.inference.kernels import mmd_imq
from vaezoo.inference.objectives import Objective, Terms

def gradient_penalty(critic: Callable, real: torch.Tensor, fake: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's E[(|grad D(x_hat)| - 1)^2] at x_hat = u real + (1 - u) fake (Gulrajani et al.
    2017), ``u  # [N, 1]``; differentiable in the critic's parameters (``create_graph``)."""
    x_hat = (u * real + (1 - u) * fake).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.norm(dim=-1) - 1).square().mean()


class LatentMatching(Objective):
    """Base class: loss = reconstruction + ``weight`` x a divergence between the codes z ~ q(z | x)
    and draws from the prior, per datapoint. The reconstruction is -log p(x | z) of the model's
    observed sites at the guide's codes; the codes are the guide's latent sites, flattened and
    concatenated ``[B, D]``; the prior draws come from the model's latent site where it has one,
    else from an unconditioned run of the model (so any prior, hierarchical or not, is drawn from
    its marginal; :func:`vaezoo.traces.prior_codes`). Never compiled (``compile`` is off): the critic
    steps are Python control flow."""

    def __init__(self, model: Callable, guide: Callable, weight: float = 1.0, check: bool = True):
        super().__init__(model, guide, check, compile=False)
        self.weight = float(weight)
        self._last_run = None  # (x, the model's latent sites) of the last codes(x)

    def codes(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(reconstruction per datapoint, codes [B, D], prior draws [B, D])``."""
        model_run, guide_run = self._runs(x)
        self._last_run = (x, {n: s for n, s in model_run.sites.items() if not s["is_observed"]})
        log_lik = [traces.site_log_prob(s).sum() for s in model_run.sites.values() if s["is_observed"]]
        recon = -sum(log_lik) / self._per_datapoint(x)
        return recon, traces.latent_codes(guide_run.sites, x.shape[0]), self._prior_like(x)

    def _prior_like(self, x: torch.Tensor) -> torch.Tensor:
        """Prior draws ``[B, D]`` for the batch ``x``: from the model's latent site of the last
        :meth:`codes` on this same ``x`` where there is one (no decoder run: a critic step draws
        afresh each time), else from a run of the model (:func:`traces.prior_codes`)."""
        last_x, sites = self._last_run or (None, None)
        return traces.prior_codes(self.model, x, sites if last_x is x else None)

    def divergence(self, q: torch.Tensor, p: torch.Tensor) -> Tuple[torch.Tensor, Terms]:
        raise NotImplementedError

    def loss_and_terms(self, x: torch.Tensor) -> Tuple[torch.Tensor, Terms]:
        recon, q, p = self.codes(x)
        div, terms = self.divergence(q, p)
        return recon + self.weight * div, dict(terms, reconstruction=recon.detach())


class WAEMMD(LatentMatching):
    """WAE-MMD (Tolstikhin et al. 2018): reconstruction + ``weight`` MMD^2 with the IMQ kernels of
    :func:`mmd_imq` (``prior_variance``: the prior's variance per dimension). Terms: ``mmd``."""

    def __init__(self, model, guide, weight: float = 10.0, prior_variance: float = 1.0, check: bool = True):
        super().__init__(model, guide, weight, check)
        self.prior_variance = float(prior_variance)

    def divergence(self, q, p):
        mmd = mmd_imq(q, p, self.prior_variance)
        return mmd, {"mmd": mmd.detach()}


class _Critic(LatentMatching):
    """A latent matching with a critic network ``critic`` (``[B, D] -> [B, 1]``) trained inside
    ``forward``: ``critic_steps`` optimizer steps on the batch's (detached) codes against fresh prior
    draws, then the pair's loss against the updated critic. Critic steps run only in training mode
    with gradients on (the Trainer's evaluation reads the terms without them). The critic is held
    outside ``parameters()`` (the Trainer's optimizer must not step it); its weights, its optimizer
    (Adam, ``critic_lr``, ``critic_betas``) and the step count are the objective's extra state, so
    ``state_dict`` carries them and a resumed run continues exactly."""

    def __init__(self, model, guide, critic: nn.Module, weight: float = 1.0, critic_steps: int = 5,
                 critic_lr: float = 1e-4, critic_betas: Tuple[float, float] = (0.5, 0.9), check: bool = True):
        super().__init__(model, guide, weight, check)
        self._critic = [critic]  # a list: not a submodule, so not in parameters()
        self.critic_steps = check_int("critic_steps", critic_steps, 0)
        self.critic_lr = float(critic_lr)
        self.critic_betas = tuple(critic_betas)
        self._optimizer: Optional[torch.optim.Optimizer] = None
        self.steps = 0  # forward calls in training mode (the Trainer's first, probing call among them)

    @property
    def critic(self) -> nn.Module:
        return self._critic[0]

    def critic_optimizer(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            self._optimizer = torch.optim.Adam(self.critic.parameters(), lr=self.critic_lr, betas=self.critic_betas)
        return self._optimizer

    def critic_loss(self, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def train_critic(self, q: torch.Tensor, prior: Callable[[], torch.Tensor]) -> None:
        opt = self.critic_optimizer()
        for _ in range(self.critic_steps):
            opt.zero_grad(set_to_none=True)
            self.critic_loss(q, prior()).backward()
            opt.step()
        opt.zero_grad(set_to_none=True)

    def _frozen_critic(self, z: torch.Tensor) -> torch.Tensor:
        """The critic on ``z`` with a graph to ``z`` only: the pair's loss must leave the critic's
        weights without gradients (their optimizer is the objective's own)."""
        params = {k: v.detach() for k, v in self.critic.named_parameters()}
        return torch.func.functional_call(self.critic, params, (z,))

    def loss_and_terms(self, x):
        self._follow(x)
        recon, q, p = self.codes(x)
        if self.training and torch.is_grad_enabled():
            self.train_critic(q.detach(), lambda: self._prior_like(x))
            self.steps += 1
        div, terms = self.divergence(q, p)
        return recon + self.weight * div, dict(terms, reconstruction=recon.detach())

    # --- state: the critic, its optimizer and the step count travel in state_dict
    def get_extra_state(self):
        opt = self._optimizer.state_dict() if self._optimizer is not None else None
        return {"critic": self.critic.state_dict(), "optimizer": opt, "steps": self.steps}

    def set_extra_state(self, state):
        self.critic.load_state_dict(state["critic"])
        self.steps = int(state["steps"])
        self._optimizer = None
        if state["optimizer"] is not None:
            self.critic_optimizer().load_state_dict(state["optimizer"])  # casts to the critic's dtype

    def _move_critic(self, fn, *args, **kwargs):
        self.critic._apply(fn, *args, **kwargs)
        if self._optimizer is not None:  # its moment estimates follow the critic's device and dtype
            state, self._optimizer = self._optimizer.state_dict(), None
            self.critic_optimizer().load_state_dict(state)

    def _follow(self, x: torch.Tensor) -> None:
        """The critic on ``x``'s device and dtype (it was built apart from the pair, which may have
        been moved since)."""
        p = next(self.critic.parameters())
        if p.dtype != x.dtype or p.device != x.device:
            self._move_critic(lambda t: t.to(x.device, x.dtype) if t.is_floating_point() else t.to(x.device))

    def _apply(self, fn, *args, **kwargs):
        self._move_critic(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)


class AAE(_Critic):
    """The adversarial autoencoder (Makhzani et al. 2016) and WAE-GAN (Tolstikhin et al. 2018):
    a GAN critic D (logits) tells prior draws (label 1) from codes (label 0); the pair minimizes
    reconstruction + ``weight`` E_q[softplus(-D(z))] (the non-saturating generator loss). Terms:
    ``critic_loss`` (its binary cross-entropy on this batch), ``generator``."""

    def critic_loss(self, q, p):
        return F.softplus(-self.critic(p)).mean() + F.softplus(self.critic(q)).mean()

    def divergence(self, q, p):
        gen = F.softplus(-self._frozen_critic(q)).mean()
        with torch.no_grad():
            critic = self.critic_loss(q, p)
        return gen, {"generator": gen.detach(), "critic_loss": critic.to(q.dtype)}
