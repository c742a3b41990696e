"""Log-weights of a model/guide pair over particles, one per (particle, datapoint), and what the
estimators and the IWAE objective check before trusting them: that the pair keeps the particles on
their plate (a stricter form of Pyro's ``check_site_shape``), subsamples no plate, has a proposal
that can score the model's latents, and is given data of the right shape and support.
Built on :mod:`vaezoo.traces`; it sits below ``inference`` and ``evaluation``.
"""

from __future__ import annotations

import warnings
from typing import Callable, Mapping, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from vaezoo.errors import ConfigError, ShapeError, SiteError, SupportError, VaezooError
from vaezoo.traces import (
    DATA_PLATE,
    Run,
    check_enumerated,
    check_sites,
    elementwise_support,
    enumerated_latents,
    is_deterministic,
    max_plate_nesting,
    outside_data_plate,
    per_datapoint,
    record,
    replay_trace,
    site_log_prob,
)


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
            if (not is_model and site["is_observed"]) or is_deterministic(site):  # no density
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
    dim, uses_params, leak, _ = probe_pair(model, guide, x)
    if leak is not None:
        warn_particle_leak(leak, dim)
        dim = None
    return dim, uses_params


def guess_particle_dim(model: Callable, guide: Callable, x: torch.Tensor) -> Optional[int]:
    """The first free plate dimension for particles, or None (see :func:`probe`)."""
    return probe(model, guide, x)[0]


# --- particle layout and subsampling checks -------------------------------------------------------


def misplaced_dim(site: dict, lp: torch.Tensor, enum_sizes: Optional[Mapping[int, set]] = None) -> Optional[int]:
    """The first batch dimension (negative) of a site's log-density ``lp`` whose size is neither 1
    nor that of a plate at that dimension in the site's plate stack (nor, under enumeration, that
    of an enumerated site at that dimension: ``enum_sizes``), or None. Stricter than Pyro's
    ``check_site_shape`` (which allows any size where no plate is declared): a particle dimension
    moved out of its plate by the program (a transpose, a reshape with a batch size) lands on such
    a dimension, and :func:`per_datapoint` would sum it."""
    sizes = {f.dim: {f.size} for f in site["cond_indep_stack"] if f.vectorized}
    for d, e in (enum_sizes or {}).items():
        sizes[d] = sizes.get(d, set()) | e
    for d in range(-1, -lp.dim() - 1, -1):
        if lp.shape[d] != 1 and lp.shape[d] not in sizes.get(d, ()):
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


def probe_pair(
    model: Callable, guide: Optional[Callable], x: torch.Tensor, annealing: bool = False, enumerate: bool = False
):
    """Runs the pair plainly on (at most two datapoints of) ``x`` (the model alone when ``guide`` is
    None), checks the sites and refuses subsampling and sites outside the data plate, then runs it
    once under a particle plate. Returns ``(particle_dim, uses_param_store, leak, enumerated)`` with
    ``leak`` from :func:`particle_leak` and ``enumerated`` the model's sites to sum out
    (:func:`~vaezoo.traces.enumerated_latents`; with ``enumerate=True`` only, for a caller that
    sums them out, else they are refused as latents the guide lacks). The model then runs under
    ``poutine.enum`` at ``particle_dim - 1``.

    Nothing that fails while probing reaches the caller raw: a pair that fails on two datapoints (a
    ``subsample_size`` above 2, a batch size of its own) is run plainly on the whole ``x`` instead,
    where its subsampling is refused; one that fails there too is refused in one line where its
    sites so far say why (a latent the guide lacks, a global latent), else its error propagates
    unchanged, as it would under Pyro's own inference; one that fails under the particle plate
    only is a ``leak`` (one particle per pass)."""
    with torch.no_grad():
        try:
            xs, (guide_run, model_run, improper) = x[:2], _plain_runs(model, guide, x[:2], enumerate=enumerate)
        except VaezooError:
            raise
        except Exception:  # fails on a slice: the whole data, where a subsampled plate shows as such
            xs, (guide_run, model_run, improper) = x, _plain_runs(model, guide, x, enumerate, diagnose=True)
        if improper:
            raise SiteError(
                f"model site {improper[0]!r} has a flat improper prior, which cannot be sampled as a "
                "proposal; expected a proper prior, or a guide"
            )
        enumerated = enumerated_latents(model_run.sites, guide_run.sites) if enumerate else []
        check_enumerated(model_run.sites, enumerated)
        check_in_data_plate(model_run.sites, guide_run.sites)
        if guide is not None:
            check_sites(model_run.sites, guide_run.sites, allow_enumerated=enumerate)
        check_proposal(model_run.sites, guide_run.sites, annealing)
        check_no_subsampling(guide_run, model_run)
        check_observed(model_run.sites)
        dim = -(max(max_plate_nesting(model_run.sites, guide_run.sites), 1) + 1)
        sites = list(model_run.sites.values()) + list(guide_run.sites.values())
        sizes = {f.size for s in sites for f in s["cond_indep_stack"]}
        sizes |= {int(model_run.sites[n]["fn"].enumerate_support(expand=False).shape[0]) for n in enumerated}
        event_shapes = {s["name"]: tuple(s["fn"].event_shape) for s in sites}
        leak = particle_leak(
            model, guide, xs, dim, _probe_particles(sizes | {xs.shape[0]}), event_shapes,
            enumerate_at=dim - 1 if enumerated else None,
        )
    return dim, bool(guide_run.params or model_run.params), leak, enumerated


def _plain_runs(model, guide, x, enumerate: bool = False, diagnose: bool = False):
    """``(guide_run, model_run, improper)``: the guide's run (empty when ``guide`` is None) and the
    model's replaying it (sampling from the prior when None, with the names of its flat improper
    priors in ``improper``). With ``diagnose``, a failing run is refused in one line where the sites
    it ran before failing show a cause (:func:`_refuse_partial`); otherwise its error propagates."""
    if guide is None:
        with _ImproperPriors() as improper:  # the prior is the proposal: it must be one
            model_run = _record(model, x, None, diagnose, enumerate)
        return Run(poutine.Trace()), model_run, improper.names
    guide_run = _record(guide, x, None, diagnose, enumerate)
    return guide_run, _record(model, x, guide_run, diagnose, enumerate), []


def _record(fn, x, guide_run: Optional[Run], diagnose: bool, enumerate: bool = False) -> Run:
    """:func:`record` of ``fn(x)``, replaying ``guide_run`` if given; with ``diagnose``, a failure is
    first checked by :func:`_refuse_partial` against the sites run before it."""
    replay = guide_run.replay_values() if guide_run is not None else None
    if not diagnose:
        return record(fn, x, replay=replay)
    tracer = poutine.trace(poutine.replay(fn, trace=replay_trace(replay)) if replay is not None else fn)
    try:
        return Run(tracer.get_trace(x))
    except VaezooError:
        raise
    except Exception as err:
        _refuse_partial(Run(tracer.msngr.trace), guide_run, err, enumerate)
        raise


def _refuse_partial(partial: Run, guide_run: Optional[Run], err: Exception, enumerate: bool = False) -> None:
    """Raises the one-line refusal that the sites of a failed run already earn, if any, chained to
    its error ``err``: ``partial`` holds the sites run before the failure, of the guide or of the
    model (replaying ``guide_run``, if a guide). Refused: a site outside the data plate (a global
    latent, such as a decoder's ``PyroSample`` weight in a guide), and a latent of the model that
    the guide lacks (such as a ``PyroSample`` weight of a decoder called inside the data plate,
    which Pyro samples once per datapoint, so that the decoder fails on the stacked weights)."""
    try:
        check_in_data_plate(partial.sites, guide_run.sites if guide_run is not None else {})
        if guide_run is not None:
            # the guide's sites the model has not reached yet stand in for the model's rest
            check_sites({**guide_run.sites, **partial.sites}, guide_run.sites, allow_enumerated=enumerate)
    except VaezooError as refusal:
        raise refusal from err


def check_in_data_plate(*site_dicts: Mapping[str, dict]) -> None:
    """Raises SiteError for the first sample site (deterministic records aside) outside the data
    plate: a global latent, which couples the datapoints, so that no estimate per datapoint exists
    (checked before any run under a particle plate, which such a site would break)."""
    for sites in site_dicts:
        for name, site in sites.items():
            if is_deterministic(site):
                continue
            if not any(f.name == DATA_PLATE for f in site["cond_indep_stack"]):
                raise SiteError(outside_data_plate(name))


def particle_leak(
    model: Callable,
    guide: Optional[Callable],
    x: torch.Tensor,
    particle_dim: int,
    num_particles: int,
    event_shapes: Optional[Mapping[str, tuple]] = None,
    enumerate_at: Optional[int] = None,
) -> Optional[Tuple[Optional[str], str]]:
    """Runs the guide under a particle plate at ``particle_dim`` and replays the model (or runs the
    model alone when ``guide`` is None). Returns None when the particles stayed on their plate
    (what Pyro's vectorized ELBOs check with ``check_site_shape``, more strictly), else ``(site,
    what)`` for the first site whose event shape differs from ``event_shapes`` (those of a run
    without particles: the particles went into the event), whose observed value no longer
    broadcasts against its distribution, or whose log-density has a dimension
    :func:`misplaced_dim` finds; or ``(None, what)`` when the run under the plate raised an error
    (a reshape with the batch size): the program cannot run vectorized. ``pyro.deterministic``
    sites have no density and are not checked. ``enumerate_at``: the model runs under
    ``poutine.enum`` there (see :func:`~vaezoo.traces.record`), as it will for its estimate."""
    try:
        with torch.no_grad(), pyro.plate("particles", num_particles, dim=particle_dim):
            guide_sites = record(guide, x).sites if guide is not None else {}
            replay = {n: s["value"] for n, s in guide_sites.items()}
            model_sites = record(model, x, replay=replay, enumerate_at=enumerate_at).sites
    except VaezooError:
        raise
    except Exception as err:
        return None, f"raised {_first_line(err)}"
    enum_sizes: dict = {}
    for site in model_sites.values():
        d = site["infer"].get("_enumerate_dim")
        if d is not None:
            value = site["value"]
            enum_sizes.setdefault(d, set()).add(value.shape[value.dim() - site["fn"].event_dim + d])
    for sites in (guide_sites, model_sites):
        for name, site in sites.items():
            if is_deterministic(site):
                continue
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
            d = misplaced_dim(site, lp, enum_sizes)
            if d is not None:
                return name, _misplaced(d, lp.shape[d])
    return None


def _first_line(err: Exception) -> str:
    """``Type: first line of the message`` (Pyro appends a table of the trace's shapes below it)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def describe_leak(leak: Tuple[Optional[str], str]) -> str:
    """A leak from :func:`particle_leak` as the subject of a sentence."""
    name, what = leak
    return f"the pair {what}" if name is None else f"site {name!r} {what}"


def _misplaced(d: int, size: int) -> str:
    return f"has a log-density dimension {d} of size {size} that no plate declares"


def warn_particle_leak(leak: Tuple[Optional[str], str], particle_dim: Optional[int]) -> None:
    cause = "cannot run vectorized" if leak[0] is None else "moves the particles out of their plate"
    warnings.warn(
        f"{describe_leak(leak)} when particles are vectorized at dim {particle_dim}: the program {cause}; "
        "running one particle per pass instead (exact, but slower)",
        stacklevel=3,
    )


def check_observed(
    sites: Mapping[str, dict],
    first: int = 0,
    data: Optional[torch.Tensor] = None,
    full: Optional[torch.Tensor] = None,
    data_name: str = "data",
) -> None:
    """The one support check of vaezoo (the Trainer's data check and every estimator call it).
    Checks every observed site's value explicitly, before any log-density is computed: it must end
    in the event shape of its distribution (ShapeError) and lie in its support where it is not
    masked out (SupportError naming the site, the first bad value and its datapoint, counted from
    ``first``).

    ``full``, when given, is a whole dataset of which ``data`` is the first datapoints: a site that
    observes ``data`` itself under a support without tensor parameters (a Bernoulli's {0, 1}, a
    Beta's [0, 1]) is then checked on all of ``full`` in one elementwise pass, so that a bad value
    beyond the datapoints the model ran on is found before training starts."""
    for name, site in sites.items():
        if not site["is_observed"] or site["mask"] is False:
            continue
        fn, value = site["fn"], site["value"]
        event = tuple(fn.event_shape)
        batch_ndim = value.dim() - len(event)
        if batch_ndim < 0 or not _broadcastable(value.shape, fn.batch_shape + fn.event_shape):
            given = f" (the {data_name})" if data is not None and value is data else ""
            raise ShapeError(
                f"observed site {name!r} has a value{given} of shape {tuple(value.shape)}; expected it to end in "
                f"the event shape {event} of its {_dist_name(fn)} (data of the shape the pair was built for)"
            )
        support = elementwise_support(fn.support)
        of = ""
        if full is not None and value is data and site["mask"] is None and _fixed_support(support):
            value, of = full, f" of the {data_name}"
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
        if of:
            where = f"datapoint {index[0]}{of} ({where})"
        elif data_dims and 0 <= batch_ndim + data_dims[0] < ok.dim() and ok.shape[batch_ndim + data_dims[0]] > 1:
            where = f"datapoint {first + index[batch_ndim + data_dims[0]]} ({where})"
        raise SupportError(
            f"observed site {name!r} has the value {shown} at {where}, outside the support {support} of "
            f"its {_dist_name(fn)}; expected data the likelihood can score (e.g. binarized for a Bernoulli)"
        )


def _fixed_support(support: torch.distributions.constraints.Constraint) -> bool:
    """Whether a support has no tensor parameters (boolean, real, unit_interval, ...), so that it
    can be checked on any number of datapoints, not only on those the model ran on."""
    return not any(isinstance(v, torch.Tensor) for v in vars(support).values())  # support: elementwise already


def _broadcastable(a, b) -> bool:
    return all(i == j or i == 1 or j == 1 for i, j in zip(reversed(a), reversed(b)))


def _dist_name(fn) -> str:
    while isinstance(fn, torch.distributions.Independent):
        fn = fn.base_dist
    return type(fn).__name__


#: the distribution inside ``Independent``, ``MaskedDistribution`` and ``ExpandedDistribution``
base_distribution = _base
