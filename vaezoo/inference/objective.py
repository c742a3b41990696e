"""The base of vaezoo's objectives: an ``nn.Module`` holding a model/guide pair, its first call's
checks, and the compiled path (capture once per input shape, guards before every compiled call).
The objectives themselves (:class:`~vaezoo.inference.objectives.ELBO`, ``IWAE``) are in
:mod:`vaezoo.inference.objectives`."""

from __future__ import annotations

import warnings
from typing import Callable, Dict, Mapping, Optional, Tuple

import pyro
import torch
from pyro.distributions.util import is_identically_one, scale_and_mask
from torch import nn

from vaezoo import guards, traces
from vaezoo.inference import checkpoint, compiled
from vaezoo.randomness import rng_scope

Terms = Dict[str, torch.Tensor]

def _scaled_sum(value: torch.Tensor, site: dict) -> torch.Tensor:
    """Sum of a site's (log-density or KL) tensor with its scale and mask applied, as Pyro does."""
    return scale_and_mask(value, site["scale"], site["mask"]).sum()


def _total(values, like: torch.Tensor) -> torch.Tensor:
    """The sum of a list of scalars, without adding to a zero first (every op counts on the
    training hot path); a zero of ``like``'s dtype and device for an empty list."""
    if not values:
        return like.new_zeros(())
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total


def _data_size(sites: Mapping[str, dict]) -> Optional[int]:
    """The full size of the ``"data"`` plate if it subsamples (a constant then), else ``None``: the
    per-datapoint loss divides by the batch size ``len(x)``."""
    for site in sites.values():
        for frame in site["cond_indep_stack"]:
            if frame.name == traces.DATA_PLATE and frame.full_size is not None and frame.full_size != frame.size:
                return int(frame.full_size)
    return None


def _subsampled(run: traces.Run):
    """Names of the plates of a run that subsample (``subsample_size`` below their size)."""
    return [name for name, s in run.subsamples.items() if s["fn"].subsample_size not in (None, s["fn"].size)]


def _same(a, b) -> bool:
    """Whether two scales (or masks) are the same value: the same object or equal numbers."""
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return False
    return a == b


def _site_flags(model_run: traces.Run, guide_run: traces.Run) -> Tuple[bool, Tuple[str, ...]]:
    """``(enumerated, non-reparameterized guide site names)`` of one run of the pair."""
    enumerated = any(traces.is_enumerated(s) for run in (model_run, guide_run) for s in run.sites.values() if not s["is_observed"])
    score = tuple(n for n, s in guide_run.sites.items() if not s["is_observed"] and not s["fn"].has_rsample)
    return enumerated, score


class Objective(nn.Module):
    """Base class: holds the model and the guide (as submodules when they are nn.Modules, so that
    ``objective.parameters()`` are theirs) and any state of the objective itself.

    ``check=True`` (the default) validates the first call: distribution arguments and data support
    (Pyro's validation), and that the guide's latent sites match the model's. Later calls skip these
    checks for speed.

    ``compile=True`` runs the objective's step as one compiled program (see
    :mod:`vaezoo.inference.compiled`): the eager computation of the pair, Pyro's effect handlers
    and all, is captured once per input shape, dtype, device and train/eval mode into one aten
    graph, which ``torch.compile`` (inductor) turns into fused kernels with their backward pass.
    The :class:`~vaezoo.inference.Trainer` goes further where it can and compiles its whole step,
    the optimizer's update included, as one program (:class:`compiled.TrainingStep`).
    Compiling costs ~20 s per shape on a 2-core CPU (reported in :attr:`compile_seconds` and
    logged) and pays back after some thousands of steps (``bench/svi_throughput.py``). Calls without gradients
    (evaluation) and calls under an active Pyro handler run eagerly. The compiled program draws its
    random numbers from torch's default generator, so the same seed gives the same compiled run,
    but not the draws of an eager run (inductor generates them in its own kernels).

    A capture records tensor operations only: every Python value the pair computes with is frozen
    at its first call. So the pair is compiled only when nothing visible says otherwise; the first
    call turns compiling off, with one warning naming the reason, for a pair with a site scaled or
    masked (``poutine.scale``, KL annealing, ``poutine.mask``, a subsampled plate), a parameter
    that lives in Pyro's param store rather than in the objective's modules, a guide site without
    ``rsample``, a site to enumerate, or a term that is a Python number. What a capture cannot
    see (a Python number read from a global inside the pair) it cannot refuse: use
    ``compile=True`` for pairs whose structure and constants are static (every zoo entry's are).
    A capture or compilation that fails also falls back to eager execution with one warning.
    """

    def __init__(self, model: Callable, guide: Callable, check: bool = True, compile: bool = False):
        super().__init__()
        self.model = model
        self.guide = guide
        self._checked = not check
        # not ``self.compile``: that is nn.Module's own method
        self.compile_enabled = bool(compile)
        self.compile_seconds = 0.0  # spent capturing and compiling programs, in total
        self._programs: Dict[tuple, compiled.Program] = {}
        self._blocker: Optional[str] = None  # why the pair cannot be compiled, found by the first call
        self._structure: Optional[Tuple[bool, Tuple[str, ...]]] = None  # see _site_flags
        self._data_size: Optional[int] = None  # the data plate's size when it subsamples
        self._guard: Optional[guards.Guard] = None  # the Python values the programs were captured with

    # ----------------------------------------------------------------------------- runs
    def _runs(self, x: torch.Tensor) -> Tuple[traces.Run, traces.Run]:
        """One guide run and one model run replaying the guide's latents."""
        first = not self._checked
        with pyro.validation_enabled(first):
            guide_run = traces.record(self.guide, x)
            model_run = traces.record(self.model, x, replay=guide_run.trace)
        if first:
            self._check(model_run, guide_run)
            self._checked = True
        if self._structure is None:
            structure = _site_flags(model_run, guide_run)
            self._refuse(model_run, guide_run, structure)
            self._structure = structure
            self._data_size = _data_size(model_run.sites)
            self._blocker = self._compile_blocker(model_run, guide_run)
        return model_run, guide_run

    def _per_datapoint(self, x: torch.Tensor) -> int:
        """What a sum over the data plate is divided by: the batch size, or the full size of a
        subsampled data plate (whose sites Pyro scales by size / subsample size)."""
        return int(x.shape[0]) if self._data_size is None else self._data_size

    def _refuse(self, model_run: traces.Run, guide_run: traces.Run, structure) -> None:
        """Raises SiteError for a pair this objective cannot train correctly (checked on the first
        call whether or not ``check`` is on)."""

    def _check(self, model_run: traces.Run, guide_run: traces.Run) -> None:
        traces.check_sites(model_run.sites, guide_run.sites)

    def _inspect(self, x: torch.Tensor) -> None:
        """The first call's checks and the pair's structure, without the loss: what decides whether
        it compiles (IWAE adds its particle probe)."""
        self._runs(x)

    @property
    def compiles(self) -> bool:
        """Whether gradient steps run compiled programs, as far as the calls so far tell (a pair found
        to block compiling, or a failed compilation, turns it off)."""
        return self.compile_enabled and self._blocker is None

    def _fall_back(self, reason: str) -> None:
        """Turns compiling off with one warning naming the reason."""
        warnings.warn(f"{type(self).__name__}(compile=True) runs eagerly: {reason}", stacklevel=4)
        self.compile_enabled = False

    def guards_hold(self) -> bool:
        """Whether the Python values the pair can compute with (:class:`vaezoo.guards.Guard`: the
        attributes of its modules and of the objects they hold, their ``training`` flags, the
        globals and closure variables its code names) are those the compiled programs were captured
        with. The first call takes the snapshot; a later call that finds a change turns compiling
        off, with one warning naming the value, and returns False: from then on the pair runs
        eagerly, so no step computes with a stale value."""
        if not self.compile_enabled:
            return False
        if self._guard is None:
            self._guard = guards.Guard(self.model, self.guide)
            return True
        change = self._guard.changed()
        if change is None:
            return True
        self._programs.clear()
        self._fall_back(
            f"{change} since the pair was captured, and a compiled program would keep computing with the old "
            "value (to compile with a value that changes, such as a KL weight, hold it in a tensor: a buffer "
            "of a module, which is an input of the program)"
        )
        return False

    def _inspect_untouched(self, x: torch.Tensor) -> None:
        """:meth:`_inspect`, leaving the modules' buffers (a batch norm's running statistics) as they
        were: the inspection's runs of the pair are not steps of training."""
        saved = [(b, b.detach().clone()) for b in self.buffers()]
        try:
            self._inspect(x)
        finally:
            with torch.no_grad():
                for b, value in saved:
                    if not torch.equal(b, value):  # (a copy would bump the version autograd checks)
                        b.copy_(value)

    def _compile_blocker(self, model_run: traces.Run, guide_run: traces.Run) -> Optional[str]:
        own = {id(p) for p in self.parameters()}
        for run in (model_run, guide_run):
            for name, site in run.params.items():
                value = site["value"]
                unconstrained = getattr(value, "unconstrained", None)
                if id(value) not in own and not (callable(unconstrained) and id(unconstrained()) in own):
                    return (
                        f"param site {name!r} is in Pyro's param store, not a parameter of the objective's "
                        "modules, and a compiled program would freeze its value (make the networks submodules of "
                        "nn.Module model/guide)"
                    )
            for name in _subsampled(run):
                return f"plate {name!r} subsamples, and a compiled program would freeze its indices"
            for name, site in run.sites.items():
                if not is_identically_one(site["scale"]):
                    return (
                        f"site {name!r} has scale {site['scale']} (poutine.scale, an annealing factor), "
                        "which a compiled program would freeze"
                    )
                if site["mask"] is not None:
                    return f"site {name!r} is masked (poutine.mask), and a compiled program would freeze the mask"
        enumerated, score = self._structure
        if enumerated:
            return "sites are enumerated (TraceEnum_ELBO runs eagerly)"
        if score:
            return f"guide site {score[0]!r} has no reparameterized sampler (score-function terms run eagerly)"
        return None

    def loss_and_terms(self, x: torch.Tensor) -> Tuple[torch.Tensor, Terms]:
        """The eager computation: ``(loss, terms)`` for the batch ``x``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Terms]:
        if not self.compile_enabled or not torch.is_grad_enabled() or pyro.poutine.runtime.am_i_wrapped():
            return self.loss_and_terms(x)
        if self._structure is None:
            # the checked first call, in a forked random stream: a compiled run's draws are then
            # the same whether its first step is the first of the run or of a resumption
            with rng_scope(x.device):
                self._inspect_untouched(x)
        if self._blocker is not None:
            self._fall_back(self._blocker)
            return self.loss_and_terms(x)
        if not self.guards_hold():
            return self.loss_and_terms(x)
        key = (tuple(x.shape), x.dtype, x.device, self.training)
        program = self._programs.get(key)
        if program is not None:
            return program(x)
        state = checkpoint.rng_state(x.device)
        try:
            program = compiled.Program(self, x)
            out = program(x)
        except Exception as e:  # a pair the capture refuses, or any failure to compile: keep training, eagerly
            checkpoint.set_rng_state(state, x.device)
            reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
            self._fall_back(str(e) if isinstance(e, compiled.CompileBlocked) else f"compiling failed ({type(e).__name__}: {reason})")
            return self.loss_and_terms(x)
        self._programs[key] = program
        self.compile_seconds += program.compile_seconds
        compiled.log.info("%s: compiled the step for x %s %s on %s in %.1f s", type(self).__name__,
                          list(x.shape), x.dtype, x.device, program.compile_seconds)
        return out

    def _apply(self, fn, *args, **kwargs):
        self._programs.clear()  # programs hold the old device/dtype as constants
        return super()._apply(fn, *args, **kwargs)
