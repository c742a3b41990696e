"""Annealed importance sampling of log p(x), one estimate per datapoint (Neal 2001; Wu et al. 2017),
with HMC transitions for every chain of every datapoint run as one vectorized batch."""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Dict, List, Mapping, Optional, Tuple

import pyro
import torch
from pyro.distributions.util import sum_rightmost
from torch.distributions import biject_to, constraints
from tqdm import tqdm

from vaezoo.errors import ConfigError, ShapeError, SiteError
from vaezoo.evaluation.checks import ParamDtypeCheck, check_data, check_module_dtypes, is_int
from vaezoo.evaluation.result import EstimatorResult, _num
from vaezoo.evaluation.seeding import resolve_seed, rng_scope, seed_device
from vaezoo.evaluation.weights import pareto_khat
from vaezoo.particles import check_no_subsampling, check_observed, describe_leak, probe_pair
from vaezoo.traces import (
    DATA_PLATE,
    check_enumerated,
    check_sites,
    enumerated_latents,
    is_deterministic,
    outside_data_plate,
    per_datapoint,
    record,
    site_log_prob,
    sum_out_enumerated,
)

__all__ = ["AISResult", "AnnealingOptions", "ais", "reverse_ais", "annealing_schedule"]

CHAIN_PLATE = "ais_chains"
SCHEDULES = ("sigmoid", "linear")
ADAPTS = ("online", "pilot", "none")

# Step-size adaptation: log eps <- log eps + ADAPT_RATE * (mean acceptance - target), per datapoint.
ADAPT_RATE = 0.5
STEP_SIZE_RANGE = (1e-5, 10.0)
SIGMOID_RADIUS = 4.0  # Grosse et al. (2015), Wu et al. (2017)


@dataclass(frozen=True)
class AnnealingOptions:
    """The settings of an annealing run, shared by :func:`ais`, :func:`reverse_ais` and
    :func:`~vaezoo.evaluation.bidirectional.bdmc`; validated on construction.

    - ``steps``: number of annealing distributions ``T`` (``T - 1`` HMC transitions).
    - ``chains``: independent chains ``C`` per datapoint.
    - ``leapfrog_steps``: leapfrog steps per HMC transition.
    - ``step_size``: the initial leapfrog step size (every datapoint).
    - ``target_accept``: the acceptance probability the step-size adaptation aims at.
    - ``schedule``: ``"sigmoid"`` (Grosse et al. 2015; dense near both ends) or ``"linear"``.
    - ``adapt``: ``"pilot"`` (default; exactly unbiased weights), ``"online"`` or ``"none"``, see
      :func:`ais`.
    - ``pilot_chains``: chains of the pilot run (``adapt="pilot"``); default a quarter of
      ``chains``, at least 2 (at most ``chains``). Fewer are cheaper and keep the final weights
      exactly unbiased: the final chains never see the pilot's (bench/ais_bias.py).
    """

    steps: int = 500
    chains: int = 16
    leapfrog_steps: int = 10
    step_size: float = 0.05
    target_accept: float = 0.65
    schedule: str = "sigmoid"
    adapt: str = "pilot"
    pilot_chains: Optional[int] = None

    def __post_init__(self):
        for name in ("steps", "chains", "leapfrog_steps"):
            v = getattr(self, name)
            if not is_int(v) or v < 1:
                raise ConfigError(f"{name}={v!r}; expected an integer >= 1")
        if self.pilot_chains is not None and (not is_int(self.pilot_chains) or self.pilot_chains < 1):
            raise ConfigError(f"pilot_chains={self.pilot_chains!r}; expected an integer >= 1 or None")
        v = self.step_size
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not 0 < v < math.inf:
            raise ConfigError(f"step_size={v!r}; expected a positive finite number")
        v = self.target_accept
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not 0 < v < 1:
            raise ConfigError(f"target_accept={v!r}; expected a number in (0, 1)")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule={self.schedule!r}; expected one of {', '.join(map(repr, SCHEDULES))}")
        if self.adapt not in ADAPTS:
            raise ConfigError(f"adapt={self.adapt!r}; expected one of {', '.join(map(repr, ADAPTS))}")

    @property
    def num_pilot_chains(self) -> int:
        if self.pilot_chains is not None:
            return self.pilot_chains
        return min(self.chains, max(2, self.chains // 4))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve_options(options: Optional[AnnealingOptions], **overrides) -> AnnealingOptions:
    """``options`` (default: :class:`AnnealingOptions()`) with the keywords that are not None
    (the ``steps=``/``chains=`` conveniences) replaced."""
    if options is None:
        options = AnnealingOptions()
    elif not isinstance(options, AnnealingOptions):
        raise ConfigError(f"options is a {type(options).__name__}; expected an AnnealingOptions or None")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(options, **overrides) if overrides else options


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


def ais(
    model: Callable,
    guide: Optional[Callable],
    x: torch.Tensor,
    options: Optional[AnnealingOptions] = None,
    *,
    steps: Optional[int] = None,
    chains: Optional[int] = None,
    seed: Optional[int] = None,
    progress: bool = False,
    dtype: Optional[torch.dtype] = None,
) -> AISResult:
    r"""Estimates log p(x) of every datapoint by annealed importance sampling (Neal 2001).

    With a normalized proposal :math:`r(z)` and the unnormalized posterior :math:`p(x, z)`, AIS
    anneals through

    .. math:: \log \gamma_\beta(z) = (1 - \beta) \log r(z) + \beta \log p(x, z), \qquad
              0 = \beta_0 < \beta_1 < \dots < \beta_T = 1,

    where :math:`r` is the guide :math:`q(z \mid x)`, or the model's prior :math:`p(z)` when
    ``guide`` is None (the log-densities of the model's unobserved sites). Each chain starts at
    :math:`z_0 \sim r`, and for :math:`t = 1 \dots T` adds :math:`(\beta_t - \beta_{t-1}) (\log
    p(x, z_{t-1}) - \log r(z_{t-1}))` to its log-weight, then moves :math:`z_t \sim T_t(\cdot \mid
    z_{t-1})` by one HMC transition that leaves :math:`\gamma_{\beta_t}` invariant (the last move
    is skipped: it does not enter the weight). :math:`\mathbb{E}[w] = p(x)`, so :math:`\log \frac1C
    \sum_c w_c` is a stochastic lower bound on :math:`\log p(x)` whose gap shrinks as ``steps``
    grows. ``steps=1`` is plain importance sampling from ``r`` with ``chains`` samples.

    HMC runs in the unconstrained space of every latent site, :math:`z = T(u)` with
    ``T = biject_to(support)``, whose density adds :math:`\log |\det \partial T / \partial u|`; the
    Jacobian cancels in the weights. Each transition draws a unit-mass momentum, takes
    ``leapfrog_steps`` leapfrog steps and accepts by Metropolis. All ``chains x N`` chains run as one
    batch under a plate left of the pair's plates (latents ``[C, N, ...]``); every datapoint has its
    own step size. A pair that moves that plate's dimension elsewhere (checked on a first run) is
    refused, naming the site.

    Step size (``options.adapt``), in the spirit of Wu et al. (2017): ``"online"`` multiplies the
    step size of a datapoint after each transition by :math:`\exp(0.5 (\bar a - a^*))`,
    :math:`\bar a` the mean acceptance probability of that datapoint's chains and :math:`a^*` =
    ``target_accept``. The step size then depends on the chains' past, which makes the estimator
    adaptive AIS: consistent, but not unbiased (on a Gamma-Poisson model, 100 steps x 4 chains, the
    weights' mean is 4.4% above p(x) and log p̂(x) 0.018 nats *above* log p(x) on average, a
    "lower bound" above the truth; ``bench/ais_bias.py``). ``"pilot"`` (the default) runs an
    online-adapted pilot annealing with ``pilot_chains`` chains, then fresh chains along that
    step-size trajectory, fixed: their weights are exactly unbiased (measured 0.0000 ± 0.0016
    relative), at the cost of the pilot run. ``"none"`` keeps ``step_size`` throughout.

    A discrete site that the model marks for enumeration and the guide does not draw is summed
    out of both densities (:math:`\log p(x, z) = \log \sum_y p(x, y, z)`, and of the prior's
    :math:`p(z)` when it is the proposal) as in :func:`~vaezoo.evaluation.log_marginal`; HMC moves
    the continuous latents only.

    Args:
        model, guide: a pair keeping the vaezoo contract (all latent sites continuous, inside the
            ``"data"`` plate, but for sites the model enumerates); ``guide=None`` anneals from the prior. Their parameters are left
            untouched (no gradient reaches them).
        x: data ``[N, ...]`` of a float dtype; every output lives on its device and dtype.
        options: :class:`AnnealingOptions`; ``steps`` and ``chains`` override its fields.
        seed: seeds torch's RNG for this call (``None`` draws one from the global generator); the
            caller's RNG state is left untouched.
        progress: show a tqdm bar over the annealing steps.
        dtype: casts ``x`` to this floating dtype (the pair must run in it).

    References:
        Neal (2001), "Annealed importance sampling", Statistics and Computing 11.
        Grosse, Ghahramani, Adams (2015), "Sandwiching the marginal likelihood using bidirectional
        Monte Carlo", arXiv:1511.02543.
        Wu, Burda, Salakhutdinov, Grosse (2017), "On the quantitative analysis of decoder-based
        generative models", ICLR.
    """
    start = time.perf_counter()
    o = resolve_options(options, steps=steps, chains=chains)
    x = check_data(x, dtype)
    seed = resolve_seed(seed)
    with rng_scope(x.device), torch.no_grad():
        seed_device(seed, x.device)
        particle_dim = _particle_dim(model, guide, x)
        betas = annealing_schedule(o.steps, o.schedule)
        kw = dict(leapfrog_steps=o.leapfrog_steps, target_accept=o.target_accept, progress=progress)
        fixed, pilot_time = None, 0.0
        if o.adapt == "pilot":
            pilot_time = time.perf_counter()
            fixed = _pilot(model, guide, x, o, particle_dim, betas, progress)
            pilot_time = time.perf_counter() - pilot_time
        sampler = _Annealer(model, guide, x, o.chains, particle_dim)
        result = sampler.run(
            sampler.initial(), betas, _initial_eps(x, o.step_size), online=o.adapt == "online",
            fixed=fixed, desc="AIS", **kw,
        )
    return dataclasses.replace(result, seed=seed, options=o, wall_time=time.perf_counter() - start, pilot_time=pilot_time)


def _pilot(model, guide, x, o: AnnealingOptions, particle_dim: int, betas, progress: bool) -> torch.Tensor:
    """The step-size trajectory ``[T - 1, N]`` of an online-adapted forward run with
    ``pilot_chains`` chains (``betas`` forward)."""
    pilot = _Annealer(model, guide, x, o.num_pilot_chains, particle_dim)
    run = pilot.run(
        pilot.initial(), betas, _initial_eps(x, o.step_size), online=True, leapfrog_steps=o.leapfrog_steps,
        target_accept=o.target_accept, progress=progress, desc="AIS pilot",
    )
    return run.step_sizes


def reverse_ais(
    model: Callable,
    guide: Optional[Callable],
    x: torch.Tensor,
    latents: Mapping[str, torch.Tensor],
    options: Optional[AnnealingOptions] = None,
    *,
    steps: Optional[int] = None,
    chains: Optional[int] = None,
    step_sizes: Optional[torch.Tensor] = None,
    seed: Optional[int] = None,
    progress: bool = False,
    dtype: Optional[torch.dtype] = None,
) -> AISResult:
    r"""Reverse AIS (Grosse, Ghahramani, Adams 2015): anneals from the posterior to the proposal.

    Every chain starts at the given ``latents``, which must be an *exact* sample of
    :math:`p(z \mid x)` (in practice: the latents that generated simulated data ``x``, see
    :func:`vaezoo.evaluation.bidirectional.bdmc`), and runs the schedule of :func:`ais` backwards,
    :math:`\beta: 1 \to 0`, accumulating :math:`\sum_t \log \gamma_{\beta_{t}}(z_{t-1}) - \log
    \gamma_{\beta_{t-1}}(z_{t-1})` with the β's in reverse order. Its exponential is unbiased for
    :math:`Z_0 / Z_1 = 1 / p(x)`, so ``log_px`` :math:`= -\log \frac1C \sum_c w_c` is a
    stochastic *upper* bound on log p(x). All chains of a datapoint start from the same exact
    sample: each is still a valid estimator, only correlated with the others.

    The step sizes must not depend on the chains' paths from the exact sample. ``step_sizes``
    ``[T - 1, N]``, the trajectory of a forward run on the same ``x`` (``AISResult.step_sizes``, as
    run), is used in reverse order, each step size at the β it was tuned for. Without it,
    ``adapt="pilot"`` tunes them by a forward pilot run from the proposal on ``x`` (which never
    sees ``latents``), ``"none"`` keeps ``step_size``, and ``"online"`` adapts along the reverse
    chains themselves (biased: for diagnostics only).

    ``latents`` maps every latent site to a tensor ``[N, ...]`` (or ``[1, N, ...]``), broadcast
    over the chains. Other arguments as in :func:`ais`.
    """
    start = time.perf_counter()
    o = resolve_options(options, steps=steps, chains=chains)
    x = check_data(x, dtype)
    seed = resolve_seed(seed)
    with rng_scope(x.device), torch.no_grad():
        seed_device(seed, x.device)
        particle_dim = _particle_dim(model, guide, x)
        forward_betas = annealing_schedule(o.steps, o.schedule)
        sampler = _Annealer(model, guide, x, o.chains, particle_dim)
        u0 = sampler.broadcast_latents(latents)
        fixed, pilot_time = None, 0.0
        if step_sizes is not None:
            fixed = torch.as_tensor(step_sizes).to(x)
            if fixed.shape != (o.steps - 1, x.shape[0]):
                raise ShapeError(
                    f"step_sizes has shape {tuple(fixed.shape)}; expected ({o.steps - 1}, {x.shape[0]}): "
                    "one step size per transition and datapoint"
                )
        elif o.adapt == "pilot":
            pilot_time = time.perf_counter()
            fixed = _pilot(model, guide, x, o, particle_dim, forward_betas, progress)
            pilot_time = time.perf_counter() - pilot_time
        result = sampler.run(
            u0, forward_betas.flip(0), _initial_eps(x, o.step_size), online=o.adapt == "online",
            fixed=None if fixed is None else fixed.flip(0), leapfrog_steps=o.leapfrog_steps,
            target_accept=o.target_accept, progress=progress, desc="reverse AIS", direction="reverse",
        )
    return dataclasses.replace(result, seed=seed, options=o, wall_time=time.perf_counter() - start, pilot_time=pilot_time)


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
            log_r = 0.0
            for site in guide_sites.values():
                if not site["is_observed"]:
                    log_r = log_r + per_datapoint(site_log_prob(site), site, pd)
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
    chains = log_w.shape[0]
    log_mean = torch.logsumexp(log_w, 0) - math.log(chains)
    top = log_w.max(0).values
    w = torch.exp(log_w - torch.where(torch.isfinite(top), top, torch.zeros_like(top)))  # [C, N], max 1
    mean = w.mean(0)
    if chains > 1:
        stderr = w.std(0) / (math.sqrt(chains) * mean)
    else:
        stderr = torch.full_like(mean, math.nan)
    ess = w.sum(0) ** 2 / (w**2).sum(0)
    return dict(
        log_px=-log_mean if reverse else log_mean, log_weights=log_w, stderr=stderr, ess=ess, khat=pareto_khat(log_w)
    )


# --- checks and small helpers ----------------------------------------------------------------------


def _is_real(support) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


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
