"""Tracing of Pyro programs shared by the objectives and the estimators.

The runs are Pyro's own ``poutine.trace`` and ``poutine.replay``; this module adds only what Pyro
lacks: replaying latent values given as a mapping (the estimators hand out particles in chunks),
checks that a guide fits its model with one-line errors, and one log-density per (particle,
datapoint), which no Pyro utility returns (``Trace.compute_log_prob`` sums over every plate).
It sits below ``inference`` and ``evaluation`` (which may not import each other) and imports only
torch and pyro.
"""

from __future__ import annotations

from collections import OrderedDict
import warnings
from typing import Callable, Dict, Mapping, Optional, Tuple, Union

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from torch.distributions import constraints
from pyro.poutine.util import site_is_subsample

from vaezoo.errors import ConfigError, ShapeError, SiteError, SupportError

DATA_PLATE = "data"


def data_plate(x: torch.Tensor) -> pyro.plate:
    """``pyro.plate("data", B, dim=-1)`` for a batch ``x  # [B, ...]``, the contract's data plate,
    with ``B`` a Python int: a constant of a compiled objective (``compile=True``), whose programs
    are kept per input shape, so the constant is always right."""
    return pyro.plate(DATA_PLATE, int(x.shape[0]), dim=-1)


class Run:
    """One run of a program under ``poutine.trace``: the Pyro ``trace`` and views of its sites.

    ``sites``: sample sites (latent and observed) by name, in the order run; ``subsamples``: the
    plates' subsample sites; ``params``: param sites.
    """

    def __init__(self, trace: poutine.Trace):
        self.trace = trace
        self.sites: Dict[str, dict] = OrderedDict()
        self.subsamples: Dict[str, dict] = OrderedDict()
        self.params: Dict[str, dict] = OrderedDict()
        for name, site in trace.nodes.items():
            if site["type"] == "sample":
                (self.subsamples if site_is_subsample(site) else self.sites)[name] = site
            elif site["type"] == "param":
                self.params[name] = site

    def replay_values(self) -> Dict[str, torch.Tensor]:
        """Values for replaying this run: every latent site and every plate's subsample."""
        values = {name: s["value"] for name, s in self.subsamples.items()}
        values.update((name, s["value"]) for name, s in self.sites.items() if not s["is_observed"])
        return values


def replay_trace(values: Mapping[str, torch.Tensor]) -> poutine.Trace:
    """A Trace holding ``values`` as sampled sites: ``poutine.replay`` replays from a Trace only."""
    trace = poutine.Trace()
    for name, value in values.items():
        trace.add_node(name, type="sample", name=name, value=value, is_observed=False, infer={})
    return trace


def record(
    fn: Callable, *args, replay: Optional[Union[poutine.Trace, Mapping[str, torch.Tensor]]] = None, **kwargs
) -> Run:
    """Runs ``fn(*args, **kwargs)`` under ``poutine.trace`` and returns the :class:`Run`. ``replay``
    (a Trace, e.g. a guide's ``Run.trace``, or a mapping from site names to values) replays latent
    sites and plate subsamples instead of sampling them, as ``poutine.replay`` does."""
    if replay is not None:
        fn = poutine.replay(fn, trace=replay if isinstance(replay, poutine.Trace) else replay_trace(replay))
    return Run(poutine.trace(fn).get_trace(*args, **kwargs))


def is_enumerated(site: dict) -> bool:
    """Whether a site asks to be summed out (``infer={"enumerate": ...}``, ``config_enumerate``)."""
    return site["infer"].get("enumerate") in ("parallel", "sequential") and site["fn"].has_enumerate_support


def check_sites(model_sites: Mapping[str, dict], guide_sites: Mapping[str, dict], allow_enumerated: bool = False) -> None:
    """Raises :class:`SiteError` unless the guide has exactly the model's latent sites with the same
    event shapes. ``allow_enumerated``: latent sites of the model marked for enumeration may be
    missing from the guide (they are summed out, as ``TraceEnum_ELBO`` does)."""
    for name, site in guide_sites.items():
        if site["infer"].get("is_auxiliary"):
            raise SiteError(
                f"guide site {name!r} is auxiliary (an AutoGuide's joint latent, scored apart from the "
                "model's sites); vaezoo scores guides site by site per datapoint: write an amortized guide "
                "with one site per latent of the model, inside the data plate"
            )
    model_latents = {n: s for n, s in model_sites.items() if not s["is_observed"]}
    guide_latents = {n: s for n, s in guide_sites.items() if not s["is_observed"]}
    missing = [n for n in model_latents if n not in guide_latents and not (allow_enumerated and is_enumerated(model_latents[n]))]
    if missing:
        name = missing[0]
        if name.endswith("_unobserved") and f"{name[: -len('_unobserved')]}_observed" in model_sites:
            raise SiteError(
                f"site {name[: -len('_unobserved')]!r} uses obs_mask, which makes its masked-out values a "
                f"latent site {name!r}; vaezoo does not impute missing data: score the observed values only "
                "with poutine.mask(mask=...) around the observation, or give the guide a site "
                f"{name!r}"
            )
        hint = ""
        if is_enumerated(model_latents[name]):
            hint = " (it is marked for enumeration: only the ELBO objective sums such sites out)"
        raise SiteError(
            f"the guide has no site {name!r}, a latent site of the model{hint}; "
            f"expected the guide's sites to be {sorted(model_latents)}"
        )
    extra = [n for n in guide_latents if n not in model_latents]
    if extra:
        raise SiteError(
            f"the guide has a site {extra[0]!r} that the model lacks; "
            f"expected the guide's sites to be {sorted(model_latents)}"
        )
    for name, gs in guide_latents.items():
        me, ge = tuple(model_latents[name]["fn"].event_shape), tuple(gs["fn"].event_shape)
        if me != ge:
            raise SiteError(
                f"site {name!r} has event shape {ge} in the guide but {me} in the model; "
                "expected them to agree (declare event dimensions with .to_event)"
            )


def max_plate_nesting(*site_dicts: Mapping[str, dict]) -> int:
    """The deepest plate dimension used by any site (1 for a program with only the data plate)."""
    depth = 0
    for sites in site_dicts:
        for site in sites.values():
            for frame in site["cond_indep_stack"]:
                if frame.vectorized and frame.dim is not None:
                    depth = max(depth, -frame.dim)
    return depth


def site_log_prob(site: dict) -> torch.Tensor:
    """``log p(value)`` of a site with its mask applied and *no* scale: training-time scaling
    (``poutine.scale``, KL annealing, subsampling) never enters a log-weight."""
    # scale_and_mask masks with torch.where: a masked-out -inf gives 0, not NaN
    return scale_and_mask(site["fn"].log_prob(site["value"]), 1.0, site["mask"])


def per_datapoint(lp: torch.Tensor, site: dict, particle_dim: Optional[int]) -> torch.Tensor:
    """Reduces a site's log-density of batch shape ``[K, ..., N, ...]`` to ``[K, N]``: sums every
    plate dimension except the particle plate at ``particle_dim`` and the ``data`` plate. With
    ``particle_dim=None`` (a run without a particle plate) it returns ``[1, N]``."""
    data_dim = None
    for frame in site["cond_indep_stack"]:
        if frame.name == DATA_PLATE:
            data_dim = frame.dim
    if data_dim is None:
        raise SiteError(
            f"site {site['name']!r} is outside the {DATA_PLATE!r} plate; "
            "expected every site to live inside pyro.plate('data', B, dim=-1)"
        )
    if particle_dim is None:
        lp = lp[None]
        ndim = max(lp.dim(), 1 - data_dim)
    else:
        ndim = -particle_dim
    if lp.dim() > ndim:
        raise ShapeError(
            f"site {site['name']!r} has log_prob of shape {tuple(lp.shape)}, more batch dimensions "
            f"than its plates ({ndim}); expected its extra dimensions declared with .to_event"
        )
    lp = lp.reshape((1,) * (ndim - lp.dim()) + tuple(lp.shape))
    keep = {0, ndim + data_dim}
    other = [d for d in range(ndim) if d not in keep]
    if other:
        lp = lp.sum(other, keepdim=True)
    return lp.reshape(lp.shape[0], lp.shape[ndim + data_dim])


def log_weights(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    num_particles: int,
    particle_dim: Optional[int] = -2,
    check: bool = True,
    score: bool = False,
):
    """Draws ``num_particles`` particles from the guide and replays the model on each.

    Returns ``(log_p, log_q)``, each ``[K, N]``: the model's joint log-density ``log p(x, z_k)`` and
    the guide's ``log q(z_k | x)`` for every particle and datapoint, unscaled. With ``score=True``,
    also ``log_q`` of the guide's sites without a reparameterized sampler alone (``[K, N]``), for
    score-function gradients.

    The particles run in one vectorized pass under a plate at ``particle_dim``, or one per pass
    with ``particle_dim=None`` (what :func:`probe` returns for a pair that does not broadcast over a
    particle plate). ``check=True`` checks the sites, refuses subsampled plates and checks that the
    vectorized pass kept the particles on their plate; if it did not, the particles are drawn
    again one per pass, with a warning.
    """
    if particle_dim is None:
        return _log_weights_one_by_one(model, guide, x, num_particles, check, score)
    with pyro.plate("particles", num_particles, dim=particle_dim):
        guide_run = record(guide, x)
        model_run = record(model, x, replay=guide_run.replay_values())
    model_sites, guide_sites = model_run.sites, guide_run.sites
    if check:
        check_sites(model_sites, guide_sites)
        check_no_subsampling(guide_run, model_run)
    log_p, log_q, leak, log_s = _sum_log_densities(model_sites, guide_sites, particle_dim, check)
    if leak is not None:
        warn_particle_leak(leak, particle_dim)
        return _log_weights_one_by_one(model, guide, x, num_particles, False, score)
    zeros = x.new_zeros(num_particles, x.shape[0])
    out = (_plus(zeros, log_p), _plus(zeros, log_q))
    return out + (_plus(zeros, log_s),) if score else out


def _plus(zeros: torch.Tensor, t: Optional[torch.Tensor]) -> torch.Tensor:
    return zeros if t is None else zeros + t


def _sum_log_densities(model_sites, guide_sites, particle_dim: Optional[int], check: bool):
    """``(log_p, log_q, leak, log_s)``: the per-datapoint sums ``[K, N]`` of the model's sites and of
    the guide's latent sites, if ``check`` the first :func:`misplaced_dim` found (else None), and the
    sum over the guide's latent sites without ``rsample`` (None if it has none)."""
    log_p = log_q = log_s = None
    leak = None
    for sites, is_model in ((model_sites, True), (guide_sites, False)):
        for site in sites.values():
            if not is_model and site["is_observed"]:
                continue
            lp = site_log_prob(site)
            if check and leak is None:
                d = misplaced_dim(site, lp)
                if d is not None:
                    leak = (site["name"], _misplaced(d, lp.shape[d]))
            lp = per_datapoint(lp, site, particle_dim)
            if is_model:
                log_p = lp if log_p is None else log_p + lp
            else:
                log_q = lp if log_q is None else log_q + lp
                if not site["fn"].has_rsample:
                    log_s = lp if log_s is None else log_s + lp
    return log_p, log_q, leak, log_s


def _log_weights_one_by_one(model, guide, x, num_particles: int, check: bool, score: bool = False):
    """:func:`log_weights` one particle per pass, without a particle plate (as Pyro's ELBOs do with
    ``vectorize_particles=False``): for pairs whose vectorized pass would mix particles up."""
    log_ps, log_qs, log_ss = [], [], []
    for k in range(num_particles):
        guide_run = record(guide, x)
        model_run = record(model, x, replay=guide_run.replay_values())
        if check and k == 0:
            check_sites(model_run.sites, guide_run.sites)
            check_no_subsampling(guide_run, model_run)
        log_p, log_q, _, log_s = _sum_log_densities(model_run.sites, guide_run.sites, None, False)
        zeros = x.new_zeros(1, x.shape[0])
        log_ps.append(_plus(zeros, log_p))
        log_qs.append(_plus(zeros, log_q))
        log_ss.append(_plus(zeros, log_s))
    out = (torch.cat(log_ps), torch.cat(log_qs))
    return out + (torch.cat(log_ss),) if score else out


def probe(model: Callable, guide: Callable, x: torch.Tensor):
    """Runs the pair on (at most two datapoints of) ``x``, checks its sites and refuses subsampled
    plates, then checks that it broadcasts over a particle plate (:func:`particle_leak`). Returns
    ``(particle_dim, uses_param_store)``: the first free plate dimension for particles, as Pyro's
    ``vectorize_particles`` finds with ``max_plate_nesting``, or ``None`` (with a warning) when the
    pair mixes a particle plate up with its own dimensions and must run one particle per pass; and
    whether the pair has param sites."""
    dim, uses_params, leak = probe_pair(model, guide, x)
    if leak is not None:
        warn_particle_leak(leak, dim)
        dim = None
    return dim, uses_params


def guess_particle_dim(model: Callable, guide: Callable, x: torch.Tensor) -> Optional[int]:
    """The first free plate dimension for particles, or None (see :func:`probe`)."""
    return probe(model, guide, x)[0]


# --- particle layout and subsampling checks -------------------------------------------------------


def misplaced_dim(site: dict, lp: torch.Tensor) -> Optional[int]:
    """The first batch dimension (negative) of a site's log-density ``lp`` whose size is neither 1
    nor that of a plate at that dimension in the site's plate stack, or None. Stricter than Pyro's
    ``check_site_shape`` (which allows any size where no plate is declared): a particle dimension
    moved out of its plate by the program (a transpose, a reshape with a batch size) lands on such
    a dimension, and :func:`per_datapoint` would sum it."""
    sizes = {f.dim: f.size for f in site["cond_indep_stack"] if f.vectorized}
    for d in range(-1, -lp.dim() - 1, -1):
        if lp.shape[d] != 1 and sizes.get(d) != lp.shape[d]:
            return d
    return None


def check_no_subsampling(*recorders: Run) -> None:
    """Raises ConfigError if a run subsampled one of its plates: a per-datapoint estimate of
    log p(x) must see every datapoint and every element of every plate."""
    for rec in recorders:
        for name, site in rec.subsamples.items():
            if site_is_subsample(site) and site["value"].shape[0] != site["fn"].size:
                raise ConfigError(
                    f"plate {name!r} subsamples {site['value'].shape[0]} of its {site['fn'].size} elements; "
                    "expected no subsampling while estimating log p(x) (open the plate without subsample_size)"
                )


def _probe_particles(sizes) -> int:
    """A particle count for the layout check that equals no plate size of the program, so a particle
    dimension landing on a plate's dimension cannot pass for it."""
    k = 3
    while k in sizes:
        k += 1
    return k


def _base(fn):
    while hasattr(fn, "base_dist"):  # Independent, MaskedDistribution, ExpandedDistribution
        fn = fn.base_dist
    return fn


def check_proposal(model_sites: Mapping[str, dict], guide_sites: Mapping[str, dict], annealing: bool = False) -> None:
    """Raises SiteError where the pair is no proposal for an estimate of log p(x).

    A point-mass guide site (``Delta``, a deterministic encoder) gives weights log p(x, z*), not an
    estimate of log p(x); it is accepted only against a flat (``ImproperUniform``) model site, where
    the estimate is that of the rest of the model at the inferred value (a transformer VAE's pose
    without prior). Annealing refuses both: its path needs a normalizable prior and a proposal with a
    density."""
    for name, site in guide_sites.items():
        if site["is_observed"] or not isinstance(_base(site["fn"]), dist.Delta):
            continue
        model_site = model_sites.get(name)
        flat = model_site is not None and isinstance(_base(model_site["fn"]), dist.ImproperUniform)
        if annealing or not flat:
            raise SiteError(
                f"guide site {name!r} is a point mass (Delta), which is no proposal for an estimate of "
                "log p(x); expected a guide with a density"
                + (" (or guide=None to anneal from the prior)" if annealing and not flat else "")
            )
    if annealing:
        for name, site in model_sites.items():
            if not site["is_observed"] and isinstance(_base(site["fn"]), dist.ImproperUniform):
                raise SiteError(
                    f"model site {name!r} has a flat improper prior, which annealing cannot start from nor "
                    "normalize; expected a proper prior (log_marginal scores such a pair at its inferred value)"
                )


class _ImproperPriors(poutine.messenger.Messenger):
    """Notes the latent sites with a flat improper prior, giving them zeros instead of letting Pyro
    try to sample them, so that the caller can refuse them in one line (an error raised inside a
    traced run would carry Pyro's table of trace shapes)."""

    def __init__(self):
        super().__init__()
        self.names = []

    def _pyro_sample(self, msg):
        fn = msg["fn"]
        if not msg["is_observed"] and isinstance(_base(fn), dist.ImproperUniform):
            self.names.append(msg["name"])
            msg["value"] = torch.zeros(fn.batch_shape + fn.event_shape)
            msg["done"] = True


def probe_pair(model: Callable, guide: Optional[Callable], x: torch.Tensor, annealing: bool = False):
    """Runs the pair plainly on (at most two datapoints of) ``x`` (the model alone when ``guide`` is
    None), checks the sites and refuses subsampling, then runs it once under a particle plate.
    Returns ``(particle_dim, uses_param_store, leak)`` with ``leak`` from :func:`particle_leak`."""
    xs = x[:2]
    with torch.no_grad():
        if guide is None:
            guide_run = Run(poutine.Trace())
            with _ImproperPriors() as improper:  # the prior is the proposal: it must be one
                model_run = record(model, xs)
            if improper.names:
                raise SiteError(
                    f"model site {improper.names[0]!r} has a flat improper prior, which cannot be sampled as a "
                    "proposal; expected a proper prior, or a guide"
                )
        else:
            guide_run = record(guide, xs)
            model_run = record(model, xs, replay=guide_run.replay_values())
            check_sites(model_run.sites, guide_run.sites)
        check_proposal(model_run.sites, guide_run.sites, annealing)
        check_no_subsampling(guide_run, model_run)
        check_observed(model_run.sites)
        dim = -(max(max_plate_nesting(model_run.sites, guide_run.sites), 1) + 1)
        sites = list(model_run.sites.values()) + list(guide_run.sites.values())
        sizes = {f.size for s in sites for f in s["cond_indep_stack"]}
        event_shapes = {s["name"]: tuple(s["fn"].event_shape) for s in sites}
        leak = particle_leak(model, guide, xs, dim, _probe_particles(sizes | {xs.shape[0]}), event_shapes)
    return dim, bool(guide_run.params or model_run.params), leak


def particle_leak(
    model: Callable,
    guide: Optional[Callable],
    x: torch.Tensor,
    particle_dim: int,
    num_particles: int,
    event_shapes: Optional[Mapping[str, tuple]] = None,
) -> Optional[Tuple[str, str]]:
    """Runs the guide under a particle plate at ``particle_dim`` and replays the model (or runs the
    model alone when ``guide`` is None). Returns None when the particles stayed on their plate
    (what Pyro's vectorized ELBOs check with ``check_site_shape``, more strictly), else ``(site,
    what)`` for the first site whose event shape differs from ``event_shapes`` (those of a run
    without particles: the particles went into the event), whose observed value no longer
    broadcasts against its distribution, or whose log-density has a dimension
    :func:`misplaced_dim` finds."""
    with torch.no_grad(), pyro.plate("particles", num_particles, dim=particle_dim):
        guide_sites = record(guide, x).sites if guide is not None else {}
        model_sites = record(model, x, replay={n: s["value"] for n, s in guide_sites.items()}).sites
    for sites in (guide_sites, model_sites):
        for name, site in sites.items():
            fn = site["fn"]
            event = tuple(fn.event_shape)
            if event_shapes is not None and event_shapes.get(name, event) != event:
                return name, f"has event shape {event} instead of {event_shapes[name]}"
            if site["is_observed"] and not _broadcastable(site["value"].shape, fn.batch_shape + fn.event_shape):
                return name, (
                    f"has a distribution of shape {tuple(fn.batch_shape + fn.event_shape)} against its value's "
                    f"{tuple(site['value'].shape)}"
                )
            lp = site_log_prob(site)
            d = misplaced_dim(site, lp)
            if d is not None:
                return name, _misplaced(d, lp.shape[d])
    return None


def _misplaced(d: int, size: int) -> str:
    return f"has a log-density dimension {d} of size {size} that no plate declares"


def warn_particle_leak(leak: Tuple[str, str], particle_dim: Optional[int]) -> None:
    name, what = leak
    warnings.warn(
        f"site {name!r} {what} when particles are vectorized at dim {particle_dim}: the program moves the "
        "particles out of their plate; running one particle per pass instead (exact, but slower)",
        stacklevel=3,
    )


def check_observed(sites: Mapping[str, dict], first: int = 0) -> None:
    """Checks every observed site's value explicitly, before any log-density is computed: it must
    end in the event shape of its distribution (ShapeError) and lie in its support where it is not
    masked out (SupportError naming the site, the first bad value and its datapoint, counted from
    ``first``)."""
    for name, site in sites.items():
        if not site["is_observed"] or site["mask"] is False:
            continue
        fn, value = site["fn"], site["value"]
        event = tuple(fn.event_shape)
        batch_ndim = value.dim() - len(event)
        if batch_ndim < 0 or not _broadcastable(value.shape, fn.batch_shape + fn.event_shape):
            raise ShapeError(
                f"observed site {name!r} has a value of shape {tuple(value.shape)}; expected it to end in "
                f"the event shape {event} of its {_dist_name(fn)} (data of the shape the pair was built for)"
            )
        support = fn.support
        while isinstance(support, constraints.independent):
            support = support.base_constraint
        ok = support.check(value)
        mask = site["mask"]
        if isinstance(mask, torch.Tensor):  # mask [batch]; ok [batch] or [batch, event] (elementwise)
            masked = ok | ~mask.reshape(mask.shape + (1,) * max(0, ok.dim() - batch_ndim))
            ok = masked.reshape((-1,) + ok.shape).all(0)  # a mask with more batch dims than the value
        if bool(ok.all()):
            continue
        index = tuple((~ok).nonzero()[0].tolist())
        shown = value[index].item() if ok.dim() == value.dim() else tuple(value[index].tolist())
        where = f"index {index}"
        data_dims = [f.dim for f in site["cond_indep_stack"] if f.name == DATA_PLATE]
        if data_dims and 0 <= batch_ndim + data_dims[0] < ok.dim() and ok.shape[batch_ndim + data_dims[0]] > 1:
            where = f"datapoint {first + index[batch_ndim + data_dims[0]]} ({where})"
        raise SupportError(
            f"observed site {name!r} has the value {shown} at {where}, outside the support {support} of "
            f"its {_dist_name(fn)}; expected data the likelihood can score (e.g. binarized for a Bernoulli)"
        )


def _broadcastable(a, b) -> bool:
    return all(i == j or i == 1 or j == 1 for i, j in zip(reversed(a), reversed(b)))


def _dist_name(fn) -> str:
    while isinstance(fn, torch.distributions.Independent):
        fn = fn.base_dist
    return type(fn).__name__
