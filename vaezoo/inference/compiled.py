"""An objective's step as one compiled program: the eager Pyro computation captured into a single
aten-level graph (``make_fx`` over a functional call) and compiled by inductor (``torch.compile``),
which also builds the backward pass (AOTAutograd)."""

from __future__ import annotations

import logging
import time
import warnings
from typing import Callable, Dict, List, Tuple

import pyro
import torch
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils import _pytree as pytree

log = logging.getLogger(__name__)


class _Step(nn.Module):
    """``objective.loss_and_terms`` as a module's forward, for ``torch.func.functional_call``: the
    objective is a submodule, so its parameters and buffers (the model's and guide's among them)
    are the graph's inputs. ``forward`` itself (e.g. ``Constrained``'s multiplier update, which
    mutates state after the loss) stays outside the program."""

    def __init__(self, objective: nn.Module):
        super().__init__()
        self.objective = objective

    def forward(self, x):
        return self.objective.loss_and_terms(x)


class CompileBlocked(Exception):
    """The captured program would not compute what eager calls compute (the message says why)."""


class Captured:
    """The eager step ``x -> (loss, terms)`` of one objective for one input shape, dtype and device,
    captured as one aten graph (``graph``) of the objective's parameters and buffers and ``x``.
    Calling it replays the graph op by op: the eager computation without Pyro's Python, drawing
    the same random numbers as the eager step."""

    def __init__(self, objective: nn.Module, x: torch.Tensor):
        start = time.perf_counter()
        step = _Step(objective)
        self.step = [step]  # a list: not a submodule of the objective that holds this program
        self.names = [n for n, _ in step.named_parameters()] + [n for n, _ in step.named_buffers()]
        tensors = self.tensors()
        spec = {}

        def fn(tensors: List[torch.Tensor], x: torch.Tensor):
            loss, terms = torch.func.functional_call(step, dict(zip(self.names, tensors)), (x,))
            leaves, spec["terms"] = pytree.tree_flatten(terms)
            for name, value in zip(terms, leaves):
                if not isinstance(value, torch.Tensor):
                    raise CompileBlocked(f"term {name!r} is a Python {type(value).__name__}, which a compiled program would freeze")
            return [loss, *leaves]

        # Capturing runs the pair once on real tensors: fork the random stream so that building the
        # program does not shift the run's draws (a resumed run then draws what an uninterrupted
        # one draws). make_fx records below autograd, the forward ops only.
        # Validation is off as after the objective's first call, which made the checks: its
        # data-dependent branches (support checks) cannot be captured.
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []), pyro.validation_enabled(False):
            self.graph = make_fx(fn)(tensors, x)
        self.terms_spec = spec["terms"]
        _check_no_frozen_state(self.graph, tensors, self.names)
        self.capture_seconds = time.perf_counter() - start

    def tensors(self) -> List[torch.Tensor]:
        """The objective's parameters and buffers as they are now, in the graph's input order."""
        step = self.step[0]
        return [p for _, p in step.named_parameters()] + [b for _, b in step.named_buffers()]

    def _run(self, fn: Callable, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        out = fn(self.tensors(), x)
        return out[0], pytree.tree_unflatten(list(out[1:]), self.terms_spec)

    def __call__(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        return self._run(self.graph, x)


class Program(Captured):
    """A :class:`Captured` step compiled by inductor, forward and backward.

    Random numbers: the graph holds the random ops (``normal_``, ``bernoulli``) as ops; inductor
    generates them in its kernels from seeds it takes from torch's default generator on every call,
    so ``torch.manual_seed`` fixes a compiled run, but its draws are not the eager ones.
    """

    def __init__(self, objective: nn.Module, x: torch.Tensor):
        super().__init__(objective, x)
        self.fn = torch.compile(self.graph, fullgraph=True)
        self.compile_seconds = self.capture_seconds
        self._first = True

    def __call__(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        if not self._first:
            return self._run(self.fn, x)
        start = time.perf_counter()  # inductor compiles on the first call: timed, for the report
        # the backward too, now rather than lazily at the first backward(): its time is reported
        # with the forward's, and a failure to compile it falls back to eager here
        with torch._functorch.config.patch(force_non_lazy_backward_lowering=True), warnings.catch_warnings():
            # deprecation notices of the compiler's own internals: nothing a user can act on
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\._inductor")
            out = self._run(self.fn, x)
        self.compile_seconds += time.perf_counter() - start
        self._first = False
        return out


def _check_no_frozen_state(graph: torch.fx.GraphModule, tensors: List[torch.Tensor], names: List[str]) -> None:
    """Raises CompileBlocked if the graph holds a parameter or buffer of the objective as a constant
    (reached other than as a module attribute, e.g. through Pyro's param store): the compiled program
    would keep today's value and send it no gradient."""
    owned = {t.data_ptr(): n for t, n in zip(tensors, names) if t.numel() > 0}
    constants = [v for _, v in graph.named_buffers()] + [v for v in vars(graph).values() if isinstance(v, torch.Tensor)]
    for value in constants:
        if value.numel() > 0 and value.data_ptr() in owned:
            raise CompileBlocked(
                f"{owned[value.data_ptr()].removeprefix('objective.')!r} is read other than as a module attribute "
                "(e.g. through Pyro's param store), and a compiled program would freeze it"
            )


def rng_state(device: torch.device):
    """The default generators' states a compiled call draws from (CPU, and ``device`` if CUDA)."""
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def set_rng_state(state, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)
