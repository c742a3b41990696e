"""Bidirectional Monte Carlo (BDMC): sandwiches the exact log p(x) of data simulated from the model
between forward AIS (a stochastic lower bound) and reverse AIS (a stochastic upper bound)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import pyro
import torch
from pyro import poutine

from vaezoo.errors import ConfigError, ShapeError, SiteError
from vaezoo.evaluation.annealed import (
    CHAIN_PLATE,
    AISResult,
    _check_config,
    _check_data,
    _particle_dim,
    _seeded,
    ais,
    reverse_ais,
)
from vaezoo.traces import record

__all__ = ["BDMCResult", "bdmc", "simulate"]


@dataclass
class BDMCResult:
    """Per-datapoint output of :func:`bdmc` on ``N`` simulated datapoints.

    - ``lower`` [N]: forward AIS estimate (``forward.log_px``), a stochastic lower bound on log p(x).
    - ``upper`` [N]: reverse AIS estimate (``reverse.log_px``), a stochastic upper bound.
    - ``gap`` [N]: ``upper - lower``; its mean bounds the mean error of the forward estimate on
      data like ``x`` (in expectation), the quantity BDMC exists to measure.
    - ``x`` [N, ...]: the simulated data; ``latents``: the exact posterior samples ``z*`` that
      generated it, by site name, ``[N, ...]``.
    - ``forward``, ``reverse``: the two full :class:`AISResult`.
    """

    lower: torch.Tensor
    upper: torch.Tensor
    gap: torch.Tensor
    x: torch.Tensor
    latents: Dict[str, torch.Tensor] = field(repr=False)
    forward: AISResult = field(repr=False)
    reverse: AISResult = field(repr=False)


def simulate(model: Callable, x_template: torch.Tensor, num_data: Optional[int] = None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Draws ``(x*, z*) ~ p(x, z)`` by running ``model`` with its observation un-observed
    (``poutine.uncondition``).

    ``x_template`` [N, ...] gives the data's shape, dtype and device; its values are ignored (the model
    receives it only to read its shape). ``num_data`` repeats ``x_template[:1]`` that many times
    instead. The model must have one observed site whose value is ``x`` reshaped. Returns ``x*``
    shaped like the template and ``z*`` by site name, each ``[N, ...]``: ``z*`` is an exact sample
    of ``p(z | x*)``.
    """
    x_template = _check_data(x_template)
    if num_data is not None:
        if not isinstance(num_data, int) or isinstance(num_data, bool) or num_data < 1:
            raise ConfigError(f"num_data={num_data!r}; expected an integer >= 1")
        x_template = x_template[:1].expand((num_data,) + tuple(x_template.shape[1:]))
    with torch.no_grad():
        particle_dim = _particle_dim(model, None, x_template)
        # a particle plate of size 1 gives every site the batch layout the chains will use
        with pyro.plate(CHAIN_PLATE, 1, dim=particle_dim):
            with poutine.uncondition():
                sites = record(model, x_template).sites
    observed = [s for s in sites.values() if s["infer"].get("was_observed")]
    if len(observed) != 1:
        raise SiteError(
            f"the model has {len(observed)} observed sites {[s['name'] for s in observed]}; "
            "expected exactly one, the observation of x, to simulate data from"
        )
    x_site = observed[0]
    if x_site["value"].numel() != x_template.numel():
        raise ShapeError(
            f"the observed site {x_site['name']!r} has {x_site['value'].numel()} values for data of shape "
            f"{tuple(x_template.shape)}; expected its value to be x reshaped"
        )
    x = x_site["value"].reshape(x_template.shape).to(x_template)
    latents = {name: s["value"][0] for name, s in sites.items() if not s["infer"].get("was_observed")}
    return x, latents


def bdmc(
    model: Callable,
    x_template: torch.Tensor,
    guide: Optional[Callable] = None,
    *,
    num_data: Optional[int] = None,
    proposal: Optional[str] = None,
    steps: int = 500,
    chains: int = 16,
    leapfrog_steps: int = 10,
    step_size: float = 0.05,
    target_accept: float = 0.65,
    schedule: str = "sigmoid",
    adapt: str = "online",
    seed: Optional[int] = None,
    progress: bool = False,
) -> BDMCResult:
    r"""Bidirectional Monte Carlo (Grosse, Ghahramani, Adams 2015; Wu et al. 2017).

    For data simulated from the model, :math:`z^* \sim p(z)`, :math:`x^* \sim p(x \mid z^*)`, the
    latent :math:`z^*` is an exact sample of :math:`p(z \mid x^*)`. Forward AIS from the proposal on
    :math:`x^*` gives :math:`\hat{\mathcal L}` with :math:`\mathbb E \hat{\mathcal L} \le \log
    p(x^*)`; reverse AIS started at :math:`z^*` gives :math:`\hat{\mathcal U}` with
    :math:`\mathbb E \hat{\mathcal U} \ge \log p(x^*)`. The gap :math:`\hat{\mathcal U} -
    \hat{\mathcal L}` bounds (in expectation) the error of the forward estimate, and so tells
    whether ``steps`` is enough for AIS on real data of the same kind (Wu et al. 2017).

    The reverse run uses the forward run's step-size trajectory backwards (each step size at the β
    it was tuned for): it depends on ``x*`` but not on ``z*``, so the upper bound stays valid. With
    ``adapt="pilot"`` the forward bound is exactly valid too (see :func:`~vaezoo.evaluation.annealed.ais`).

    Args:
        x_template: ``[N, ...]``, shape, dtype and device of the data to simulate; values ignored.
        num_data: simulate this many datapoints shaped like ``x_template[0]`` instead of ``N``.
        proposal: ``"guide"`` or ``"prior"``; default: the guide if one is given, else the prior.
        Others: as in :func:`~vaezoo.evaluation.annealed.ais`; ``seed`` covers the simulation and both runs.
    """
    if proposal is None:
        proposal = "prior" if guide is None else "guide"
    x_template = _check_data(x_template)
    kw = dict(
        steps=steps, chains=chains, leapfrog_steps=leapfrog_steps, step_size=step_size,
        target_accept=target_accept, schedule=schedule, progress=progress,
    )
    # validate the whole configuration before simulating anything
    _check_config(steps, chains, leapfrog_steps, step_size, target_accept, schedule, adapt, proposal, guide)
    with _seeded(seed, x_template.device):
        x, latents = simulate(model, x_template, num_data)
        forward = ais(model, x, proposal, guide, adapt=adapt, **kw)
        reverse = reverse_ais(model, x, latents, proposal, guide, adapt="none", step_sizes=forward.step_sizes, **kw)
    return BDMCResult(
        lower=forward.log_px,
        upper=reverse.log_px,
        gap=reverse.log_px - forward.log_px,
        x=x,
        latents=latents,
        forward=forward,
        reverse=reverse,
    )
