"""Lower-variance gradient estimators for reparameterized guides, beyond Pyro's own:

- ``ELBO(..., estimator="stl")``: *sticking the landing* (Roeder, Wu and Duvenaud 2017). The
  ELBO's ``log q(z | x)`` term is evaluated at stop-gradient guide parameters, so that its score
  term ``d/dphi log q_phi(z)`` (zero in expectation, but not at any one draw) leaves the estimator:
  near the optimum (q = p(z | x)) the gradient's variance goes to zero.
- ``IWAE(..., estimator="dreg")``: *doubly reparameterized* gradients (Tucker, Lawson, Gu and
  Maddison 2019). The guide's gradient is ``sum_k w~_k^2 d log w_k / dz_k dz_k / dphi`` with
  ``w~_k`` the normalized importance weights and ``log w_k`` taken with ``log q`` at stop-gradient
  parameters; the model's gradient is the standard IWAE one, ``sum_k w~_k d log p(x, z_k)/dtheta``.
  Unlike the standard estimator, its signal-to-noise ratio does not fall with K (Rainforth et al.
  2018; ``bench/dreg_snr.py``).

Both are unbiased for the gradient of the same bound, and both are built so that they hold for any
Pyro guide whose latent sites are reparameterized, hierarchical ones included (a guide x -> z1 ->
z2, whose q(z2 | z1) depends on z1 along the path), and for parameters anywhere (modules, Pyro's
param store):

- ``log q`` at stop-gradient parameters is ``log q_phi(z) - log q_phi(sg z) + sg(log q_phi(sg z))``,
  where ``log q_phi(sg z)`` comes from replaying the guide on its own (detached) draws: its gradient
  is the partial derivative in phi at fixed z, what the total derivative less it leaves is the
  pathwise part. It costs one more pass of the guide.
- DReG's two weightings (w~ for the model, w~^2 for the guide's path) are separated at the latent
  values the model is replayed on: each value enters the model as ``sg(z) + c (z - sg z)`` with
  ``c = sg(w~)`` per particle and datapoint (the same value, with its gradient towards the guide
  scaled by w~), so that one backward pass of the surrogate ``sum_k sg(w~_k) log p(x, z_k) -
  sg(w~_k^2) log q_sg(z_k)`` gives both. The weights come from one more pass of the model without
  gradients, on the same draws.

The extra passes replay the pair on its own draws, so the model and the guide must be
deterministic given their latents (no dropout in training mode).

Both refuse, in one line naming the site, what they cannot estimate: a guide site without
``rsample`` (score-function or discrete), a site marked for enumeration, a point-mass (``Delta``)
guide site.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Dict, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch

from vaezoo import traces
from vaezoo.errors import ConfigError, SiteError

#: the estimators each objective takes, its default first
ESTIMATORS = {"ELBO": ("standard", "stl"), "IWAE": ("standard", "dreg")}


def check_estimator(objective: str, estimator) -> str:
    """``estimator`` if ``objective`` (``"ELBO"``/``"IWAE"``) takes it, else a one-line ConfigError."""
    allowed = ESTIMATORS[objective]
    if not isinstance(estimator, str) or estimator not in allowed:
        raise ConfigError(f"{objective} estimator={estimator!r}; expected one of {', '.join(allowed)}")
    return estimator


def _base(fn):
    while hasattr(fn, "base_dist"):  # Independent, MaskedDistribution, ExpandedDistribution
        fn = fn.base_dist
    return fn


def refuse(estimator: str, model_run: traces.Run, guide_run: traces.Run) -> None:
    """Raises SiteError, naming the site, for a pair ``estimator`` (``stl``/``dreg``) cannot train."""
    for run, which in ((model_run, "model"), (guide_run, "guide")):
        for name, site in run.sites.items():
            if not site["is_observed"] and traces.is_enumerated(site):
                raise SiteError(
                    f"{which} site {name!r} is marked for enumeration, which estimator={estimator!r} does not do; "
                    "expected a pair without enumeration, or estimator='standard'"
                )
    for name, site in guide_run.sites.items():
        if site["is_observed"]:
            continue
        if not site["fn"].has_rsample:
            raise SiteError(
                f"guide site {name!r} has no reparameterized sampler, and estimator={estimator!r} needs pathwise "
                "gradients at every guide site; expected reparameterized guide sites, or estimator='standard'"
            )
        if isinstance(_base(site["fn"]), dist.Delta):
            raise SiteError(
                f"guide site {name!r} is a point mass (Delta), which has no density for estimator={estimator!r} "
                "to differentiate; expected a guide site with a density, or estimator='standard'"
            )


def _latents(run: traces.Run):
    return [(n, s) for n, s in run.sites.items() if not s["is_observed"]]


def fixed_log_probs(guide: Callable, x: torch.Tensor, guide_run: traces.Run) -> Dict[str, torch.Tensor]:
    """``log q_phi(sg z)`` of every latent site of ``guide_run``: the guide replayed on its own
    draws, detached (run it inside the plates the guide ran in). Unscaled, unmasked."""
    values = {n: v.detach() for n, v in guide_run.replay_values().items()}
    fixed = traces.record(guide, x, replay=values)
    return {n: s["fn"].log_prob(s["value"]) for n, s in _latents(fixed)}


def stop_gradient_log_q(site: dict, fixed_lp: torch.Tensor) -> torch.Tensor:
    """A guide site's ``log q`` at stop-gradient parameters, from its own log-density and the
    replayed one (:func:`fixed_log_probs`): the value of ``log q``, the pathwise gradient only."""
    return site["fn"].log_prob(site["value"]) - fixed_lp + fixed_lp.detach()


def _gate(value: torch.Tensor, site: dict, c: torch.Tensor, particle_dim: Optional[int]) -> torch.Tensor:
    """``sg(v) + c (v - sg v)``: the value ``v`` of a latent site, its gradient scaled by ``c  # [k, N]``
    per particle and datapoint (placed at the particle plate's dimension and the data plate's)."""
    event = len(site["fn"].event_shape)
    batch = value.dim() - event
    data_dim = next(f.dim for f in site["cond_indep_stack"] if f.name == traces.DATA_PLATE)
    shape = [1] * value.dim()
    if batch + data_dim < 0 or value.shape[batch + data_dim] != c.shape[1]:
        # a latent broadcast over the data plate: the datapoints' weights would mix
        raise SiteError(f"latent site {site['name']!r} is not drawn per datapoint; estimator='dreg' expects every "
                        "latent drawn inside the data plate")
    shape[batch + data_dim] = c.shape[1]
    if particle_dim is not None:
        shape[batch + particle_dim] = c.shape[0]
        c = c.reshape(shape)
    else:
        c = c[0].reshape(shape)
    detached = value.detach()
    return detached + c.to(value.dtype) * (value - detached)


def dreg_surrogate(model: Callable, guide: Callable, x: torch.Tensor, num_particles: int,
                   particle_dim: Optional[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(log_w, surrogate)`` of the DReG estimator: the log-weights ``[K, N]`` (their values as the
    standard estimator's) and a scalar ``surrogate`` (zero in value) whose gradient is, per
    datapoint and averaged over the batch, the model's standard IWAE gradient and the guide's
    doubly reparameterized one (module docstring). ``particle_dim=None``: one particle per pass."""
    K = num_particles
    if particle_dim is None:
        passes, plate = K, (lambda: contextlib.nullcontext())
    else:
        passes, plate = 1, (lambda: pyro.plate("particles", K, dim=particle_dim))
    zeros = x.new_zeros(K // passes, x.shape[0])
    runs, log_qs, values = [], [], []
    for _ in range(passes):
        with plate():
            guide_run = traces.record(guide, x)
            fixed = fixed_log_probs(guide, x, guide_run)
        latents = _latents(guide_run)
        log_q = traces.log_density(dict(latents), particle_dim, log_prob=lambda n, s: stop_gradient_log_q(s, fixed[n]))
        runs.append(guide_run)
        log_qs.append(zeros if log_q is None else zeros + log_q)
        values.append(guide_run.replay_values())
    # the normalized weights, from a pass of the model without gradients on the same draws
    with torch.no_grad():
        log_p0 = []
        for v in values:
            with plate():
                run = traces.record(model, x, replay={n: t.detach() for n, t in v.items()})
            log_p0.append(zeros + traces.log_density(run.sites, particle_dim))
        w = torch.softmax(torch.cat(log_p0) - torch.cat(log_qs).detach(), dim=0)  # [K, N]
    log_ps = []
    for i, (guide_run, v) in enumerate(zip(runs, values)):
        c = w[i * zeros.shape[0] : (i + 1) * zeros.shape[0]]
        gated = dict(v)
        for name, site in _latents(guide_run):
            gated[name] = _gate(site["value"], site, c, particle_dim)
        with plate():
            run = traces.record(model, x, replay=gated)
        log_ps.append(zeros + traces.log_density(run.sites, particle_dim))
    log_p, log_q = torch.cat(log_ps), torch.cat(log_qs)
    surrogate = (w * log_p - w.square() * log_q).sum(0).mean()
    return log_p - log_q, surrogate - surrogate.detach()


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """``log (1/K) sum_k w_k`` per datapoint, from ``log_w  # [K, N]``."""
    return log_w.logsumexp(0) - math.log(log_w.shape[0])
