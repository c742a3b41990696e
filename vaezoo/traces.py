"""Light-weight tracing of Pyro programs shared by the objectives and the estimators.

Pyro's ``poutine.trace`` builds a graph and ``Trace.compute_log_prob`` sums over every plate; the
training objectives need only a dict of sample sites (fast: it runs every step), and the estimators
need one log-density per (particle, datapoint), which no Pyro utility returns. Both live here, below
``inference`` and ``evaluation`` (which may not import each other), importing only torch and pyro.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, Mapping, Optional

import pyro
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample

from vaezoo.errors import ShapeError, SiteError

DATA_PLATE = "data"


def data_plate(x: torch.Tensor) -> pyro.plate:
    """``pyro.plate("data", B, dim=-1)`` for a batch ``x  # [B, ...]``, the contract's data plate,
    with ``B`` a Python int: under ``torch.jit.trace`` (the objectives' ``jit=True``) a traced
    size would make the plate recompute its scale with tensor ops on every step, a constant does
    not (traces are kept per input shape, so the constant is always right)."""
    return pyro.plate(DATA_PLATE, int(x.shape[0]), dim=-1)


class Recorder(Messenger):
    """Records every sample and param site of one run of a program; optionally replays latent
    values (and plate subsample indices) from a mapping ``{name: value}``, like ``poutine.replay``
    without building a Trace.

    ``sites``: sample sites (latent and observed) by name; ``subsamples``: the plates' subsample
    sites; ``params``: param sites.
    """

    def __init__(self, replay: Optional[Mapping[str, torch.Tensor]] = None):
        super().__init__()
        self.replay = replay
        self.sites: Dict[str, dict] = OrderedDict()
        self.subsamples: Dict[str, dict] = OrderedDict()
        self.params: Dict[str, dict] = OrderedDict()

    def replay_values(self) -> Dict[str, torch.Tensor]:
        """Values for replaying this run: every latent site and every plate's subsample."""
        values = {name: s["value"] for name, s in self.subsamples.items()}
        values.update((name, s["value"]) for name, s in self.sites.items() if not s["is_observed"])
        return values

    def _pyro_sample(self, msg):
        if self.replay is not None and not msg["is_observed"]:
            value = self.replay.get(msg["name"])
            if value is not None:
                msg["value"] = value
                msg["done"] = True

    def _pyro_post_sample(self, msg):
        if msg["infer"].get("_do_not_trace"):
            return
        name = msg["name"]
        if isinstance(msg["fn"], _Subsample):
            self.subsamples[name] = msg
            return
        if name in self.sites:
            raise SiteError(f"sample site {name!r} appears twice in one run; site names must be unique")
        self.sites[name] = msg

    def _pyro_post_param(self, msg):
        self.params[msg["name"]] = msg


def record(fn: Callable, *args, replay: Optional[Mapping[str, torch.Tensor]] = None, **kwargs) -> Recorder:
    """Runs ``fn(*args, **kwargs)`` under a :class:`Recorder` and returns it. ``replay`` maps site
    names to values to use instead of sampling."""
    with Recorder(replay) as rec:
        fn(*args, **kwargs)
    return rec


def check_sites(model_sites: Mapping[str, dict], guide_sites: Mapping[str, dict]) -> None:
    """Raises :class:`SiteError` unless the guide has exactly the model's latent sites with the same
    event shapes."""
    model_latents = {n: s for n, s in model_sites.items() if not s["is_observed"]}
    guide_latents = {n: s for n, s in guide_sites.items() if not s["is_observed"]}
    missing = [n for n in model_latents if n not in guide_latents]
    if missing:
        raise SiteError(
            f"the guide has no site {missing[0]!r}, a latent site of the model; "
            f"expected the guide's sites to be {sorted(model_latents)}"
        )
    extra = [n for n in guide_latents if n not in model_latents]
    if extra:
        raise SiteError(
            f"the guide has a site {extra[0]!r} that the model lacks; "
            f"expected the guide's sites to be {sorted(model_latents)}"
        )
    for name, ms in model_latents.items():
        me, ge = tuple(ms["fn"].event_shape), tuple(guide_latents[name]["fn"].event_shape)
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
    lp = site["fn"].log_prob(site["value"])
    mask = site["mask"]
    if mask is not None and mask is not True:
        # torch.where, not lp * mask: a masked-out -inf must give 0, not NaN
        lp = torch.where(mask, lp, lp.new_zeros(())) if isinstance(mask, torch.Tensor) else torch.zeros_like(lp)
    return lp


def per_datapoint(lp: torch.Tensor, site: dict, particle_dim: int) -> torch.Tensor:
    """Reduces a site's log-density of batch shape ``[K, ..., N, ...]`` to ``[K, N]``: sums every
    plate dimension except the particle plate at ``particle_dim`` and the ``data`` plate."""
    data_dim = None
    for frame in site["cond_indep_stack"]:
        if frame.name == DATA_PLATE:
            data_dim = frame.dim
    if data_dim is None:
        raise SiteError(
            f"site {site['name']!r} is outside the {DATA_PLATE!r} plate; "
            "expected every site to live inside pyro.plate('data', B, dim=-1)"
        )
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
    particle_dim: int = -2,
    check: bool = True,
):
    """Draws ``num_particles`` particles from the guide in one vectorized pass and replays the model.

    Returns ``(log_p, log_q)``, each ``[K, N]``: the model's joint log-density ``log p(x, z_k)`` and
    the guide's ``log q(z_k | x)`` for every particle and datapoint, unscaled.
    """
    with pyro.plate("particles", num_particles, dim=particle_dim):
        guide_run = record(guide, x)
        model_sites = record(model, x, replay=guide_run.replay_values()).sites
    guide_sites = guide_run.sites
    if check:
        check_sites(model_sites, guide_sites)
    n = x.shape[0]
    log_p = x.new_zeros(num_particles, n)
    log_q = x.new_zeros(num_particles, n)
    for site in model_sites.values():
        log_p = log_p + per_datapoint(site_log_prob(site), site, particle_dim)
    for site in guide_sites.values():
        if not site["is_observed"]:
            log_q = log_q + per_datapoint(site_log_prob(site), site, particle_dim)
    return log_p, log_q


def probe(model: Callable, guide: Callable, x: torch.Tensor):
    """Runs the pair once on one datapoint and checks its sites. Returns ``(particle_dim,
    uses_param_store)``: the first free plate dimension for particles, as Pyro's
    ``vectorize_particles`` finds with ``max_plate_nesting``, and whether the pair has param sites."""
    with torch.no_grad():
        guide_run = record(guide, x[:1])
        model_run = record(model, x[:1], replay=guide_run.replay_values())
    check_sites(model_run.sites, guide_run.sites)
    dim = -(max(max_plate_nesting(model_run.sites, guide_run.sites), 1) + 1)
    return dim, bool(guide_run.params or model_run.params)


def guess_particle_dim(model: Callable, guide: Callable, x: torch.Tensor) -> int:
    """The first free plate dimension for particles (see :func:`probe`)."""
    return probe(model, guide, x)[0]
