"""Importance-sampling estimates of log p(x) per datapoint with the guide as proposal, chunked over
particles and datapoints and reproducible from a seed whatever the chunk sizes."""

from __future__ import annotations

import logging
import time
import warnings
import weakref
from contextlib import nullcontext
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import pyro
import pyro.distributions
import torch
from torch import nn

from vaezoo.capture import CompileBlocked, capture, restoring
from vaezoo.errors import ConfigError, ShapeError, SiteError
from vaezoo.evaluation.checks import ParamDtypeCheck, check_data, check_module_dtypes, is_int, positive_int
from vaezoo.evaluation.result import LogMarginalResult
from vaezoo.evaluation.seeding import block_seed, resolve_seed, rng_scope, seed_device
from vaezoo.evaluation.weights import summarize
from vaezoo.guards import Guard
from vaezoo.particles import check_no_subsampling, check_observed, probe_pair, warn_particle_leak
from vaezoo.traces import DATA_PLATE, is_deterministic, log_density, per_datapoint, record, site_log_prob, sum_out_enumerated

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
    *,
    seed: Optional[int] = None,
    progress: bool = False,
    dtype: Optional[torch.dtype] = None,
    particle_chunk: Optional[int] = None,
    data_chunk: Optional[int] = None,
    iwae_k: Iterable[int] = (),
    compile: bool = False,
    shard: Optional[Tuple[int, int]] = None,
) -> LogMarginalResult:
    r"""Estimates log p(x) for every datapoint by importance sampling with the guide as proposal
    (Burda, Grosse and Salakhutdinov 2016, eq. 8):

    .. math:: \log \hat p(x) = \log \frac1K \sum_{k=1}^K \frac{p(x, z_k)}{q(z_k \mid x)},
              \qquad z_k \sim q(z \mid x),

    together with the ELBO (mean log-weight), IWAE-k bounds, the effective sample size, a standard
    error and the Pareto k-hat of the weights (see :func:`~vaezoo.evaluation.weights.summarize`).

    ``model`` and ``guide`` keep the contract of DESIGN.md: every latent site in
    ``pyro.plate("data", B, dim=-1)``, any number of sites, any event shapes. The guide runs under a
    particle plate left of the pair's plates and the model is replayed on its draws, with one
    log-weight per (particle, datapoint); no scale (``poutine.scale``, KL annealing) enters a weight.
    A first vectorized run checks that every site's log-density keeps the particles on their plate
    (:func:`vaezoo.particles.particle_leak`); a pair that moves them elsewhere (a transpose, a reshape
    with the batch size) runs one particle per pass instead, exactly but more slowly, with a
    warning. The guide must treat datapoints independently (networks in eval mode, no batch
    statistics).

    Args:
        x: data ``[N, ...]`` (the pair's shape, e.g. ``[N, C, H, W]``); the run stays on its device.
        num_samples: K, particles per datapoint.
        seed: seeds the particles; ``None`` draws a seed from torch's global generator. The caller's
            random state is left untouched. Particles ``[1024 j, 1024 (j + 1))`` of the
            datapoints ``[8 i, 8 (i + 1))`` come from one run of the guide seeded by hashing
            ``(seed, i, j)`` (the last data block padded by repeating a datapoint), so the numbers
            depend on the seed, K and the datapoint's index, not on the chunk sizes nor on N.
        progress: shows a tqdm bar over the datapoints.
        dtype: casts ``x`` to this floating dtype; the pair itself is not converted and must run in
            it (for float64, call ``.double()`` on its modules first). Site log-densities are summed
            into float64 log-weights whatever the dtype.
        particle_chunk, data_chunk: particles and datapoints per pass of the model, which bound the
            memory (the model's activations for particle_chunk x data_chunk pairs, and the float64
            log-weights ``[K, data_chunk]`` kept for k-hat). By default about 2048 pairs per pass and
            at most 2^22 kept log-weights. They change neither the random numbers nor the results.
        iwae_k: values of k for which to estimate the IWAE-k bound (each 1 <= k <= K).
        compile: runs the model's full passes (``particle_chunk`` x ``data_chunk`` pairs, after each
            data chunk's first, checked pass) as one program compiled by ``torch.compile``, so that
            the likelihood's elementwise work and the per-datapoint sums fuse into few kernels
            instead of separate passes over the logits. Compiling costs seconds to tens of seconds
            once per pass shape, kept with an ``nn.Module`` model for later calls (other models'
            parameters are constants of the program, which then serves one call), so it pays for
            large or repeated evaluations (``bench/log_marginal.py``). The guide's draws stay
            eager, so the particles and the results are the eager ones up to floating-point
            rounding. A pair that cannot be compiled runs eagerly with one warning.
        shard: ``(r, S)``: score only the r-th of S contiguous runs of data chunks (process r of S
            under ``torchrun``) and return the result for those datapoints alone, with their first
            index in ``result.extra["first_index"]``. The chunks, seeds and passes are those of the
            whole run, so :meth:`LogMarginalResult.concatenate` of the S results equals the
            unsharded result bit for bit at the same torch threads per process (a matrix product's
            rounding can depend on them); every datapoint is scored exactly once (no
            padding, unlike ``DistributedSampler``, which repeats datapoints to even the shards).

    A discrete site that the model marks for enumeration (``config_enumerate``,
    ``infer={"enumerate": ...}``) and the guide does not draw is summed out exactly, as
    ``TraceEnum_ELBO`` does: the model is replayed under ``poutine.enum`` and log p(x, z) =
    log sum_y p(x, y, z) per (particle, datapoint) (:func:`vaezoo.traces.sum_out_enumerated`).
    ``pyro.deterministic`` sites carry no density.

    Raises (explicit checks before the pair's log-densities are used; an error raised inside the
    model or guide propagates unchanged, except while probing the pair: a failure under the
    particle plate means one particle per pass, with a warning naming it, and a failure on a
    slice of ``x`` a rerun on the whole ``x``, see :func:`vaezoo.particles.probe_pair`):
        ShapeError: ``x`` is not a tensor with a datapoint; an observed value does not end in its
            distribution's event shape.
        SupportError: an observed value outside its likelihood's support (naming it).
        SiteError: the guide lacks a latent site of the model (one the model enumerates aside), has
            one the model lacks, or an event shape differs; a site outside the data plate (a global
            latent); a site enumerated outside the data plate.
        ConfigError: ``num_samples``, a chunk size, ``iwae_k``, ``seed``, ``compile`` or ``shard``
            out of range; a parameter of the pair (of an nn.Module model or guide, or a param site) in
            another dtype than ``x``; a plate subsampled with ``subsample_size``.
    """
    start = time.perf_counter()
    num_samples = positive_int("num_samples", num_samples)
    iwae_k = _check_iwae_k(iwae_k, num_samples)
    if not isinstance(compile, bool):
        raise ConfigError(f"compile={compile!r}; expected True or False")
    x = check_data(x, dtype, model=model)
    n = x.shape[0]
    particle_chunk, data_chunk = _chunk_sizes(num_samples, n, particle_chunk, data_chunk)
    starts = _shard_chunks(list(range(0, n, data_chunk)), shard)
    seed = resolve_seed(seed)
    check_module_dtypes(x, model=model, guide=guide)

    validate = pyro.distributions.is_validation_enabled()
    full_pass = None  # the compiled model pass for particle_chunk x data_chunk pairs
    parts = []
    scored = sum(min(n, c0 + data_chunk) - c0 for c0 in starts)
    with torch.no_grad(), rng_scope(x.device), _progress_bar(progress, scored) as bar:
        seed_device(block_seed(seed, -1), x.device)  # the probe's draws, for reproducibility
        with ParamDtypeCheck(x.dtype):
            particle_dim, _, leak, enumerated = probe_pair(model, guide, x, enumerate=True)
        if leak is not None:
            warn_particle_leak(leak, particle_dim)
        vectorized = leak is None
        enumerate_at = particle_dim - 1 if enumerated else None  # left of the particle plate, as Pyro's
        if compile and enumerated:
            warnings.warn(f"log_marginal(compile=True) runs eagerly: model site {enumerated[0]!r} is enumerated", stacklevel=2)
        elif compile and vectorized:
            full_pass = _CompiledPass(model, particle_chunk, particle_dim)
        for c0 in starts:
            c1 = min(n, c0 + data_chunk)
            draws = _GuideDraws(guide, x, c0, c1, num_samples, particle_dim, vectorized, seed)
            log_w = torch.empty(num_samples, c1 - c0, dtype=torch.float64, device=x.device)  # [K, n_c]
            for a in range(0, num_samples, particle_chunk):
                b = min(num_samples, a + particle_chunk)
                # Pyro's validation (the parameters' constraints) and the data's checks cost as much
                # as the model's arithmetic: once per datapoint is enough
                with pyro.validation_enabled(validate and a == 0):
                    values, log_q = draws.take(a, b)
                    # compiled: the full passes after a chunk's first (which checks the data)
                    full = full_pass is not None and a > 0 and b - a == particle_chunk and c1 - c0 == data_chunk
                    log_p = full_pass(x[c0:c1], values) if full else None
                    if full and log_p is None:  # it could not compile (warned): eager from now on
                        full_pass = None
                    if log_p is None:
                        log_p = _model_log_density(
                            model, x[c0:c1], values, b - a, particle_dim if vectorized else None, c0 if a == 0 else None,
                            enumerate_at,
                        )
                    log_w[a:b] = log_p - log_q
            parts.append(summarize(log_w, iwae_k))
            bar.update(c1 - c0)
    if not parts:  # a shard with no chunk (more processes than chunks)
        parts = [summarize(torch.empty(num_samples, 0, dtype=torch.float64), iwae_k)]
    extra = {} if shard is None else {"first_index": starts[0] if starts else n}
    return LogMarginalResult.from_summaries(
        parts, iwae_k, num_samples, seed=seed, wall_time=time.perf_counter() - start, extra=extra
    )


def _shard_chunks(starts: List[int], shard) -> List[int]:
    """The r-th of S contiguous runs of the chunk starts (sizes differing by at most one)."""
    if shard is None:
        return starts
    if not (isinstance(shard, tuple) and len(shard) == 2 and all(is_int(v) for v in shard) and 0 <= shard[0] < shard[1]):
        raise ConfigError(f"shard={shard!r}; expected a pair (r, S) of integers with 0 <= r < S")
    r, s = shard
    return starts[r * len(starts) // s : (r + 1) * len(starts) // s]


class _GuideDraws:
    """The guide's particles for the datapoints ``[c0, c1)`` of ``x``, made block by block (see
    :func:`log_marginal`) and handed out by particle ranges; a block is kept until the ranges pass it."""

    def __init__(self, guide, x, c0, c1, num_samples, particle_dim, vectorized, seed):
        self.guide, self.x, self.c0, self.c1 = guide, x, c0, c1
        self.num_samples, self.particle_dim, self.seed = num_samples, particle_dim, seed
        self.vectorized = vectorized
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
                if self.vectorized:
                    values, axes, log_q = _guide_draw(self.guide, xb, num, self.particle_dim)
                else:
                    values, axes, log_q = _guide_draws_one_by_one(self.guide, xb, num)
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
        run = record(guide, xb)
    check_no_subsampling(run)  # cheap: the data plate's size may exceed a subsample_size only here
    sites = run.sites
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


def _guide_draws_one_by_one(guide, xb, num_particles: int):
    """:func:`_guide_draw` for a pair that does not broadcast over a particle plate: ``num_particles``
    runs of the guide without one, stacked on a new leading (particle) axis."""
    runs = []
    for _ in range(num_particles):
        run = record(guide, xb)
        check_no_subsampling(run)
        runs.append(run.sites)
    values: Dict[str, torch.Tensor] = {}
    axes: Dict[str, Tuple[int, int]] = {}
    log_q = torch.zeros(num_particles, xb.shape[0], dtype=torch.float64, device=xb.device)
    for name, site in runs[0].items():
        if site["is_observed"]:
            continue
        for k, sites in enumerate(runs):
            log_q[k] += per_datapoint(site_log_prob(sites[name]).to(torch.float64), sites[name], None)[0]
        value = site["value"]
        data_dim = next(f.dim for f in site["cond_indep_stack"] if f.name == DATA_PLATE)
        d_axis = value.dim() - len(site["fn"].event_shape) + data_dim
        if d_axis < 0 or value.shape[d_axis] != xb.shape[0]:
            raise ShapeError(
                f"guide site {name!r} has a value of shape {tuple(value.shape)}; expected {xb.shape[0]} "
                f"datapoints at dim {data_dim} (sample it inside the plates, event dims declared with .to_event)"
            )
        values[name] = torch.stack([sites[name]["value"] for sites in runs])
        axes[name] = (0, 1 + d_axis)
    return values, axes, log_q


def _model_log_density(model, x, values, num_particles: int, particle_dim: Optional[int], first=None, enumerate_at=None):
    """``log p(x, z)  # [num_particles, N]`` in float64, the model replayed on the guide's ``values``
    in one pass under a particle plate at ``particle_dim``, or one particle per pass (``None``: the
    values then carry the particles on their leading axis). ``first`` (the index of ``x[0]`` in the
    data) asks for the explicit checks of the observed data. ``enumerate_at``: the model's
    enumerated sites take their support at dims left of it and are summed out, log p(x, z) =
    log sum_y p(x, y, z), as ``TraceEnum_ELBO`` does (:func:`vaezoo.traces.sum_out_enumerated`)."""
    if particle_dim is None:
        log_p = torch.cat(
            [_model_pass(model, x, {n: v[k] for n, v in values.items()}, 1, None, first if k == 0 else None, enumerate_at)
             for k in range(num_particles)]
        )
    else:
        log_p = _model_pass(model, x, values, num_particles, particle_dim, first, enumerate_at)
    return log_p


def _model_pass(model, x, values, num_particles: int, particle_dim: Optional[int], first, enumerate_at=None):
    plate = pyro.plate("particles", num_particles, dim=particle_dim) if particle_dim is not None else nullcontext()
    with plate:
        run = record(model, x, replay=values, enumerate_at=enumerate_at)
    sites = run.sites
    if first is not None:
        check_observed(sites, first)
    log_p = torch.zeros(num_particles, x.shape[0], dtype=torch.float64, device=x.device)
    summed, names = sum_out_enumerated(run, particle_dim, torch.float64) if enumerate_at is not None else (None, ())
    if summed is not None:
        log_p = log_p + summed
    for name, site in sites.items():
        if not (is_deterministic(site) or name in names or site["is_observed"] or name in values):
            raise SiteError(
                f"the model sampled a latent site {name!r} that the guide did not; "
                f"expected the guide's sites {sorted(values)}"
            )
    rest = log_density(sites, particle_dim, include=lambda site: site["name"] not in names, dtype=torch.float64)
    return log_p if rest is None else log_p + rest


class _Replay(nn.Module):
    """The replayed model pass as a module's forward, for ``torch.func.functional_call``: an
    ``nn.Module`` model's parameters and buffers are then inputs of the captured graph, and the
    compiled program serves later calls (after training steps) too."""

    def __init__(self, model, num_particles: int, particle_dim: int):
        super().__init__()
        self.model, self.num_particles, self.particle_dim = model, num_particles, particle_dim

    def forward(self, x, values):
        return _model_pass(self.model, x, values, self.num_particles, self.particle_dim, None)


# nn.Module model -> {shape key: (names, compiled program)}; dropped with the model
_PROGRAMS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class _CompiledPass:
    """:func:`_model_pass` for one shape of (data, latent values) as one compiled program: the
    replayed model captured into an aten graph (``make_fx``: Pyro's handlers run once, at capture)
    and compiled by inductor, which fuses the likelihood's elementwise work and the reductions into
    few kernels around the matrix products. An ``nn.Module`` model's parameters are inputs of the
    program, which is kept with the model; any other model's (``pyro.param``, ``pyro.module`` in a
    function) are constants of the graph, so its program serves this call only."""

    def __init__(self, model, num_particles: int, particle_dim: int):
        self.replay = _Replay(model, num_particles, particle_dim)
        self.cache = _PROGRAMS.setdefault(model, {}) if isinstance(model, nn.Module) else {}
        self.key = None

    def _tensors(self):
        return [t for _, t in self.replay.named_parameters()] + [t for _, t in self.replay.named_buffers()]

    def __call__(self, x, values):
        """``log_p  # [num_particles, N]``, or None (with a warning) if the pass cannot compile."""
        # one layout for every call: a particle range across two guide blocks is a fresh tensor,
        # other ranges are views, and a compiled program is specialized to its inputs' strides
        values = {name: v.contiguous() for name, v in values.items()}
        if self.key is None:
            self.key = (self.replay.num_particles, self.replay.particle_dim, tuple(x.shape), x.dtype, x.device,
                        getattr(self.replay.model, "training", None), tuple((n, tuple(v.shape), v.dtype) for n, v in values.items()))
        cached = self.cache.get(self.key)
        if cached is not None:
            program, guard = cached
            if guard.changed() is None:
                return program(self._tensors(), x, values)
            del self.cache[self.key]  # the model computes with another Python value now: capture anew
        start = time.perf_counter()
        guard = Guard(self.replay.model)
        names = [n for n, _ in self.replay.named_parameters()] + [n for n, _ in self.replay.named_buffers()]

        def run(tensors, x, values):
            return torch.func.functional_call(self.replay, dict(zip(names, tensors)), (x, values))

        try:
            with pyro.validation_enabled(False), restoring(self.replay):
                graph = capture(run, self._tensors(), x, values)
            program = torch.compile(graph, fullgraph=True)
            log_p = program(self._tensors(), x, values)
        except CompileBlocked as e:  # a value read from the data into Python: right for one chunk only
            warnings.warn(f"log_marginal(compile=True) runs eagerly: {e}", stacklevel=3)
            return None
        except Exception as e:  # the eager pass ran this model already: a failure of the compiler
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            warnings.warn(f"log_marginal(compile=True) runs eagerly: compiling failed ({type(e).__name__}: {first})", stacklevel=3)
            return None
        if not _holds_store_params(graph):  # else a constant a later call must not see
            self.cache[self.key] = (program, guard)
        logging.getLogger(__name__).info("log_marginal: compiled the model pass for %d x %d pairs in %.1f s",
                                         self.replay.num_particles, x.shape[0], time.perf_counter() - start)
        return log_p


def _holds_store_params(graph: torch.fx.GraphModule) -> bool:
    """Whether a captured graph holds a parameter of Pyro's param store as a constant."""
    store = {t.data_ptr() for _, t in pyro.get_param_store().named_parameters() if t.numel() > 0}
    constants = [v for v in vars(graph).values() if isinstance(v, torch.Tensor)] + [v for _, v in graph.named_buffers()]
    return any(v.numel() > 0 and v.data_ptr() in store for v in constants)


def _check_iwae_k(iwae_k, num_samples: int) -> Tuple[int, ...]:
    ks = (iwae_k,) if is_int(iwae_k) else tuple(iwae_k)
    for k in ks:
        if not is_int(k) or not 1 <= k <= num_samples:
            raise ConfigError(
                f"iwae_k={k!r} is out of range; expected integers 1 <= k <= num_samples={num_samples}"
            )
    return tuple(sorted({int(k) for k in ks}))


def _chunk_sizes(num_samples: int, n: int, particle_chunk, data_chunk) -> Tuple[int, int]:
    if particle_chunk is None:
        particle_chunk = min(num_samples, 128)
    particle_chunk = min(positive_int("particle_chunk", particle_chunk), num_samples)
    if data_chunk is None:
        data_chunk = max(DATA_BLOCK, PASS_SIZE // particle_chunk // DATA_BLOCK * DATA_BLOCK)
        cap = WEIGHT_BUDGET // num_samples
        if cap < data_chunk:
            data_chunk = max(1, cap // DATA_BLOCK * DATA_BLOCK or cap)
    data_chunk = min(positive_int("data_chunk", data_chunk), n)
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
