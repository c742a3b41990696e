"""Training objectives as nn.Modules: ``Objective(model, guide)(x) -> (loss, terms)``.

Like Pyro's ``Trace_ELBO``, an objective walks the sample sites of a guide run and a replayed model
run and never names a model. Unlike it, it records sites with a light messenger instead of building
a ``Trace`` graph (see :mod:`vaezoo.traces`) and returns a differentiable loss instead of stepping
an optimizer itself, so training is plain PyTorch: any torch optimizer, DDP, AMP, ``torch.compile``.
The loss is the negative objective *per datapoint* (the batch mean), in nats.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Dict, Optional, Tuple

import pyro
import torch
from torch import nn
from torch.distributions import kl_divergence

from vaezoo import traces
from vaezoo.errors import ConfigError

Terms = Dict[str, torch.Tensor]


def _scaled_sum(value: torch.Tensor, site: dict) -> torch.Tensor:
    """Sum of a site's (log-density or KL) tensor with its mask and scale applied, as Pyro does."""
    mask = site["mask"]
    if mask is not None and mask is not True:
        value = value.masked_fill(~mask, 0.0) if isinstance(mask, torch.Tensor) else value * 0.0
    scale = site["scale"]
    if isinstance(scale, torch.Tensor) or scale != 1.0:
        value = value * scale
    return value.sum()


def _total(values, like: torch.Tensor) -> torch.Tensor:
    """The sum of a list of scalars, without adding to a zero first (every op counts on the
    training hot path); a zero of ``like``'s dtype and device for an empty list."""
    if not values:
        return like.new_zeros(())
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total


class _Eager(nn.Module):
    """The objective's eager forward as a module of its own, for ``torch.jit.trace`` (which traces
    a module's forward and shares its parameters with the traced copy)."""

    def __init__(self, objective: "Objective"):
        super().__init__()
        self.model, self.guide = objective.model, objective.guide
        self._objective = [objective]  # a list: not a submodule, no parameter cycle

    def forward(self, x):
        return self._objective[0].loss_and_terms(x)


class Objective(nn.Module):
    """Base class: holds the model and the guide (as submodules when they are nn.Modules, so that
    ``objective.parameters()`` are theirs) and any state of the objective itself.

    ``check=True`` (the default) validates the first call: distribution arguments and data support,
    and that the guide's latent sites match the model's. Later calls skip these checks for speed.

    ``jit=True`` compiles the objective after its first (checked, eager) call with
    ``torch.jit.trace``, once per input shape, dtype and device, as Pyro's ``JitTrace_ELBO`` does:
    later calls run the recorded tensor program without Pyro's Python-level effect handling, so
    the step costs what the networks cost. Like any trace, it assumes the pair's control flow does
    not depend on the data; use it for pairs whose structure is static (every zoo entry is). It is
    switched off by itself when the pair registers parameters in Pyro's param store
    (``pyro.param``/``pyro.module``: a trace would freeze them), and falls back to eager execution
    with a warning when tracing fails.
    """

    def __init__(self, model: Callable, guide: Callable, check: bool = True, jit: bool = False):
        super().__init__()
        self.model = model
        self.guide = guide
        self._checked = not check
        self.jit = jit
        self._traced: Dict[tuple, torch.jit.ScriptModule] = {}
        self._jit_ready = False  # set after the first eager call has shown the pair traceable

    def _runs(self, x: torch.Tensor):
        """One guide run and one model run replaying the guide's latents: two site dicts."""
        if self._checked:
            with pyro.validation_enabled(False):
                guide_run = traces.record(self.guide, x)
                model_run = traces.record(self.model, x, replay=guide_run.replay_values())
            return model_run.sites, guide_run.sites
        with pyro.validation_enabled(True):
            guide_run = traces.record(self.guide, x)
            model_run = traces.record(self.model, x, replay=guide_run.replay_values())
        traces.check_sites(model_run.sites, guide_run.sites)
        self._checked = True
        self._jit_ready = not (guide_run.params or model_run.params)
        return model_run.sites, guide_run.sites

    def loss_and_terms(self, x: torch.Tensor) -> Tuple[torch.Tensor, Terms]:
        """The eager computation: ``(loss, terms)`` for the batch ``x``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Terms]:
        if not (self.jit and self._jit_ready) or torch.jit.is_tracing():
            return self.loss_and_terms(x)
        key = (tuple(x.shape), x.dtype, x.device, torch.is_grad_enabled())
        traced = self._traced.get(key)
        if traced is None:
            # Tracing draws random numbers differently from eager execution (torch samples
            # through other ops under a tracer): fork the RNG so that the step that builds a trace
            # draws exactly what an eager (or traced) step would, and runs stay reproducible.
            devices = [x.device] if x.device.type == "cuda" else []
            try:
                with warnings.catch_warnings(), torch.random.fork_rng(devices=devices):
                    warnings.simplefilter("ignore")  # TracerWarnings about Python values
                    traced = torch.jit.trace(_Eager(self), (x,), strict=False, check_trace=False)
            except Exception as e:  # any failure to trace: keep training, eagerly
                warnings.warn(f"{type(self).__name__}: torch.jit.trace failed ({type(e).__name__}: {e}); running eagerly")
                self.jit = False
                return self.loss_and_terms(x)
            self._traced[key] = traced
        # The plain interpreter runs exactly the recorded ops: the optimizing executor would
        # rewrite the graph after a few profiling runs and change the floating-point results
        # between the first steps after a resume and the same steps of an uninterrupted run.
        with torch.jit.optimized_execution(False):
            return traced(x)

    def _apply(self, fn, *args, **kwargs):
        self._traced.clear()  # traces hold the old device/dtype as constants
        return super()._apply(fn, *args, **kwargs)

class ELBO(Objective):
    """The evidence lower bound E_q[log p(x, z) - log q(z | x)], with each latent site's
    ``E_q[log q - log p]`` replaced by ``KL(q || p)`` in closed form where one is registered with
    ``torch.distributions.kl_divergence`` (``analytic_kl=True``) and estimated from the single
    reparameterized sample otherwise. Terms: ``elbo``, ``log_lik`` (observed sites), ``kl``
    (latent sites), per datapoint.
    """

    def __init__(self, model: Callable, guide: Callable, analytic_kl: bool = True, check: bool = True, jit: bool = False):
        super().__init__(model, guide, check, jit)
        self.analytic_kl = analytic_kl
        self._analytic: Dict[str, bool] = {}  # site name -> has a closed-form KL

    def _site_kl(self, name: str, model_site: dict, guide_site: dict) -> torch.Tensor:
        use = self._analytic.get(name)
        if use is None or use:
            try:
                kl = kl_divergence(guide_site["fn"], model_site["fn"])
                self._analytic[name] = True
                return kl
            except NotImplementedError:
                self._analytic[name] = False
        value = guide_site["value"]
        return guide_site["fn"].log_prob(value) - model_site["fn"].log_prob(value)

    def loss_and_terms(self, x: torch.Tensor) -> Tuple[torch.Tensor, Terms]:
        model_sites, guide_sites = self._runs(x)
        log_liks, kls = [], []
        for name, site in model_sites.items():
            if site["is_observed"]:
                log_liks.append(_scaled_sum(site["fn"].log_prob(site["value"]), site))
            elif self.analytic_kl:
                kls.append(_scaled_sum(self._site_kl(name, site, guide_sites[name]), guide_sites[name]))
            else:
                g = guide_sites[name]
                kls.append(_scaled_sum(g["fn"].log_prob(g["value"]), g) - _scaled_sum(site["fn"].log_prob(site["value"]), site))
        log_lik, kl = _total(log_liks, x), _total(kls, x)
        n = x.shape[0]
        elbo = (log_lik - kl) / n
        return -elbo, {"elbo": elbo.detach(), "log_lik": log_lik.detach() / n, "kl": kl.detach() / n}


class IWAE(Objective):
    """The importance-weighted bound of Burda et al. (2016),
    E[log (1/K) sum_k p(x, z_k) / q(z_k | x)], with the K particles drawn in one vectorized pass.
    Terms: ``iwae`` (the bound) and ``elbo`` (the mean log-weight), per datapoint."""

    def __init__(self, model: Callable, guide: Callable, num_particles: int = 5, check: bool = True, jit: bool = False):
        super().__init__(model, guide, check, jit)
        if int(num_particles) < 1:
            raise ConfigError(f"num_particles must be >= 1, got {num_particles}")
        self.num_particles = int(num_particles)
        self._particle_dim: Optional[int] = None

    def loss_and_terms(self, x: torch.Tensor) -> Tuple[torch.Tensor, Terms]:
        if self._particle_dim is None:
            self._particle_dim, uses_params = traces.probe(self.model, self.guide, x)
            self._jit_ready = not uses_params
        first = not self._checked
        with pyro.validation_enabled(first):
            log_p, log_q = traces.log_weights(self.model, self.guide, x, self.num_particles, self._particle_dim, check=first)
        self._checked = True
        log_w = log_p - log_q  # [K, N]
        bound = (log_w.logsumexp(0) - math.log(self.num_particles)).mean()
        return -bound, {"iwae": bound.detach(), "elbo": log_w.detach().mean()}


OBJECTIVES = {"elbo": ELBO, "iwae": IWAE}
