"""Runs of Pyro programs shared by the objectives and the estimators.

The runs are Pyro's own ``poutine.trace`` and ``poutine.replay``; this module adds only what Pyro
lacks: replaying latent values given as a mapping (the estimators hand out particles in chunks),
the check that a guide fits its model with one-line errors, and a site's log-density reduced to one
value per (particle, datapoint), which no Pyro utility returns (``Trace.compute_log_prob`` sums over
every plate). Log-weights over particles and the checks made before trusting them are in
:mod:`vaezoo.particles`. It sits below ``inference`` and ``evaluation`` (which may not import each
other) and imports only torch and pyro.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, FrozenSet, List, Mapping, Optional, Tuple, Union

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.ops import packed
from pyro.ops.contract import contract_to_tensor
from pyro.poutine.util import site_is_subsample

from vaezoo.errors import ShapeError, SiteError

DATA_PLATE = "data"


def data_plate(x: torch.Tensor) -> pyro.plate:
    """``pyro.plate("data", B, dim=-1)`` for a batch ``x  # [B, ...]``, the contract's data plate,
    with ``B`` a Python int: a constant of a compiled objective (``compile=True``), whose programs
    are kept per input shape, so the constant is always right."""
    return pyro.plate(DATA_PLATE, int(x.shape[0]), dim=-1)


def check_event_shape(model, x: torch.Tensor, name: str = "data") -> None:
    """Raises a one-line :class:`ShapeError` unless ``x`` is ``[N, *data_shape]`` for a model that
    declares its ``data_shape`` (every zoo entry's model does; other programs are not checked)."""
    owner = model if hasattr(model, "data_shape") else getattr(model, "__self__", None)
    expected = getattr(owner, "data_shape", None)
    if expected is None or tuple(x.shape[1:]) == tuple(expected):
        return
    expected = tuple(expected)
    hint = "; one datapoint too: add its batch dimension, x[None]" if tuple(x.shape) == expected else ""
    raise ShapeError(f"{name} of shape {tuple(x.shape)} given to a model of data shape {expected}; expected "
                     f"[N, {', '.join(map(str, expected))}]{hint}")


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
    fn: Callable,
    *args,
    replay: Optional[Union[poutine.Trace, Mapping[str, torch.Tensor]]] = None,
    enumerate_at: Optional[int] = None,
    **kwargs,
) -> Run:
    """Runs ``fn(*args, **kwargs)`` under ``poutine.trace`` and returns the :class:`Run`. ``replay``
    (a Trace, e.g. a guide's ``Run.trace``, or a mapping from site names to values) replays latent
    sites and plate subsamples instead of sampling them, as ``poutine.replay`` does.
    ``enumerate_at``: runs under ``poutine.enum(first_available_dim=enumerate_at)``, so that the
    sites marked for enumeration and not replayed take their whole support (at dims left of
    ``enumerate_at``; "sequential" ones too, in parallel: the sum is the same) for
    :func:`sum_out_enumerated`."""
    if enumerate_at is not None:
        # inside the replay, as in TraceEnum_ELBO: enum sees every site (and notes the enumeration
        # dims that its log-density may depend on), then the replay overrides the guide's sites
        fn = poutine.enum(poutine.infer_config(fn, _parallel), first_available_dim=enumerate_at)
    if replay is not None:
        fn = poutine.replay(fn, trace=replay if isinstance(replay, poutine.Trace) else replay_trace(replay))
    return Run(poutine.trace(fn).get_trace(*args, **kwargs))


def latent_codes(sites: Mapping[str, dict], batch: int) -> torch.Tensor:
    """The values of the latent (unobserved) sites of a run of ``batch`` datapoints, each flattened
    per datapoint and concatenated in site order: ``[batch, D]``."""
    return torch.cat([s["value"].reshape(batch, -1) for s in sites.values() if not s["is_observed"]], dim=-1)


def prior_codes(model: Callable, x: torch.Tensor, sites: Optional[Mapping[str, dict]] = None) -> torch.Tensor:
    """Draws of the model's latents from its prior, one per datapoint of ``x``, as
    :func:`latent_codes` lays them out: an unconditioned run of ``model`` (so a hierarchical prior
    is drawn from its marginal), without gradients and hidden from any enclosing handler.

    ``sites``: the model's sites from a run on ``x`` (replayed against a guide, say). Where they
    hold one latent site, nothing upstream of it is random, so its distribution there is its prior
    whatever the guide drew: it is drawn from directly, as the sample statement draws, and the rest
    of the model (its decoder) is not run again. The draws are the same, from the same random stream."""
    with torch.no_grad(), poutine.block():
        latents = [] if sites is None else [s for s in sites.values() if not s["is_observed"]]
        if len(latents) == 1:
            site = latents[0]
            return site["fn"](*site["args"], **site["kwargs"]).reshape(x.shape[0], -1)
        return latent_codes(record(model, x).sites, x.shape[0])


def _parallel(site: dict) -> dict:
    return {"enumerate": "parallel"} if site["infer"].get("enumerate") == "sequential" else {}


def enumerated_latents(model_sites: Mapping[str, dict], guide_sites: Mapping[str, dict]) -> List[str]:
    """The model's latent sites marked for enumeration that the guide does not draw: summed out of
    log p(x, z) by :func:`sum_out_enumerated` (those the guide draws are replayed as any latent)."""
    return [n for n, s in model_sites.items() if not s["is_observed"] and n not in guide_sites and is_enumerated(s)]


def check_enumerated(model_sites: Mapping[str, dict], names) -> None:
    """Raises SiteError for an enumerated site outside the data plate: summing it out couples the
    datapoints, so that log p(x) has no estimate per datapoint."""
    for name in names:
        if not any(f.name == DATA_PLATE for f in model_sites[name]["cond_indep_stack"]):
            raise SiteError(
                f"model site {name!r} is marked for enumeration outside the {DATA_PLATE!r} plate, and summing it "
                "out couples the datapoints (log p(x) has no estimate per datapoint); expected it inside "
                f"pyro.plate({DATA_PLATE!r}, B, dim=-1), or drawn by the guide"
            )


def sum_out_enumerated(
    run: Run, particle_dim: Optional[int], dtype: Optional[torch.dtype] = None, include: Optional[Callable] = None
) -> Tuple[Optional[torch.Tensor], FrozenSet[str]]:
    """``(log_p, names)``: the log-density of a run under ``poutine.enum`` (``record(...,
    enumerate_at=...)``) contributed by its enumerated sites and the sites that depend on them,
    with the enumerated values summed out, as ``TraceEnum_ELBO`` does: log sum_y p(x, y, z),
    ``log_p  # [K, N]`` (``[1, N]`` with ``particle_dim=None``); ``names``: those sites, which the
    caller leaves out of its own sum. ``(None, frozenset())`` for a run without enumerated sites.
    ``include(site)`` restricts the sites (e.g. to the latent ones, for a prior's log-density);
    ``dtype`` casts each site's log-density before the sum. No scale enters; masks do.

    Built on Pyro's own machinery: the trace's symbols for plates and enumeration dims
    (``Trace.symbolize_dims``), ``pyro.ops.packed`` and the plated sum-product
    ``pyro.ops.contract.contract_to_tensor``, which sums the enumeration dims out at the right plate
    and multiplies out every plate except the particle and data plates."""
    enumerated = {n for n, s in run.sites.items() if s["infer"].get("_enumerate_dim") is not None}
    if not enumerated:
        return None, frozenset()
    trace = run.trace
    trace.symbolize_dims()
    sum_dims = {run.sites[n]["infer"]["_enumerate_symbol"] for n in enumerated}
    factors: "OrderedDict[frozenset, list]" = OrderedDict()
    names, target, data_frame = set(), {}, None
    for name, site in run.sites.items():
        if is_deterministic(site) or (include is not None and not include(site)):
            continue
        lp = site_log_prob(site)
        if dtype is not None:
            lp = lp.to(dtype)
        try:
            term = packed.pack(lp, site["infer"]["_dim_to_symbol"])
        except ValueError as err:  # a dimension neither a plate's nor an enumeration's
            raise ShapeError(
                f"site {name!r} has log_prob of shape {tuple(lp.shape)} under enumeration, with a dimension "
                f"that is neither a plate's nor an enumerated site's ({str(err).splitlines()[0]}); expected "
                "the program to keep enumerated values at the dims Pyro gives them"
            ) from None
        if name not in enumerated and sum_dims.isdisjoint(term._pyro_dims):
            continue
        names.add(name)
        frames = [f for f in site["cond_indep_stack"] if f.vectorized]
        factors.setdefault(frozenset(trace.plate_to_symbol[f.name] for f in frames), []).append(term)
        for f in frames:
            if (f.name == DATA_PLATE or f.dim == particle_dim) and f.size > 1:
                target[trace.plate_to_symbol[f.name]] = f.size
            if f.name == DATA_PLATE:
                data_frame = f
    if not factors:
        return None, frozenset()
    # a zero over the kept plates: the sum then spans them even where no factor does (a LogRing
    # cannot broadcast to a plate it has no size for)
    zero = next(iter(factors.values()))[0].new_zeros(tuple(target.values()))
    zero._pyro_dims = "".join(target)
    factors.setdefault(frozenset(target), []).append(zero)
    log_p = packed.unpack(contract_to_tensor(factors, sum_dims, target_ordinal=frozenset(target)), trace.symbol_to_dim)
    stack = [data_frame] if data_frame is not None else []
    return per_datapoint(log_p, {"name": sorted(names)[0], "cond_indep_stack": stack}, particle_dim), frozenset(names)


def outside_data_plate(name: str) -> str:
    """The refusal of a site outside the data plate (a global latent), one message for every
    estimator and objective (the NumPyro estimator's too)."""
    return (
        f"site {name!r} is outside the {DATA_PLATE!r} plate; "
        f"expected every site to live inside pyro.plate({DATA_PLATE!r}, B, dim=-1)"
    )


def is_deterministic(site: dict) -> bool:
    """Whether a site is a ``pyro.deterministic`` record: an observed ``Delta`` masked out, with no
    density (its log-density is 0) and, by default, the value's every dimension as event dims."""
    return bool(site["infer"].get("_deterministic", False))


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
            hint = " (it is marked for enumeration: the ELBO objective, log_marginal and ais sum such sites out)"
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
        # as Pyro's check_model_guide_match, the batch shapes too (a site the model draws once per
        # datapoint and the guide once for all would have its prior counted once per datapoint);
        # only the model's dims: a replayed model site lacks those of plates entered around the
        # replay (a particle plate), which the guide's has
        mb, gb = tuple(model_latents[name]["fn"].batch_shape), tuple(gs["fn"].batch_shape)
        if any(a != b for a, b in zip(reversed(mb), tuple(reversed(gb)) + (1,) * len(mb))):
            raise SiteError(
                f"site {name!r} has batch shape {gb} in the guide but {mb} in the model; expected them to "
                "agree (the same plates around the site in both)"
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
        raise SiteError(outside_data_plate(site["name"]))
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


def log_density(
    sites: Mapping[str, dict],
    particle_dim: Optional[int],
    include: Optional[Callable[[dict], bool]] = None,
    log_prob: Optional[Callable[[str, dict], torch.Tensor]] = None,
    dtype: Optional[torch.dtype] = None,
) -> Optional[torch.Tensor]:
    """The per-datapoint log-density ``[K, N]`` of a run's ``sites``: the sum over its sample sites
    (``include(site)`` true; ``pyro.deterministic`` ones carry none) of :func:`per_datapoint` of
    ``log_prob(name, site)`` (default :func:`site_log_prob`: scaled and masked), each cast to
    ``dtype`` first if given; None for no site. The one walk the objectives and estimators share."""
    total = None
    for name, site in sites.items():
        if is_deterministic(site) or (include is not None and not include(site)):
            continue
        lp = site_log_prob(site) if log_prob is None else log_prob(name, site)
        if dtype is not None:
            lp = lp.to(dtype)
        lp = per_datapoint(lp, site, particle_dim)
        total = lp if total is None else total + lp
    return total


def elementwise_support(support):
    """The constraint on each element of a support under ``.to_event(...)`` (its ``independent``
    wrappers removed): what the support checks of the Trainer and the estimators test values against."""
    while isinstance(support, torch.distributions.constraints.independent):
        support = support.base_constraint
    return support
