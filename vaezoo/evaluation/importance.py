"""Importance-sampling estimates of log p(x) per datapoint with the guide as proposal, chunked over
particles and datapoints and reproducible from a seed whatever the chunk sizes."""

from __future__ import annotations

import contextlib
import numbers
import time
from typing import Callable, Dict, Iterable, Optional, Tuple

import pyro
import pyro.distributions
import torch

from vaezoo.errors import ConfigError, ShapeError, SiteError, SupportError, VaezooError
from vaezoo.evaluation.result import LogMarginalResult
from vaezoo.evaluation.seeding import block_seed, draw_seed, rng_scope, seed_device
from vaezoo.evaluation.weights import summarize
from vaezoo.traces import DATA_PLATE, guess_particle_dim, per_datapoint, record, site_log_prob

# The guide draws particles in blocks of PARTICLE_BLOCK particles x DATA_BLOCK datapoints, each from
# its own seed: the random numbers, hence the estimates, do not depend on the chunk sizes.
PARTICLE_BLOCK = 1024
DATA_BLOCK = 8
# Defaults: 128 particles x 16 datapoints per pass of the model (PASS_SIZE pairs: big enough for
# efficient matrix products, small enough for the CPU caches; see bench/log_marginal.py), and at
# most WEIGHT_BUDGET log-weights (32 MiB of float64) held at once.
PASS_SIZE = 2048
WEIGHT_BUDGET = 1 << 22


def log_marginal(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    num_samples: int = 5000,
    particle_chunk: Optional[int] = None,
    data_chunk: Optional[int] = None,
    iwae_k: Iterable[int] = (),
    dtype: Optional[torch.dtype] = None,
    progress: bool = False,
    seed: Optional[int] = None,
) -> LogMarginalResult:
    r"""Estimates log p(x) for every datapoint by importance sampling with the guide as proposal
    (Burda, Grosse and Salakhutdinov 2016, eq. 8):

    .. math:: \log \hat p(x) = \log \frac1K \sum_{k=1}^K \frac{p(x, z_k)}{q(z_k \mid x)},
              \qquad z_k \sim q(z \mid x),

    together with the ELBO (mean log-weight), IWAE-k bounds, the effective sample size, a standard
    error and the Pareto k-hat of the weights (see :func:`~vaezoo.evaluation.weights.summarize`).

    ``model`` and ``guide`` keep the contract of DESIGN.md: every latent site in
    ``pyro.plate("data", B, dim=-1)``, any number of sites, any event shapes, broadcasting over a
    particle plate put left of their plates. The guide runs under that plate and the model is
    replayed on its draws, with one log-weight per (particle, datapoint); no scale (``poutine.scale``,
    KL annealing, subsampling) enters a weight. The guide must treat datapoints independently
    (networks in eval mode, no batch statistics).

    Args:
        x: data ``[N, ...]`` (the pair's shape, e.g. ``[N, C, H, W]``); the run stays on its device.
        num_samples: K, particles per datapoint.
        particle_chunk, data_chunk: particles and datapoints per pass of the model, which bound the
            memory (the model's activations for particle_chunk x data_chunk pairs, and the float64
            log-weights ``[K, data_chunk]`` kept for k-hat). By default about 2048 pairs per pass and
            at most 2^22 kept log-weights. They change neither the random numbers nor the results.
        iwae_k: values of k for which to estimate the IWAE-k bound (each 1 <= k <= K).
        dtype: casts ``x`` to this floating dtype; the pair itself is not converted and must run in
            it (for float64, call ``.double()`` on its modules first: a pair that cannot raises
            ConfigError). Site log-densities are summed into float64 log-weights whatever the dtype.
        progress: shows a tqdm bar over the datapoints.
        seed: seeds the particles; ``None`` draws a seed from torch's global generator. With a seed
            the caller's random state is left untouched. Particles ``[1024 j, 1024 (j + 1))`` of the
            datapoints ``[8 i, 8 (i + 1))`` come from one run of the guide seeded by hashing
            ``(seed, i, j)`` (the last data block padded by repeating a datapoint), so the numbers
            depend on the seed, K and the datapoint's index, not on the chunk sizes nor on N.

    Raises:
        SiteError: the guide lacks a latent site of the model, has one the model lacks, or an event
            shape differs.
        ShapeError: the pair cannot run on data of ``x``'s shape.
        SupportError: data outside the support of the model's likelihood (with Pyro's validation on).
        ConfigError: ``num_samples``, a chunk size or an ``iwae_k`` out of range; a dtype the pair
            cannot run in.
    """
    num_samples = _positive_int("num_samples", num_samples)
    iwae_k = _check_iwae_k(iwae_k, num_samples)
    x = _check_data(x, dtype)
    n = x.shape[0]
    particle_chunk, data_chunk = _chunk_sizes(num_samples, n, particle_chunk, data_chunk)
    if seed is None:
        seed = draw_seed()
    elif _is_int(seed):
        seed = int(seed)
    else:
        raise ConfigError(f"seed={seed!r} is not an integer; expected an int or None")

    start = time.perf_counter()
    validate = pyro.distributions.is_validation_enabled()
    parts = []
    with torch.no_grad(), rng_scope(x.device), _progress_bar(progress, n) as bar:
        seed_device(block_seed(seed, -1), x.device)  # the probe's draws, for reproducibility
        particle_dim = _probe(model, guide, x)
        for c0 in range(0, n, data_chunk):
            c1 = min(n, c0 + data_chunk)
            draws = _GuideDraws(guide, x, c0, c1, num_samples, particle_dim, seed)
            log_w = torch.empty(num_samples, c1 - c0, dtype=torch.float64, device=x.device)  # [K, n_c]
            for a in range(0, num_samples, particle_chunk):
                b = min(num_samples, a + particle_chunk)
                # Pyro's validation (the data's support, the parameters' constraints) costs as much as
                # the model's arithmetic: once per datapoint is enough
                with pyro.validation_enabled(validate and a == 0), _support_errors(x, c0, c1):
                    values, log_q = draws.take(a, b)
                    log_w[a:b] = _model_log_density(model, x[c0:c1], values, b - a, particle_dim) - log_q
            parts.append(summarize(log_w, iwae_k))
            bar.update(c1 - c0)
    return LogMarginalResult.from_summaries(
        parts, iwae_k, num_samples, seed=seed, wall_time=time.perf_counter() - start
    )


class _GuideDraws:
    """The guide's particles for the datapoints ``[c0, c1)`` of ``x``, made block by block (see
    :func:`log_marginal`) and handed out by particle ranges; a block is kept until the ranges pass it."""

    def __init__(self, guide, x, c0, c1, num_samples, particle_dim, seed):
        self.guide, self.x, self.c0, self.c1 = guide, x, c0, c1
        self.num_samples, self.particle_dim, self.seed = num_samples, particle_dim, seed
        self.blocks: Dict[int, tuple] = {}

    def take(self, a: int, b: int):
        """Latent values and ``log_q  # [b - a, c1 - c0]`` of the particles ``[a, b)``."""
        j0, j1 = a // PARTICLE_BLOCK, (b - 1) // PARTICLE_BLOCK
        for j in [j for j in self.blocks if j < j0]:
            del self.blocks[j]
        pieces = []
        for j in range(j0, j1 + 1):
            values, axes, log_q = self._block(j)
            lo = max(a, j * PARTICLE_BLOCK) - j * PARTICLE_BLOCK
            hi = min(b, (j + 1) * PARTICLE_BLOCK) - j * PARTICLE_BLOCK
            if (lo, hi) != (0, log_q.shape[0]):
                values = {name: v.narrow(axes[name][0], lo, hi - lo) for name, v in values.items()}
                log_q = log_q[lo:hi]
            pieces.append((values, axes, log_q))
        values, _, log_q = _join(pieces, axis=0)
        return values, log_q

    def _block(self, j: int):
        if j not in self.blocks:
            num = min(PARTICLE_BLOCK, self.num_samples - j * PARTICLE_BLOCK)
            n = self.x.shape[0]
            pieces = []
            for i in range(self.c0 // DATA_BLOCK, (self.c1 - 1) // DATA_BLOCK + 1):
                lo, hi = i * DATA_BLOCK, min(n, (i + 1) * DATA_BLOCK)
                xb = self.x[lo:hi]
                if hi - lo < DATA_BLOCK:  # same layout of random numbers whatever N
                    xb = torch.cat([xb, xb[-1:].expand((DATA_BLOCK - (hi - lo),) + xb.shape[1:])])
                seed_device(block_seed(self.seed, i, j), self.x.device)
                values, axes, log_q = _guide_draw(self.guide, xb, num, self.particle_dim)
                a, b = max(self.c0, lo) - lo, min(self.c1, hi) - lo
                if (a, b) != (0, DATA_BLOCK):
                    values = {name: v.narrow(axes[name][1], a, b - a) for name, v in values.items()}
                    log_q = log_q[:, a:b]
                pieces.append((values, axes, log_q))
            self.blocks[j] = _join(pieces, axis=1)
        return self.blocks[j]


def _join(pieces, axis: int):
    """Concatenates (values, axes, log_q) pieces along the particle (0) or data (1) axis."""
    if len(pieces) == 1:
        return pieces[0]
    axes = pieces[0][1]
    values = {name: torch.cat([p[0][name] for p in pieces], dim=axes[name][axis]) for name in axes}
    log_q = torch.cat([p[2] for p in pieces], dim=axis)
    return values, axes, log_q


def _guide_draw(guide, xb, num_particles: int, particle_dim: int):
    """One vectorized run of the guide: latent values, their (particle, data) axes, and
    ``log_q  # [num_particles, B]`` in float64."""
    with pyro.plate("particles", num_particles, dim=particle_dim):
        sites = record(guide, xb).sites
    values: Dict[str, torch.Tensor] = {}
    axes: Dict[str, Tuple[int, int]] = {}
    log_q = torch.zeros(num_particles, xb.shape[0], dtype=torch.float64, device=xb.device)
    for name, site in sites.items():
        if site["is_observed"]:
            continue
        log_q = log_q + per_datapoint(site_log_prob(site).to(torch.float64), site, particle_dim)
        value = site["value"]
        batch_dim = value.dim() - len(site["fn"].event_shape)
        data_dim = next(f.dim for f in site["cond_indep_stack"] if f.name == DATA_PLATE)
        p_axis, d_axis = batch_dim + particle_dim, batch_dim + data_dim
        if p_axis < 0 or value.shape[p_axis] != num_particles or value.shape[d_axis] != xb.shape[0]:
            raise ShapeError(
                f"guide site {name!r} has a value of shape {tuple(value.shape)}; expected "
                f"{num_particles} particles at batch dim {particle_dim} and {xb.shape[0]} datapoints "
                f"at dim {data_dim} (sample it inside the plates, event dims declared with .to_event)"
            )
        values[name] = value
        axes[name] = (p_axis, d_axis)
    return values, axes, log_q


def _model_log_density(model, x, values, num_particles: int, particle_dim: int) -> torch.Tensor:
    """``log p(x, z)  # [num_particles, N]`` in float64, the model replayed on the guide's ``values``."""
    with pyro.plate("particles", num_particles, dim=particle_dim):
        sites = record(model, x, replay=values).sites
    log_p = torch.zeros(num_particles, x.shape[0], dtype=torch.float64, device=x.device)
    for name, site in sites.items():
        if not site["is_observed"] and name not in values:
            raise SiteError(
                f"the model sampled a latent site {name!r} that the guide did not; "
                f"expected the guide's sites {sorted(values)}"
            )
        log_p = log_p + per_datapoint(site_log_prob(site).to(torch.float64), site, particle_dim)
    return log_p


def _probe(model, guide, x) -> int:
    """Runs the pair on ``x[:1]``, once plainly to check the sites and find the particle plate's dim,
    once with one particle to score it. Errors of these first runs are the data's, and are re-raised
    as vaezoo errors naming it."""
    try:
        particle_dim = guess_particle_dim(model, guide, x)
        values, _, _ = _guide_draw(guide, x[:1], 1, particle_dim)
        _model_log_density(model, x[:1], values, 1, particle_dim)
        return particle_dim
    except VaezooError:
        raise
    except (RuntimeError, ValueError, IndexError) as err:
        detail = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        if isinstance(err, ValueError) and "support" in str(err):
            raise SupportError(
                f"data of shape {tuple(x.shape)} lies outside the support of the model's likelihood "
                f"({detail}); expected data the likelihood can score (e.g. binarized for a Bernoulli)"
            ) from err
        if _is_dtype_error(str(err)):
            raise ConfigError(
                f"the model and guide cannot run on data of dtype {x.dtype} ({detail}); expected "
                "their parameters in the same dtype (e.g. call .double() on their modules)"
            ) from err
        raise ShapeError(
            f"the model and guide cannot run on data of shape {tuple(x.shape)} ({detail}); "
            "expected data of the shape the pair was built for, [N, C, H, W] for a zoo entry"
        ) from err


@contextlib.contextmanager
def _support_errors(x, c0: int, c1: int):
    """Re-raises Pyro's validation error for data outside a likelihood's support as a SupportError."""
    try:
        yield
    except ValueError as err:
        if "support" not in str(err) or isinstance(err, VaezooError):
            raise
        raise SupportError(
            f"datapoints {c0} to {c1 - 1} of x (shape {tuple(x.shape)}) include values outside the support of "
            f"the model's likelihood ({str(err).strip().splitlines()[0]}); expected data it can score "
            "(e.g. binarized for a Bernoulli)"
        ) from err


def _is_dtype_error(message: str) -> bool:
    return any(s in message for s in ("dtype", "scalar type", "Double", "Half", "BFloat16"))


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive_int(name: str, value) -> int:
    if not _is_int(value) or value < 1:
        raise ConfigError(f"{name}={value!r} is not a positive integer; expected an int >= 1")
    return int(value)


def _check_iwae_k(iwae_k, num_samples: int) -> Tuple[int, ...]:
    ks = (iwae_k,) if _is_int(iwae_k) else tuple(iwae_k)
    for k in ks:
        if not _is_int(k) or not 1 <= k <= num_samples:
            raise ConfigError(
                f"iwae_k={k!r} is out of range; expected integers 1 <= k <= num_samples={num_samples}"
            )
    return tuple(sorted({int(k) for k in ks}))


def _check_data(x, dtype) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"x is a {type(x).__name__}; expected a float tensor [N, C, H, W]")
    if x.dim() == 0 or x.shape[0] == 0:
        raise ShapeError(f"x has shape {tuple(x.shape)}; expected at least one datapoint, [N, C, H, W]")
    if dtype is not None:
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ConfigError(f"dtype={dtype!r} is not a floating torch dtype; expected e.g. torch.float64")
        x = x.to(dtype)
    if not x.is_floating_point():
        raise ConfigError(f"x has dtype {x.dtype}; expected floating-point data (or pass dtype=)")
    return x


def _chunk_sizes(num_samples: int, n: int, particle_chunk, data_chunk) -> Tuple[int, int]:
    if particle_chunk is None:
        particle_chunk = min(num_samples, 128)
    particle_chunk = min(_positive_int("particle_chunk", particle_chunk), num_samples)
    if data_chunk is None:
        data_chunk = max(DATA_BLOCK, PASS_SIZE // particle_chunk // DATA_BLOCK * DATA_BLOCK)
        cap = WEIGHT_BUDGET // num_samples
        if cap < data_chunk:
            data_chunk = max(1, cap // DATA_BLOCK * DATA_BLOCK or cap)
    data_chunk = min(_positive_int("data_chunk", data_chunk), n)
    return particle_chunk, data_chunk


class _NoBar:
    def update(self, n):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _progress_bar(progress: bool, total: int):
    if not progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="datapoint", desc="log p(x)")
