"""Training objectives as nn.Modules: ``Objective(model, guide)(x) -> (loss, terms)``.

Like Pyro's ``Trace_ELBO``, an objective walks the sample sites of a guide trace and of the model
replayed on it (``poutine.trace``/``replay``) and never names a model. Unlike it, it returns a
differentiable loss instead of stepping an optimizer itself, so training is plain PyTorch: any
torch optimizer, DDP, AMP. The loss is the negative objective *per datapoint* (divided by the size
of the ``"data"`` plate), in nats.

What each objective does with each kind of Pyro program, so that it answers what Pyro's own
inference answers or refuses in one line:

- reparameterized guide sites: pathwise gradients, with closed-form KL terms where they are exact;
- guide sites without ``rsample`` (discrete latents): score-function terms, Rao-Blackwellized over
  the plates as in ``Trace_ELBO`` and with a decaying-average baseline as in ``TraceGraph_ELBO``;
- sites marked for enumeration (``config_enumerate``, ``infer={"enumerate": "parallel"}``): summed
  out exactly by Pyro's ``TraceEnum_ELBO``;
- ``poutine.scale``/``mask`` and subsampled plates (``subsample_size``): honoured as Pyro does.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer import TraceEnum_ELBO
from pyro.infer.util import MultiFrameTensor
from torch.distributions import kl_divergence

from vaezoo import particles, traces
from vaezoo.arguments import check_int, check_nonnegative_float
from vaezoo.errors import ConfigError, SiteError
from vaezoo.inference import estimators
from vaezoo.inference.kernels import mmd_imq

from vaezoo.inference.objective import Objective, Terms, _same, _scaled_sum, _subsampled, _total  # noqa: F401

#: decay of the score-function baselines, Pyro's ``TraceGraph_ELBO`` default
BASELINE_BETA = 0.9


class ELBO(Objective):
    """The evidence lower bound E_q[log p(x, z) - log q(z | x)] per datapoint, with the gradient
    Pyro's ``Trace_ELBO`` estimates, or ``TraceEnum_ELBO`` for a pair with sites to enumerate.

    ``analytic_kl=True`` replaces a latent site's ``E_q[log q - log p]`` by ``KL(q || p)`` in closed
    form where one is registered with ``torch.distributions.kl_divergence`` and where that is exact:
    the guide site is reparameterized, has the model site's scale and mask, and every latent the
    model site's distribution may depend on (the model's sites before it) is drawn before it in the
    guide, so that given them the site is drawn from q exactly (a guide x -> z1 -> z2 against a model
    z2 -> z1 gets the sampled term for z1). Elsewhere the sampled term is used.

    Guide sites without a reparameterized sampler add the score-function term
    ``log q(z) * (log r - b)`` with ``log r`` the sampled ``log p - log q`` summed to the site's
    plates (Rao-Blackwellized as in ``Trace_ELBO``) and ``b`` a decaying average of it (as
    ``TraceGraph_ELBO``'s ``use_decaying_avg_baseline``), kept in the objective's state (and so in
    checkpoints). Terms: ``elbo``, ``log_lik`` (observed sites), ``kl`` (latent sites), per datapoint;
    ``elbo`` alone when sites are enumerated.

    ``estimator="stl"``: sticking the landing (:mod:`vaezoo.inference.estimators`), every KL term
    sampled with ``log q`` at stop-gradient guide parameters; reparameterized guide sites only.
    The buffer ``kl_weight`` (1 by default; the Trainer's ``kl_warmup`` sets it) weights the KL term
    in the loss, not in the ``elbo`` term; a compiled program reads it as an input.

    ``beta`` and ``mmd_weight`` change the training loss, never the reported ``elbo``: the loss per
    datapoint is ``-log_lik + beta * kl_weight * kl + mmd_weight * MMD^2(q(z), p(z))``, with the
    MMD^2 between the batch's codes and as many prior draws (:func:`~vaezoo.inference.kernels.mmd_imq`,
    the IMQ kernels of WAE-MMD; term ``mmd``). ``beta`` alone is the beta-VAE (Higgins et al.
    2017); InfoVAE's (Zhao et al. 2019) ``(alpha, lambda)`` are ``beta = 1 - alpha`` and
    ``mmd_weight = alpha + lambda - 1``.
    """

    #: whether the loss weights its KL term by ``kl_weight`` (a subclass with a loss of its own may not)
    weights_kl = True

    def __init__(self, model: Callable, guide: Callable, analytic_kl: bool = True, check: bool = True, compile: bool = False,
                 estimator: str = "standard", beta: float = 1.0, mmd_weight: float = 0.0):
        super().__init__(model, guide, check, compile)
        self.analytic_kl = analytic_kl
        self.estimator = estimators.check_estimator("ELBO", estimator)
        # beta: a buffer, as kl_weight, so that a compiled program reads it as an input (a value
        # changed after compiling is used, not frozen); mmd_weight decides whether the program has
        # an MMD term at all, so it is fixed at construction (read-only)
        self.register_buffer("beta", torch.tensor(check_nonnegative_float("beta", beta)), persistent=False)
        self._mmd_weight = check_nonnegative_float("mmd_weight", mmd_weight)
        # the weight of the KL term in the loss (KL warm-up: the Trainer's kl_warmup sets it): a
        # buffer, so that a compiled program takes it as an input rather than freezing it; not
        # persistent (checkpoints of ELBOs before it load, and a schedule sets it from the epoch)
        self.register_buffer("kl_weight", torch.ones(()), persistent=False)
        self._has_kl: Dict[tuple, bool] = {}  # (guide type, model type) -> a KL is registered
        self._analytic: Optional[frozenset] = None  # sites with a closed-form KL, found by the first call
        self._baselines: Dict[str, float] = {}
        self._enum: Optional[TraceEnum_ELBO] = None

    def _check(self, model_run, guide_run):
        traces.check_sites(model_run.sites, guide_run.sites, allow_enumerated=True)

    def _refuse(self, model_run, guide_run, structure):
        if self.estimator != "standard":
            estimators.refuse(self.estimator, model_run, guide_run)

    # closed-form KL: where it is exact
    def _kl_registered(self, q, p) -> bool:
        key = (type(q), type(p))
        if key not in self._has_kl:
            try:
                kl_divergence(q, p)
                self._has_kl[key] = True
            except NotImplementedError:
                self._has_kl[key] = False
        return self._has_kl[key]

    def _analytic_sites(self, model_sites, guide_sites) -> frozenset:
        """Latent sites whose KL term is taken in closed form (see the class docstring)."""
        model_order = [n for n, s in model_sites.items() if not s["is_observed"]]
        guide_order = [n for n, s in guide_sites.items() if not s["is_observed"]]
        guide_before = {n: set(guide_order[:i]) for i, n in enumerate(guide_order)}
        out = set()
        for i, name in enumerate(model_order):
            p, g = model_sites[name], guide_sites.get(name)
            if g is None or not g["fn"].has_rsample:
                continue
            if isinstance(particles.base_distribution(g["fn"]), dist.Delta):
                # Pyro's KL(Delta || p) is -log p(v): it drops a Delta's log_density (the density an
                # AutoGuide's draw carries), and the sampled term log q - log p is exact anyway
                continue
            if not set(model_order[:i]) <= guide_before[name]:
                continue
            if not (_same(p["scale"], g["scale"]) and _same(p["mask"], g["mask"])):
                continue
            if self._kl_registered(g["fn"], p["fn"]):
                out.add(name)
        return frozenset(out)

    def _analytic_now(self, model_sites, guide_sites) -> frozenset:
        """The closed-form sites of this call: those found by the first call whose model and guide
        sites still have the same scale and mask (a KL weight read anew by every call of the pair
        changes the model site's scale alone, and the closed form is then no longer the term)."""
        return frozenset(
            n for n in self._analytic
            if _same(model_sites[n]["scale"], guide_sites[n]["scale"]) and _same(model_sites[n]["mask"], guide_sites[n]["mask"])
        )

    def loss_and_terms(self, x: torch.Tensor) -> Tuple[torch.Tensor, Terms]:
        if self._enum is not None:
            return self._enumerated_loss(x)
        model_run, guide_run = self._runs(x)
        enumerated, score = self._structure
        if enumerated:
            depth = traces.max_plate_nesting(model_run.sites, guide_run.sites)
            self._enum = TraceEnum_ELBO(max_plate_nesting=max(depth, 1))
            return self._enumerated_loss(x)
        model_sites, guide_sites = model_run.sites, guide_run.sites
        stl = self.estimator == "stl"
        if self._analytic is None:  # sticking the landing takes every term sampled
            self._analytic = self._analytic_sites(model_sites, guide_sites) if self.analytic_kl and not stl else frozenset()
        n = self._per_datapoint(x)
        if score:
            return self._score_function_loss(model_sites, guide_sites, n)
        analytic = self._analytic_now(model_sites, guide_sites)
        # STL: log q at stop-gradient guide parameters (vaezoo.inference.estimators)
        fixed = estimators.fixed_log_probs(self.guide, x, guide_run) if stl and torch.is_grad_enabled() else None
        log_liks, kls = [], []
        for name, site in model_sites.items():
            if site["is_observed"]:
                log_liks.append(_scaled_sum(site["fn"].log_prob(site["value"]), site))
            elif name in analytic:
                g = guide_sites[name]
                kls.append(_scaled_sum(kl_divergence(g["fn"], site["fn"]), g))
            else:
                g = guide_sites[name]
                log_q = g["fn"].log_prob(g["value"]) if fixed is None else estimators.stop_gradient_log_q(g, fixed[name])
                kls.append(_scaled_sum(log_q, g) - _scaled_sum(site["fn"].log_prob(site["value"]), site))
        log_lik, kl = _total(log_liks, x), _total(kls, x)
        elbo = (log_lik - kl) / n
        terms = {"elbo": elbo.detach(), "log_lik": log_lik.detach() / n, "kl": kl.detach() / n}
        loss = -(log_lik - self.beta * self.kl_weight * kl) / n
        if self.mmd_weight:
            mmd = mmd_imq(traces.latent_codes(guide_sites, x.shape[0]), traces.prior_codes(self.model, x, model_sites))
            terms["mmd"] = mmd.detach()
            loss = loss + self.mmd_weight * mmd
        return loss, terms

    @property
    def mmd_weight(self) -> float:
        """The weight of the MMD term (fixed at construction: it decides the program's structure)."""
        return self._mmd_weight

    def _unweighted(self, what: str) -> None:
        """Refuses a KL weight other than 1, and an MMD term, where the loss has no KL term apart
        (eager paths only)."""
        if float(self.kl_weight) != 1.0 or float(self.beta) != 1.0:
            raise ConfigError(f"a KL weight (beta={float(self.beta)}, KL warm-up) needs reparameterized guide sites; this pair has {what}")
        if self.mmd_weight:
            raise ConfigError(f"mmd_weight={self.mmd_weight} needs reparameterized guide sites; this pair has {what}")

    def _enumerated_loss(self, x):
        self._unweighted("sites to enumerate")
        loss = self._enum.differentiable_loss(self.model, self.guide, x) / self._per_datapoint(x)
        return loss, {"elbo": -loss.detach()}

    def _score_function_loss(self, model_sites, guide_sites, n: int) -> Tuple[torch.Tensor, Terms]:
        """The ELBO with score-function terms for the guide's non-reparameterized sites: its value,
        and a surrogate whose gradient is the estimator of the class docstring."""
        self._unweighted("guide sites without rsample")
        analytic = self._analytic_now(model_sites, guide_sites)
        log_r = MultiFrameTensor()  # sampled log p - log q, by plate stack, for the score terms
        log_lik = value = surrogate = 0.0  # sums of scalar tensors
        for name, site in model_sites.items():
            lp = scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"], site["mask"])
            log_r.add((site["cond_indep_stack"], lp.detach()))
            if site["is_observed"]:
                log_lik = log_lik + lp.sum()
            if name in analytic:
                g = guide_sites[name]
                kl = _scaled_sum(kl_divergence(g["fn"], site["fn"]), g)
                value, surrogate = value - kl, surrogate - kl
            else:
                value, surrogate = value + lp.sum(), surrogate + lp.sum()
        score_sites = []
        for name, g in guide_sites.items():
            if g["is_observed"]:
                continue
            parts = g["fn"].score_parts(g["value"]).scale_and_mask(g["scale"], g["mask"])
            log_r.add((g["cond_indep_stack"], -parts.log_prob.detach()))
            if name in analytic:
                continue
            value = value - parts.log_prob.sum()
            if not isinstance(parts.entropy_term, (int, float)):
                surrogate = surrogate - parts.entropy_term.sum()
            if not isinstance(parts.score_function, (int, float)):
                score_sites.append((name, g, parts.score_function))
        for name, g, score in score_sites:
            cost = log_r.sum_to(g["cond_indep_stack"])  # Rao-Blackwellized over the plates
            if not isinstance(cost, torch.Tensor):
                cost = torch.as_tensor(cost, dtype=score.dtype, device=score.device)
            baseline = self._baselines.get(name)
            signal = cost if baseline is None else cost - baseline
            surrogate = surrogate + (score * signal).sum()
            mean = float(cost.mean())
            self._baselines[name] = mean if baseline is None else BASELINE_BETA * baseline + (1 - BASELINE_BETA) * mean
        elbo = value.detach() / n
        # the value of the ELBO, the gradient of the surrogate
        loss = -(elbo + (surrogate - surrogate.detach()) / n)
        log_lik = torch.as_tensor(log_lik, dtype=elbo.dtype, device=elbo.device).detach() / n
        return loss, {"elbo": elbo, "log_lik": log_lik, "kl": log_lik - elbo}

    # The baselines are state: they travel in state_dict (checkpoints) as float64 scalars under
    # "baseline.<site>", present only for pairs that have them, for an exact resume.
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for name, b in self._baselines.items():
            destination[f"{prefix}baseline.{name}"] = torch.tensor(b, dtype=torch.float64)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        key = f"{prefix}baseline."
        self._baselines = {k[len(key):]: float(v) for k, v in state_dict.items() if k.startswith(key)}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        unexpected_keys[:] = [k for k in unexpected_keys if not k.startswith(key)]


class IWAE(Objective):
    """The importance-weighted bound of Burda et al. (2016),
    E[log (1/K) sum_k p(x, z_k) / q(z_k | x)], with the K particles drawn in one vectorized pass.
    Terms: ``iwae`` (the bound) and ``elbo`` (the mean log-weight), per datapoint.

    Reparameterized guide sites get the pathwise gradient. Guide sites without ``rsample`` get the
    VIMCO estimator (Mnih and Rezende 2016): particle k's score ``log q(h_k)`` is weighted by
    ``L - L_{-k}``, the bound minus the bound with particle k's log-weight replaced by the mean of
    the others' (a per-particle baseline that needs no state), which takes K >= 2. A site marked
    for enumeration or a subsampled data plate is refused in one line (use :class:`ELBO`).

    ``estimator="dreg"``: doubly reparameterized gradients for the guide, the standard ones for the
    model (:mod:`vaezoo.inference.estimators`); reparameterized guide sites only."""

    def __init__(self, model: Callable, guide: Callable, num_particles: int = 5, check: bool = True, compile: bool = False,
                 estimator: str = "standard"):
        super().__init__(model, guide, check, compile)
        self.estimator = estimators.check_estimator("IWAE", estimator)
        self.num_particles = check_int("num_particles", num_particles, 1)
        self._particle_dim: Optional[int] = None
        self._probed = False

    def _refuse(self, model_run, guide_run, structure):
        if self.estimator != "standard":
            estimators.refuse(self.estimator, model_run, guide_run)
        enumerated, score = structure
        if enumerated:
            name = next(n for run in (model_run, guide_run) for n, s in run.sites.items() if not s["is_observed"] and traces.is_enumerated(s))
            raise SiteError(f"site {name!r} is marked for enumeration, which IWAE does not do; expected a pair without enumeration, or train with ELBO (it enumerates as TraceEnum_ELBO)")
        if score and self.num_particles < 2:
            raise SiteError(
                f"guide site {score[0]!r} has no reparameterized sampler, and its VIMCO baseline needs "
                "num_particles >= 2; expected num_particles >= 2, or train with ELBO"
            )
        for run in (model_run, guide_run):
            for name in _subsampled(run):
                raise SiteError(
                    f"plate {name!r} subsamples (subsample_size), but the IWAE bound needs the weights of "
                    "every datapoint of the batch; expected a plate without subsample_size (the Trainer "
                    "feeds minibatches), or train with ELBO"
                )

    def _inspect(self, x: torch.Tensor) -> None:
        self._runs(x)  # checks the pair and decides whether it can be compiled
        # None for a pair that moves a particle plate out of place: one particle per pass
        self._particle_dim = particles.probe(self.model, self.guide, x)[0]
        self._probed = True

    def loss_and_terms(self, x: torch.Tensor) -> Tuple[torch.Tensor, Terms]:
        if not self._probed:
            self._inspect_untouched(x)
        K = self.num_particles
        if self.estimator == "dreg" and torch.is_grad_enabled():
            with pyro.validation_enabled(False):
                log_w, surrogate = estimators.dreg_surrogate(self.model, self.guide, x, K, self._particle_dim)
            bound = estimators.iwae_bound(log_w.detach()).mean()
            return -(bound + surrogate), {"iwae": bound, "elbo": log_w.detach().mean()}
        with pyro.validation_enabled(False):  # the first call's runs validated the pair, as the ELBO's do
            if self._structure[1]:  # guide sites without rsample
                log_p, log_q, log_s = particles.log_weights(self.model, self.guide, x, K, self._particle_dim, check=False, score=True)
            else:
                (log_p, log_q), log_s = particles.log_weights(self.model, self.guide, x, K, self._particle_dim, check=False), None
        log_w = log_p - log_q  # [K, N]
        bound_n = log_w.logsumexp(0) - math.log(K)  # [N]
        bound = bound_n.mean()
        terms = {"iwae": bound.detach(), "elbo": log_w.detach().mean()}
        if log_s is None:
            return -bound, terms
        signal = bound_n.detach() - _leave_one_out_bounds(log_w.detach())  # [K, N]
        surrogate = (signal * log_s).sum(0).mean()
        return -(bound + surrogate - surrogate.detach()), terms


def _leave_one_out_bounds(log_w: torch.Tensor) -> torch.Tensor:
    """VIMCO's ``L_{-k}  # [K, N]``: log (1/K) sum_j w_j with w_k replaced by the geometric mean of
    the other K - 1 weights, for every particle k, from log-weights ``log_w  # [K, N]``."""
    K = log_w.shape[0]
    others_mean = (log_w.sum(0, keepdim=True) - log_w) / (K - 1)  # [K, N]
    replaced = log_w.unsqueeze(0).repeat(K, 1, 1)  # [K (left out), K, N]
    index = torch.arange(K, device=log_w.device)
    replaced[index, index] = others_mean
    return replaced.logsumexp(1) - math.log(K)


OBJECTIVES = {"elbo": ELBO, "iwae": IWAE}
