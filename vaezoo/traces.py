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
from typing import Callable, Dict, Mapping, Optional, Union

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
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
