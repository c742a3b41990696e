"""Importance-sampling estimates of log p(x) per datapoint for NumPyro model/guide pairs (the optional
``jax`` extra), returning the same :class:`LogMarginalResult` as :func:`log_marginal`."""

from __future__ import annotations

import numbers
import time
from collections import OrderedDict
from typing import Callable, Iterable, Optional

import numpy as np
import torch

from vaezoo.errors import ConfigError, ShapeError, SiteError
from vaezoo.evaluation.checks import positive_int as _positive_int
from vaezoo.evaluation.importance import _check_iwae_k, _progress_bar
from vaezoo.evaluation.result import LogMarginalResult
from vaezoo.evaluation.seeding import resolve_seed
from vaezoo.evaluation.weights import summarize
from vaezoo.traces import DATA_PLATE, outside_data_plate

PASS_SIZE = 4096  # default (particle, datapoint) pairs per jitted call
WEIGHT_BUDGET = 1 << 22


def numpyro_log_marginal(
    model: Callable,
    guide: Callable,
    x,
    num_samples: int = 5000,
    *,
    seed=None,
    progress: bool = False,
    dtype=None,
    particle_chunk: Optional[int] = None,
    data_chunk: Optional[int] = None,
    iwae_k: Iterable[int] = (),
) -> LogMarginalResult:
    r"""The estimator of :func:`vaezoo.evaluation.log_marginal` for a NumPyro pair: per datapoint,
    log p̂(x) = log (1/K) sum_k p(x, z_k) / q(z_k | x) with z_k ~ q(z | x), and the same diagnostics.

    ``model(x)`` and ``guide(x)`` open ``numpyro.plate("data", x.shape[0])`` around their sites, as
    in the Pyro contract. Each (particle, datapoint) pair is one run of the guide on that datapoint
    alone (``x[n][None]``) under ``handlers.seed``, the model replayed on its latents with
    ``handlers.substitute``; ``jax.vmap`` over datapoints and particles and ``jax.jit`` batch them.
    Site log-densities are summed over every dimension (event dims and plates of that one datapoint),
    with masks applied and scales (``handlers.scale``) ignored.

    Args:
        x: data ``[N, ...]`` (a NumPy, JAX or torch array). Enable ``jax_enable_x64`` for float64.
        num_samples: K, particles per datapoint.
        seed: an int seed, ``None`` (a seed drawn from torch's global generator, as
            :func:`~vaezoo.evaluation.log_marginal` does) or a ``jax.random`` key. Particle k of datapoint n draws from
            ``fold_in(split(key, K)[k], n)``, so the numbers do not depend on the chunk sizes.
        progress: shows a tqdm bar over the datapoints.
        dtype: casts ``x`` to this floating dtype (a NumPy/JAX dtype name or a torch dtype).
        particle_chunk, data_chunk: particles and datapoints per jitted call (fixed shapes: the last
            chunks are padded, so the function compiles once). By default about 4096 pairs per call.
        iwae_k: values of k for the IWAE-k bounds (1 <= k <= K).

    Raises:
        ImportError: jax or numpyro is not installed (``pip install vaezoo[jax]``).
        SiteError: the guide's latent sites or event shapes differ from the model's; a site outside
            the data plate (a global latent), refused as :func:`~vaezoo.evaluation.log_marginal` does.
        ShapeError, ConfigError: ``x`` is not an array with a datapoint, or of a non-float dtype;
            an argument out of range. Errors raised inside the pair propagate unchanged.
    """
    jax, jnp, handlers = _require_jax()
    num_samples = _positive_int("num_samples", num_samples)
    iwae_k = _check_iwae_k(iwae_k, num_samples)
    x = _as_jax(x, jnp, dtype)
    n = x.shape[0]
    chunk = min(num_samples, 512 if particle_chunk is None else _positive_int("particle_chunk", particle_chunk))
    if data_chunk is None:
        data_chunk = max(1, min(PASS_SIZE // chunk, WEIGHT_BUDGET // num_samples))
    data_chunk = min(_positive_int("data_chunk", data_chunk), n)
    if seed is None or isinstance(seed, numbers.Integral):
        seed = resolve_seed(seed)
        rng_key = jax.random.PRNGKey(seed)
    else:
        rng_key, seed = seed, None  # a key: no integer seed to record

    start = time.perf_counter()
    _probe(jax, handlers, model, guide, x, rng_key)
    batched = _batched(jax, jnp, handlers, model, guide)
    particle_keys = jax.random.split(rng_key, num_samples)
    parts = []
    with _progress_bar(progress, n) as bar:
        for c0 in range(0, n, data_chunk):
            c1 = min(n, c0 + data_chunk)
            index = np.minimum(np.arange(c0, c0 + data_chunk), n - 1)  # pad with the last datapoint
            xs, index = x[index], jnp.asarray(index, dtype=jnp.uint32)
            log_w = np.empty((num_samples, c1 - c0), dtype=np.float64)  # [K, n_c]
            for a in range(0, num_samples, chunk):
                b = min(num_samples, a + chunk)
                keys = particle_keys[np.minimum(np.arange(a, a + chunk), num_samples - 1)]
                log_w[a:b] = np.asarray(batched(keys, index, xs), dtype=np.float64)[: b - a, : c1 - c0]
            parts.append(summarize(torch.from_numpy(log_w), iwae_k))
            bar.update(c1 - c0)
    return LogMarginalResult.from_summaries(
        parts, iwae_k, num_samples, seed=seed, wall_time=time.perf_counter() - start, extra={"backend": "numpyro"}
    )


_COMPILED: "OrderedDict" = OrderedDict()  # (model, guide) -> jitted function; jit caches per shape
_COMPILED_MAX = 4


def _batched(jax, jnp, handlers, model, guide):
    """The jitted ``(keys [P], index [B], x [B, ...]) -> log-weights [P, B]``, kept for the last few
    pairs so that repeated calls do not compile again."""
    try:
        key = (model, guide)
        hash(key)
    except TypeError:
        key = None
    if key is not None and key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key]
    one = _one_log_weight(jax, jnp, handlers, model, guide)
    fn = jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, 0, 0)), in_axes=(0, None, None)))
    if key is not None:
        _COMPILED[key] = fn
        while len(_COMPILED) > _COMPILED_MAX:
            _COMPILED.popitem(last=False)
    return fn


def _one_log_weight(jax, jnp, handlers, model, guide):
    """``(key, n, x_n) -> log p(x_n, z) - log q(z | x_n)`` for one particle z ~ q(z | x_n)."""

    def one(key, n, xn):
        key = jax.random.fold_in(key, n)
        guide_key, model_key = jax.random.split(key)
        xb = xn[None]
        guide_sites = _latents(handlers.trace(handlers.seed(guide, guide_key)).get_trace(xb))
        values = {name: site["value"] for name, site in guide_sites.items()}
        model_run = handlers.trace(handlers.substitute(handlers.seed(model, model_key), data=values)).get_trace(xb)
        log_p = sum(_log_prob(jnp, s) for s in model_run.values() if s["type"] == "sample")
        log_q = sum(_log_prob(jnp, s) for s in guide_sites.values())
        return log_p - log_q

    return one


def _latents(tr):
    return {
        name: s
        for name, s in tr.items()
        if s["type"] == "sample" and not s["is_observed"] and not s.get("infer", {}).get("is_auxiliary")
    }


def _log_prob(jnp, site):
    """A site's log-density summed over all its dims (one datapoint), mask applied, scale ignored."""
    lp = site["fn"].log_prob(site["value"])
    mask = site.get("mask")
    if mask is not None:
        lp = jnp.where(mask, lp, 0.0)
    return jnp.sum(lp)


def _probe(jax, handlers, model, guide, x, rng_key):
    """Traces the pair abstractly (``jax.eval_shape``, nothing is compiled) on ``x[:1]``: checks the
    sites (errors raised inside the pair propagate unchanged)."""
    seen = {}

    def run(key, xb):
        guide_sites = _latents(handlers.trace(handlers.seed(guide, key)).get_trace(xb))
        values = {name: s["value"] for name, s in guide_sites.items()}
        model_run = handlers.trace(handlers.substitute(handlers.seed(model, key), data=values)).get_trace(xb)
        seen["guide"], seen["model"] = _event_shapes(guide_sites), _event_shapes(_latents(model_run))
        # the Pyro estimator's order: the model's sites, then the guide's
        sample_sites = [s for s in model_run.values() if s["type"] == "sample"] + list(guide_sites.values())
        seen["outside"] = [s["name"] for s in sample_sites if not any(f.name == DATA_PLATE for f in s["cond_indep_stack"])]
        sites = list(model_run.values()) + list(guide_sites.values())
        return [s["fn"].log_prob(s["value"]) for s in sites if s["type"] == "sample"]

    jax.eval_shape(run, rng_key, x[:1])
    model_latents, guide_latents = seen["model"], seen["guide"]
    for name in model_latents:
        if name not in guide_latents:
            raise SiteError(
                f"the guide has no site {name!r}, a latent site of the model; "
                f"expected the guide's sites to be {sorted(model_latents)}"
            )
    for name in guide_latents:
        if name not in model_latents:
            raise SiteError(
                f"the guide has a site {name!r} that the model lacks; "
                f"expected the guide's sites to be {sorted(model_latents)}"
            )
    for name, me in model_latents.items():
        if me != guide_latents[name]:
            raise SiteError(
                f"site {name!r} has event shape {guide_latents[name]} in the guide but {me} in the model; "
                "expected them to agree (declare event dimensions with .to_event)"
            )
    if seen["outside"]:  # a global latent: no estimate per datapoint, as the Pyro estimator refuses
        raise SiteError(outside_data_plate(seen["outside"][0]))


def _event_shapes(sites):
    return {name: tuple(s["fn"].event_shape) for name, s in sites.items()}


def _as_jax(x, jnp, dtype=None):
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not hasattr(x, "shape"):
        raise ShapeError(f"x is a {type(x).__name__}; expected an array [N, C, H, W]")
    x = jnp.asarray(x)
    if dtype is not None:
        if isinstance(dtype, torch.dtype):
            dtype = str(dtype).replace("torch.", "")
        if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
            raise ConfigError(f"dtype={dtype!r} is not a floating dtype; expected e.g. float64")
        x = x.astype(dtype)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ShapeError(f"x has shape {tuple(x.shape)}; expected at least one datapoint, [N, C, H, W]")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ConfigError(f"x has dtype {x.dtype}; expected floating-point data")
    return x


def _require_jax():
    try:
        import jax
        import jax.numpy as jnp
        from numpyro import handlers
    except ImportError as err:
        raise ImportError(
            f"numpyro_log_marginal needs jax and numpyro ({err}); install them with: pip install vaezoo[jax]"
        ) from err
    return jax, jnp, handlers
