"""The machinery of annealed importance sampling (:mod:`vaezoo.evaluation.annealed`): the annealing
schedule, the latents in unconstrained space, and the vectorized HMC annealer with its step-size
adaptation, and the result it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import math
from dataclasses import field
from typing import Callable, ClassVar, Dict, List, Mapping, Optional, Tuple

import pyro
import torch
from pyro.distributions.util import sum_rightmost
from torch.distributions import biject_to, constraints
from tqdm import tqdm

from vaezoo.errors import ConfigError, ShapeError, SiteError
from vaezoo.evaluation.checks import ParamDtypeCheck, check_module_dtypes
from vaezoo.evaluation.result import EstimatorResult, _num
from vaezoo.evaluation.weights import ess_and_stderr, pareto_khat
from vaezoo.particles import check_no_subsampling, check_observed, describe_leak, probe_pair
from vaezoo.traces import (
    DATA_PLATE,
    check_enumerated,
    check_sites,
    elementwise_support,
    enumerated_latents,
    is_deterministic,
    log_density,
    outside_data_plate,
    per_datapoint,
    record,
    site_log_prob,
    sum_out_enumerated,
)


if TYPE_CHECKING:  # the options are the entry point's (annealed.py), read here only
    from vaezoo.evaluation.annealed import AnnealingOptions

CHAIN_PLATE = "ais_chains"
SCHEDULES = ("sigmoid", "linear")

# Step-size adaptation: log eps <- log eps + ADAPT_RATE * (mean acceptance - target), per datapoint.
ADAPT_RATE = 0.5
STEP_SIZE_RANGE = (1e-5, 10.0)
SIGMOID_RADIUS = 4.0  # Grosse et al. (2015), Wu et al. (2017)



@dataclass(kw_only=True)
class AISResult(EstimatorResult):
    """Per-datapoint output of one AIS run (``C`` chains, ``N`` datapoints, ``T`` steps), in the data's
    dtype and on its device (``khat`` float64 on the CPU). The common fields are those of
    :class:`~vaezoo.evaluation.result.EstimatorResult` (``elbo`` is None, ``num_samples`` is ``C``).

    - ``log_px`` [N]: the estimate of log p(x). Forward: ``log mean_c exp(log_weights)``, a stochastic
      lower bound (its expectation is <= log p(x) by Jensen). Reverse: ``-log mean_c
      exp(log_weights)``, a stochastic upper bound.
    - ``log_weights`` [C, N]: accumulated log-weights, ``sum_t log gamma_t(z_{t-1}) - log
      gamma_{t-1}(z_{t-1})``; ``exp`` of them is unbiased for ``p(x)`` (forward) or ``1 / p(x)``
      (reverse) when the step sizes do not depend on the chains (``adapt="pilot"`` or ``"none"``),
      and up to an O(1/C) adaptation bias with ``adapt="online"``.
    - ``stderr``, ``ess``, ``khat`` [N]: of the chains' weights (k-hat needs >= 21 chains).
    - ``accept_rate`` [N]: HMC acceptance probability averaged over chains and transitions (``nan``
      when ``steps == 1``, which makes no transition).
    - ``step_size`` [N]: the last step size; ``step_sizes`` [T - 1, N]: the step size of every
      transition, in the order run.
    - ``latents``: the chains' final states by site name, ``[C, N, ...]``. After a forward run,
      weighted by ``softmax(log_weights)`` over the chains, they estimate posterior expectations;
      unweighted, they are approximate posterior samples.
    - ``betas`` [T + 1]: the inverse temperatures in the order run (0 -> 1 forward, 1 -> 0 reverse).
    - ``options``: the settings of the run; ``pilot_time``: seconds spent in the pilot run.
    """

    estimator: ClassVar[str] = "ais"

    log_weights: torch.Tensor
    accept_rate: torch.Tensor
    step_size: torch.Tensor
    step_sizes: torch.Tensor
    latents: Dict[str, torch.Tensor] = field(repr=False)
    betas: torch.Tensor = field(repr=False)
    direction: str = "forward"
    options: Optional[AnnealingOptions] = None
    proposal: str = "guide"
    pilot_time: float = 0.0

    def _own_dict(self) -> dict:
        accept = torch.nanmean(self.accept_rate.double()).item() if self.accept_rate.numel() else math.nan
        return {
            "direction": self.direction,
            "proposal": self.proposal,
            "accept_rate_mean": _num(accept),
            "options": self.options.to_dict() if self.options is not None else None,
        }


# --- public entry points --------------------------------------------------------------------------


def annealing_schedule(steps: int, schedule: str = "sigmoid") -> torch.Tensor:
    r"""The inverse temperatures :math:`0 = \beta_0 < \dots < \beta_T = 1`, ``[steps + 1]`` float64.

    ``"sigmoid"``: :math:`\tilde\beta_t = \sigma(\delta (2t / T - 1))` rescaled to [0, 1], with
    :math:`\delta = 4` (Grosse et al. 2015; Wu et al. 2017). ``"linear"``: :math:`t / T`.
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule={schedule!r}; expected one of {', '.join(map(repr, SCHEDULES))}")
    t = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    if schedule == "sigmoid" and steps > 1:
        s = torch.sigmoid(SIGMOID_RADIUS * (2 * t - 1))
        t = (s - s[0]) / (s[-1] - s[0])
    t[0], t[-1] = 0.0, 1.0
    return t


# --- the annealing ---------------------------------------------------------------------------------


class _Latent:
    """How one latent site sits in the chains' batch: its transform from the unconstrained space,
    its number of batch dimensions, and the position of the data dimension."""

    def __init__(self, site: dict, particle_dim: int):
        name, fn = site["name"], site["fn"]
        if fn.support.is_discrete:
            raise SiteError(
                f"latent site {name!r} is discrete ({type(fn).__name__}); expected continuous latents "
                "for HMC (enumerate or marginalize the discrete site out)"
            )
        self.name = name
        self.site = site
        self.transform = None if _is_real(fn.support) else biject_to(fn.support)
        self.batch_ndim = len(fn.batch_shape)
        if self.batch_ndim != -particle_dim:
            raise ShapeError(
                f"site {name!r} has batch shape {tuple(fn.batch_shape)} under the chains' plate at dim "
                f"{particle_dim}; expected {-particle_dim} batch dimensions (declare event dims with .to_event)"
            )
        data_dims = [f.dim for f in site["cond_indep_stack"] if f.name == DATA_PLATE]
        if not data_dims:
            raise SiteError(outside_data_plate(name))
        self.data_pos = self.batch_ndim + data_dims[0]

    def spread(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A ``[C or 1, N]`` tensor viewed so it broadcasts against this site's ``like`` tensor."""
        shape = [1] * like.dim()
        shape[0], shape[self.data_pos] = t.shape[0], t.shape[1]
        return t.reshape(shape)

    def reduce(self, t: torch.Tensor, particle_dim: int) -> torch.Tensor:
        """Sums a tensor of this site's batch shape (plus any event dims) to ``[C, N]``."""
        return per_datapoint(sum_rightmost(t, t.dim() - self.batch_ndim), self.site, particle_dim)

    def to_constrained(self, u: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``z = T(u)`` and ``log |det dT/du|`` summed to the site's batch shape (None if T = id)."""
        if self.transform is None:
            return u, None
        z = self.transform(u)
        ladj = self.transform.log_abs_det_jacobian(u, z)
        return z, sum_rightmost(ladj, ladj.dim() - self.batch_ndim)

    def to_unconstrained(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.transform is None else self.transform.inv(z)


class _Annealer:
    """log r(z), log p(x, z) and their gradients for the chains' latents, and the annealing loop.

    ``guide=None`` means the prior is the proposal.
    """

    def __init__(self, model: Callable, guide: Optional[Callable], x: torch.Tensor, chains: int, particle_dim: int):
        self.model, self.guide, self.x = model, guide, x
        self.chains, self.particle_dim = chains, particle_dim
        with self._plate():
            model_run = record(model, x)
        # the full data, once: the probe saw two datapoints only
        check_no_subsampling(model_run)
        check_observed(model_run.sites)
        model_sites = model_run.sites
        guide_sites: Mapping[str, dict] = {}
        if guide is not None:
            with self._plate():
                guide_run = record(guide, x)
            check_no_subsampling(guide_run)
            check_sites(model_sites, guide_run.sites, allow_enumerated=True)
            guide_sites = guide_run.sites
        # the model's enumerated sites (the guide lacks them) are summed out of both densities, not moved
        enumerated = enumerated_latents(model_sites, guide_sites)
        check_enumerated(model_sites, enumerated)
        self.enumerate_at = particle_dim - 1 if enumerated else None
        self.latents: List[_Latent] = [
            _Latent(s, particle_dim) for n, s in model_sites.items() if not s["is_observed"] and n not in enumerated
        ]
        if not self.latents:
            raise SiteError("the model has no latent sample site; expected at least one to anneal over")
        self.shapes = {lat.name: model_sites[lat.name]["value"].shape for lat in self.latents}

    def _plate(self):
        return pyro.plate(CHAIN_PLATE, self.chains, dim=self.particle_dim)

    # initial states, in the unconstrained space
    def initial(self) -> Dict[str, torch.Tensor]:
        """Draws ``z_0 ~ r`` for every chain and datapoint."""
        with self._plate():
            sites = record(self.guide if self.guide is not None else self.model, self.x).sites
        return {lat.name: lat.to_unconstrained(sites[lat.name]["value"]) for lat in self.latents}

    def broadcast_latents(self, latents: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        names = [lat.name for lat in self.latents]
        if set(latents) != set(names):
            raise SiteError(f"latents has sites {sorted(latents)}; expected the model's latent sites {sorted(names)}")
        out = {}
        for lat in self.latents:
            z, shape = torch.as_tensor(latents[lat.name]).to(self.x), self.shapes[lat.name]
            z = z.reshape((1,) * (len(shape) - z.dim()) + tuple(z.shape))
            if z.dim() != len(shape) or z.shape[0] != 1 or any(a not in (1, b) for a, b in zip(z.shape[1:], shape[1:])):
                raise ShapeError(
                    f"latents[{lat.name!r}] has shape {tuple(latents[lat.name].shape)}; expected "
                    f"{tuple(shape[1:])}, one value per datapoint, broadcast over the chains"
                )
            out[lat.name] = lat.to_unconstrained(z.expand(shape).clone())
        return out

    # densities
    def densities(self, u: Mapping[str, torch.Tensor]):
        """``(log r, log p(x, z), log|det J|)``, each ``[C, N]``, at unconstrained latents ``u``."""
        pd = self.particle_dim
        z, log_det = {}, 0.0
        for lat in self.latents:
            z[lat.name], ladj = lat.to_constrained(u[lat.name])
            if ladj is not None:
                log_det = log_det + lat.reduce(ladj, pd)
        with self._plate():
            model_run = record(self.model, self.x, replay=z, enumerate_at=self.enumerate_at)
            guide_sites = record(self.guide, self.x, replay=z).sites if self.guide is not None else None
        model_sites = model_run.sites
        log_p, log_prior = 0.0, 0.0
        summed = ()
        if self.enumerate_at is not None:  # log sum_y p(x, y, z), and the prior's log sum_y p(y, z)
            log_p, summed = sum_out_enumerated(model_run, pd)
            if guide_sites is None:
                log_prior, _ = sum_out_enumerated(model_run, pd, include=lambda site: not site["is_observed"])
        for site in model_sites.values():
            if is_deterministic(site) or site["name"] in summed:  # pyro.deterministic: no density
                continue
            lp = per_datapoint(site_log_prob(site), site, pd)
            log_p = log_p + lp
            if not site["is_observed"]:
                if site["name"] not in z:
                    raise SiteError(
                        f"the model drew a latent site {site['name']!r} absent from its first run; "
                        "expected a fixed set of latent sites"
                    )
                log_prior = log_prior + lp
        if guide_sites is None:
            log_r = log_prior
        else:
            log_r = log_density(guide_sites, pd, include=lambda site: not site["is_observed"])
            log_r = 0.0 if log_r is None else log_r
        zeros = self.x.new_zeros(self.chains, self.x.shape[0])
        return log_r + zeros, log_p + zeros, log_det + zeros

    def evaluate(self, u: Mapping[str, torch.Tensor], beta: Optional[float]):
        """Densities at ``u`` and, if ``beta`` is given, the gradient of log gamma_beta (with the
        Jacobian) w.r.t. ``u``; only ``u`` is differentiated, never the model's parameters."""
        if beta is None:
            return self.densities(u), None
        with torch.enable_grad():
            leaves = {n: v.detach().requires_grad_() for n, v in u.items()}
            log_r, log_p, log_det = self.densities(leaves)
            log_gamma = (1.0 - beta) * log_r + beta * log_p + log_det  # [C, N]
            grads = torch.autograd.grad(log_gamma.sum(), list(leaves.values()), allow_unused=True)
        grads = {n: (g if g is not None else torch.zeros_like(leaves[n])) for n, g in zip(leaves, grads)}
        return (log_r.detach(), log_p.detach(), log_det.detach()), grads

    def kinetic(self, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(lat.reduce(0.5 * p[lat.name] ** 2, self.particle_dim) for lat in self.latents)

    # one HMC transition of every chain, leaving gamma_beta invariant
    def hmc(self, u, dens, grads, beta: float, eps: torch.Tensor, leapfrog_steps: int):
        log_r, log_p, log_det = dens
        log_gamma0 = (1.0 - beta) * log_r + beta * log_p + log_det
        p0 = {n: torch.randn_like(v) for n, v in u.items()}
        e = {lat.name: lat.spread(eps[None], u[lat.name]) for lat in self.latents}
        p = {n: p0[n] + 0.5 * e[n] * grads[n] for n in u}
        q = dict(u)
        # divergent trajectories reach invalid parameters: they are rejected below, not validated
        with pyro.validation_enabled(False):
            for i in range(leapfrog_steps):
                q = {n: q[n] + e[n] * p[n] for n in q}
                (r1, p1, d1), g = self.evaluate(q, beta)
                half = 0.5 if i == leapfrog_steps - 1 else 1.0
                p = {n: p[n] + half * e[n] * g[n] for n in p}
        log_gamma1 = (1.0 - beta) * r1 + beta * p1 + d1
        log_alpha = (log_gamma1 - self.kinetic(p)) - (log_gamma0 - self.kinetic(p0))  # [C, N]
        log_alpha = torch.nan_to_num(log_alpha, nan=-math.inf).clamp(max=0.0)
        accept = torch.rand_like(log_alpha).log() < log_alpha
        u = {lat.name: torch.where(lat.spread(accept, u[lat.name]), q[lat.name], u[lat.name]) for lat in self.latents}
        return u, log_alpha.exp()

    def run(
        self,
        u: Dict[str, torch.Tensor],
        betas: torch.Tensor,
        eps: torch.Tensor,
        *,
        online: bool,
        leapfrog_steps: int,
        target_accept: float,
        fixed: Optional[torch.Tensor] = None,
        progress: bool = False,
        desc: str = "AIS",
        direction: str = "forward",
    ) -> AISResult:
        """Anneals the chains from ``u`` (a sample of gamma at ``betas[0]``) along ``betas``; ``fixed``
        [T - 1, N] overrides the step sizes, in the order run."""
        b = betas.tolist()
        steps = len(b) - 1
        n = self.x.shape[0]
        log_w = self.x.new_zeros(self.chains, n)
        accept_sum = self.x.new_zeros(n)
        trajectory = []
        for t in tqdm(range(1, steps + 1), desc=desc, disable=not progress, leave=False):
            last = t == steps
            (log_r, log_p, log_det), grads = self.evaluate(u, None if last else b[t])
            log_w = log_w + (b[t] - b[t - 1]) * (log_p - log_r)
            if last:
                break
            eps_t = fixed[t - 1] if fixed is not None else eps
            u, alpha = self.hmc(u, (log_r, log_p, log_det), grads, b[t], eps_t, leapfrog_steps)
            trajectory.append(eps_t)
            a = alpha.mean(0)  # [N]
            accept_sum = accept_sum + a
            if online and fixed is None:
                eps = (eps * torch.exp(ADAPT_RATE * (a - target_accept))).clamp(*STEP_SIZE_RANGE)
        transitions = steps - 1
        step_sizes = torch.stack(trajectory) if trajectory else self.x.new_zeros(0, n)
        latents = {}
        for lat in self.latents:
            latents[lat.name] = lat.to_constrained(u[lat.name])[0].detach()
        return AISResult(
            **_summarize(log_w, reverse=direction == "reverse"),
            num_samples=self.chains,
            proposal="prior" if self.guide is None else "guide",
            accept_rate=accept_sum / transitions if transitions else torch.full_like(accept_sum, math.nan),
            step_size=step_sizes[-1] if transitions else eps,
            step_sizes=step_sizes,
            latents=latents,
            betas=betas.to(self.x),
            direction=direction,
        )


def _summarize(log_w: torch.Tensor, reverse: bool) -> dict:
    """log_px, stderr and ess [N] from the chains' log-weights [C, N]."""
    log_mean = torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])
    ess, stderr = ess_and_stderr(log_w)
    return dict(
        log_px=-log_mean if reverse else log_mean, log_weights=log_w, stderr=stderr, ess=ess, khat=pareto_khat(log_w)
    )


# --- checks and small helpers ----------------------------------------------------------------------


def _is_real(support) -> bool:
    return elementwise_support(support) is constraints.real


def _initial_eps(x: torch.Tensor, step_size: float) -> torch.Tensor:
    return torch.full((x.shape[0],), float(step_size), dtype=x.dtype, device=x.device)


def _particle_dim(model: Callable, guide: Optional[Callable], x: torch.Tensor) -> int:
    """The dim of the chains' plate, after checking the sites, the data's dtype and support, and that
    the pair keeps the chains on their plate (the chains cannot run one by one cheaply: refused)."""
    check_module_dtypes(x, model=model, guide=guide)
    with ParamDtypeCheck(x.dtype):
        dim, _, leak, _ = probe_pair(model, guide, x, annealing=True, enumerate=True)
    if leak is not None:
        cause = "cannot run vectorized" if leak[0] is None else "moves the chains out of their plate"
        raise ShapeError(
            f"{describe_leak(leak)} when the chains run under a plate at dim {dim}: the program {cause}; expected "
            "a pair that broadcasts over leading batch dimensions (log_marginal can run this pair one particle per pass)"
        )
    return dim
