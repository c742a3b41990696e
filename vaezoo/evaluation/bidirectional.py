"""Bidirectional Monte Carlo (BDMC): sandwiches the exact log p(x) of data simulated from the model
between forward AIS (a stochastic lower bound) and reverse AIS (a stochastic upper bound)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Dict, Optional, Tuple

import pyro
import torch
from pyro import poutine

from vaezoo.errors import ShapeError, SiteError
from vaezoo.evaluation.annealed import (
    CHAIN_PLATE,
    AISResult,
    AnnealingOptions,
    ais,
    resolve_options,
    reverse_ais,
)
from vaezoo.arguments import check_int
from vaezoo.evaluation.checks import check_data
from vaezoo.evaluation.result import EstimatorResult, _est, mean_with_stderr
from vaezoo.evaluation.seeding import resolve_seed, rng_scope, seed_device
from vaezoo.traces import max_plate_nesting, record

__all__ = ["BDMCResult", "bdmc", "simulate"]


@dataclass(kw_only=True)
class BDMCResult(EstimatorResult):
    """Per-datapoint output of :func:`bdmc` on ``N`` simulated datapoints. The common fields
    (``log_px``, ``stderr``, ``ess``, ``khat``) are the forward run's.

    - ``lower`` [N]: forward AIS estimate (``log_px``), a stochastic lower bound on log p(x).
    - ``upper`` [N]: reverse AIS estimate (``reverse.log_px``), a stochastic upper bound.
    - ``gap`` [N]: ``upper - lower``; its mean bounds the mean error of the forward estimate on
      data like ``x`` (in expectation), the quantity BDMC exists to measure.
    - ``x`` [N, ...]: the simulated data; ``latents``: the exact posterior samples ``z*`` that
      generated it, by site name, ``[N, ...]``.
    - ``forward``, ``reverse``: the two full :class:`AISResult`.
    """

    estimator: ClassVar[str] = "bdmc"

    upper: torch.Tensor
    x: torch.Tensor = field(repr=False)
    latents: Dict[str, torch.Tensor] = field(repr=False)
    forward: AISResult = field(repr=False)
    reverse: AISResult = field(repr=False)

    @property
    def lower(self) -> torch.Tensor:
        return self.log_px

    @property
    def gap(self) -> torch.Tensor:
        return self.upper - self.log_px

    def _own_dict(self) -> dict:
        return {
            "upper": _est(mean_with_stderr(self.upper)),
            "gap": _est(mean_with_stderr(self.gap)),
            "forward": self.forward._own_dict(),
            "reverse": self.reverse._own_dict(),
        }


def simulate(model: Callable, x_template: torch.Tensor, num_data: Optional[int] = None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Draws ``(x*, z*) ~ p(x, z)`` by running ``model`` with its observation un-observed
    (``poutine.uncondition``).

    ``x_template`` [N, ...] gives the data's shape, dtype and device; its values are ignored (the model
    receives it only to read its shape). ``num_data`` repeats ``x_template[:1]`` that many times
    instead. The model must have one observed site whose value is ``x`` reshaped. Returns ``x*``
    shaped like the template and ``z*`` by site name, each ``[N, ...]``: ``z*`` is an exact sample
    of ``p(z | x*)``.
    """
    x_template = check_data(x_template)
    if num_data is not None:
        check_int("num_data", num_data, 1)
        x_template = x_template[:1].expand((num_data,) + tuple(x_template.shape[1:]))
    with torch.no_grad():
        particle_dim = -(max(max_plate_nesting(record(model, x_template[:1]).sites), 1) + 1)
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
    guide: Optional[Callable],
    x: torch.Tensor,
    options: Optional[AnnealingOptions] = None,
    *,
    num_data: Optional[int] = None,
    steps: Optional[int] = None,
    chains: Optional[int] = None,
    seed: Optional[int] = None,
    progress: bool = False,
    dtype: Optional[torch.dtype] = None,
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
    it was tuned for): it depends on ``x*`` but not on ``z*``, so the upper bound stays valid; with
    the default ``adapt="pilot"`` the forward bound is exactly valid too.

    Args:
        model, guide: the pair; ``guide=None`` anneals from the prior.
        x: ``[N, ...]``, shape, dtype and device of the data to simulate; its values are ignored.
        options, steps, chains, seed, progress, dtype: as in :func:`~vaezoo.evaluation.annealed.ais`;
            ``seed`` covers the simulation and both runs.
        num_data: simulate this many datapoints shaped like ``x[0]`` instead of ``N``.
    """
    start = time.perf_counter()
    o = resolve_options(options, steps=steps, chains=chains)
    x = check_data(x, dtype)
    seed = resolve_seed(seed)
    with rng_scope(x.device):
        seed_device(seed, x.device)
        xs, latents = simulate(model, x, num_data)
        run_seeds = torch.randint(0, 2**62, (2,), dtype=torch.int64).tolist()
        forward = ais(model, guide, xs, o, seed=run_seeds[0], progress=progress)
        reverse = reverse_ais(model, guide, xs, latents, o, step_sizes=forward.step_sizes, seed=run_seeds[1], progress=progress)
    return BDMCResult(
        log_px=forward.log_px,
        stderr=forward.stderr,
        ess=forward.ess,
        khat=forward.khat,
        num_samples=o.chains,
        seed=seed,
        wall_time=time.perf_counter() - start,
        upper=reverse.log_px,
        x=xs,
        latents=latents,
        forward=forward,
        reverse=reverse,
    )
