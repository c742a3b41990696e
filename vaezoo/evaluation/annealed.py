"""Annealed importance sampling of log p(x), one estimate per datapoint (Neal 2001; Wu et al. 2017),
with HMC transitions for every chain of every datapoint run as one vectorized batch."""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import torch

from vaezoo.errors import ConfigError, ShapeError
from vaezoo.arguments import check_int, is_int
from vaezoo.evaluation.checks import check_data
from vaezoo.evaluation.seeding import resolve_seed, rng_scope, seed_device
from vaezoo.evaluation.annealing import (  # noqa: F401
    ADAPT_RATE, CHAIN_PLATE, SCHEDULES, SIGMOID_RADIUS, STEP_SIZE_RANGE, AISResult, _Annealer, _Latent,
    _initial_eps, _is_real, _particle_dim, _summarize, annealing_schedule,
)

__all__ = ["AISResult", "AnnealingOptions", "ais", "reverse_ais", "annealing_schedule"]

ADAPTS = ("online", "pilot", "none")


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
            check_int(name, getattr(self, name), 1)
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
