"""An objective's step as one compiled program: the eager Pyro computation captured into a single
aten-level graph (``make_fx`` over a functional call) and compiled by inductor.

- :class:`Program`: the loss, compiled with ``torch.compile``, which also builds the backward pass
  (AOTAutograd): what ``objective(x)`` runs with ``compile=True``.
- :class:`TrainingStep`: the Trainer's whole step (loss, gradient, clipping, Adam/AdamW update) as
  one program."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import pyro
import torch
from torch import nn
from torch.utils import _pytree as pytree

from vaezoo import capture as capture_module
from vaezoo.randomness import rng_scope

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


def _inputs(step: nn.Module) -> Tuple[List[str], List[torch.Tensor]]:
    """A program's inputs: the names and tensors of ``step``'s parameters, then of its buffers."""
    named = list(step.named_parameters()) + list(step.named_buffers())
    return [n for n, _ in named], [t for _, t in named]


def _copies(tensors: List[torch.Tensor]) -> List[torch.Tensor]:
    """Detached copies to capture on: capturing runs the pair on real tensors, and neither a
    parameter nor a buffer (a batch norm's statistics) may take an extra step."""
    return [t.detach().clone().requires_grad_(t.requires_grad) for t in tensors]


#: the torch releases whose private compiler APIs this module was written and tested against
TESTED_TORCH = ((2, 6), (2, 13))


def _release(version: str) -> Tuple[int, int]:
    parts = version.split("+")[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (0, 0)


def private_api_problem(version: Optional[str] = None) -> Optional[str]:
    """Why the one-program step cannot rely on torch's private compiler APIs on this torch (None
    where it can): a release outside :data:`TESTED_TORCH`, or an API that is not where it was
    (``torch._inductor.compile``, ``torch._functorch.config.patch``, ``make_fx``). The step's Adam
    update is hand-written against the optimizer's state layout of those releases too."""
    version = torch.__version__ if version is None else version
    low, high = TESTED_TORCH
    if not low <= _release(version) <= high:
        return (f"torch {version} is outside the releases its private compiler APIs were checked against "
                f"({low[0]}.{low[1]} to {high[0]}.{high[1]})")
    import torch._functorch.config as functorch_config
    import torch._guards as guards
    import torch._inductor as inductor
    import torch._inductor.compile_fx as compile_fx

    for owner, name, where in ((inductor, "compile", "torch._inductor.compile"),
                               (compile_fx, "compile_fx", "torch._inductor.compile_fx.compile_fx"),
                               (functorch_config, "patch", "torch._functorch.config.patch"),
                               (guards, "tracing", "torch._guards.tracing"),
                               (guards, "TracingContext", "torch._guards.TracingContext")):
        if not callable(getattr(owner, name, None)):
            return f"{where} is missing from torch {version}"
    return None


# the capture of a pair's tensor operations and the guard of its Python values are shared with the
# estimators' compiled pass (vaezoo.evaluation.importance), below both
CompileBlocked = capture_module.CompileBlocked
capture = capture_module.capture
restoring = capture_module.restoring


class Captured:
    """The eager step ``x -> (loss, terms)`` of one objective for one input shape, dtype and device,
    captured as one aten graph (``graph``) of the objective's parameters and buffers and ``x``.
    Calling it replays the graph op by op: the eager computation without Pyro's Python, drawing
    the same random numbers as the eager step."""

    def __init__(self, objective: nn.Module, x: torch.Tensor):
        start = time.perf_counter()
        step = _Step(objective)
        self.step = [step]  # a list: not a submodule of the objective that holds this program
        self.names, tensors = _inputs(step)
        spec = {}

        def fn(tensors: List[torch.Tensor], x: torch.Tensor):
            loss, terms = torch.func.functional_call(step, dict(zip(self.names, tensors)), (x,))
            leaves, spec["terms"] = pytree.tree_flatten(terms)
            for name, value in zip(terms, leaves):
                if not isinstance(value, torch.Tensor):
                    raise CompileBlocked(f"term {name!r} is a Python {type(value).__name__}, which a compiled program would freeze")
            return [loss, *leaves]

        # Capturing runs the pair once, on copies, in a forked random stream so that building the
        # program does not shift the run's draws (a resumed run then draws what an uninterrupted
        # one draws). make_fx records below autograd, the forward ops only.
        # Validation is off as after the objective's first call, which made the checks: its
        # data-dependent branches (support checks) cannot be captured.
        with rng_scope(x.device), pyro.validation_enabled(False), \
                restoring(step):
            self.graph = capture(fn, _copies(tensors), x)
        self.terms_spec = spec["terms"]
        _check_no_frozen_state(self.graph, tensors, self.names)
        self.capture_seconds = time.perf_counter() - start

    def tensors(self) -> List[torch.Tensor]:
        """The objective's parameters and buffers as they are now, in the graph's input order."""
        return _inputs(self.step[0])[1]

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
        # private, and absent before torch 2.8: then the backward compiles lazily, at its first call
        config = getattr(torch._functorch, "config", None)
        eager_backward = (config.patch(force_non_lazy_backward_lowering=True)
                          if hasattr(config, "force_non_lazy_backward_lowering") else contextlib.nullcontext())
        with eager_backward, warnings.catch_warnings():
            # deprecation notices of the compiler's own internals: nothing a user can act on
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\._inductor")
            out = self._run(self.fn, x)
        self.compile_seconds += time.perf_counter() - start
        self._first = False
        return out


def _inductor_compile(graph: torch.fx.GraphModule, inputs: List[torch.Tensor]) -> Callable:
    """``torch._inductor.compile(graph, inputs)`` with inductor's caches in use and static shapes.

    Called without dynamo there is no tracing context, and inductor's FX graph cache needs one with a
    shape environment ("Bypassing FX Graph Cache because 'No shape env'"): every run compiled the
    same step anew, 10-20 s on a CPU (each cell of a comparison, each resume). Dynamo gives its
    graphs a context around a fake mode with a ``ShapeEnv``; this gives the same to ours, so the
    cache keys it (the graph's code and constants, the inputs' shapes, strides and dtypes, the
    compiler's settings) and a hit loads the program compiled before. ``ignore_shape_env`` keeps
    the inputs' shapes static, as they were: with a shape environment and no dynamo, AOTAutograd
    would otherwise give every dimension a symbol and inductor would compile code for any size.
    A torch whose ``compile_fx`` lacks the flag compiles as before, without the cache."""
    import inspect

    from torch._guards import TracingContext, tracing
    from torch._inductor.compile_fx import compile_fx
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    if "ignore_shape_env" not in inspect.signature(compile_fx).parameters:
        return torch._inductor.compile(graph, inputs)
    with tracing(TracingContext(FakeTensorMode(shape_env=ShapeEnv()))):
        return compile_fx(graph, inputs, ignore_shape_env=True)


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


class TrainingStep:
    """One whole Adam/AdamW step as one compiled program: the objective's loss (forward), its
    gradient (``torch.autograd.grad`` inside the capture, so the backward ops are in the same
    graph), the optional clipping of the gradient's norm (``clip_grad_norm_``'s computation) and the
    update, written into the parameters and the optimizer's own state tensors in place.

    Why one program: the three-program step (a :class:`Program` forward, its compiled backward
    through ``loss.backward()``, then fused Adam) spends ~1.4 ms a step on the Burda MLP between its
    programs (autograd's engine, AOTAutograd's wrappers, dynamo's guards, the optimizer's Python);
    this one is a single call of inductor's code (bench/RESULTS.md). It is compiled by
    ``torch._inductor.compile`` without dynamo: the program is keyed by its caller (input shape,
    dtype, device, hyperparameters), so dynamo's guards would only re-check that key.

    With ``binarize``, ``x`` holds probabilities and the program draws the binary batch itself (the
    Trainer's dynamic binarization; an eager ``torch.bernoulli`` took 1.3 ms a batch of 128 MNIST
    images here).

    The optimizer stays the state's owner: its ``state_dict`` (checkpoints, resumption) holds the
    tensors this program updates (created as a fused ``Adam`` creates them), read at every call. Its
    learning rate is an input, read at every call (a schedule changes it without a new program); its
    other hyperparameters are constants of the program (:meth:`key`). ``p.grad`` is never set. A parameter
    that gets no gradient is not updated, as ``Adam`` skips a parameter whose ``grad`` is None.
    """

    def __init__(self, objective: nn.Module, optimizer: torch.optim.Optimizer, clip_norm: Optional[float], x: torch.Tensor,
                 binarize: bool = False):
        start = time.perf_counter()
        problem = private_api_problem()  # an untested torch: the Trainer falls back, never breaks
        if problem is not None:
            raise CompileBlocked(problem)
        # AdamW subclasses Adam from torch 2.8 on; before, it is a class of its own
        if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)) or len(optimizer.param_groups) != 1:
            raise CompileBlocked(f"the optimizer ({type(optimizer).__name__}, {len(optimizer.param_groups)} parameter "
                                 "groups) is not one group of Adam or AdamW")
        self.optimizer, self.binarize = optimizer, bool(binarize)
        group = optimizer.param_groups[0]
        step = _Step(objective)
        # the parameters and buffers, once: the objective's modules keep their tensors (``to`` and
        # ``load_state_dict`` change them in place; the Trainer builds its programs after ``to``)
        self.names, self.tensors = _inputs(step)
        index = {id(t): i for i, t in enumerate(self.tensors)}
        if any(id(p) not in index for p in group["params"]):
            raise CompileBlocked("the optimizer holds tensors that are not parameters of the objective's modules")
        # The probe and the capture run on copies (of the optimizer's state too) and in a forked
        # random stream: building the program moves nothing and does not shift the run's draws.
        copies = _copies(self.tensors)
        # which parameters get a gradient is part of the pair's static structure: one eager probe
        with rng_scope(x.device), pyro.validation_enabled(False), \
                restoring(step):
            probe = torch.func.functional_call(step, dict(zip(self.names, copies)), (torch.bernoulli(x) if binarize else x,))
            grads = torch.autograd.grad(probe[0], [copies[index[id(p)]] for p in group["params"]], allow_unused=True)
        self.params = [p for p, g in zip(group["params"], grads) if g is not None]
        if not self.params:
            raise CompileBlocked("no parameter of the optimizer gets a gradient from the loss")
        names, params_at = self.names, [index[id(p)] for p in self.params]
        # the learning rate is an input (a schedule changes it without a new program), the rest constants
        hyper = {k: group[k] for k in ("eps", "weight_decay", "amsgrad", "maximize")}
        hyper["betas"] = tuple(group["betas"])
        hyper["decoupled"] = bool(group.get("decoupled_weight_decay", isinstance(optimizer, torch.optim.AdamW)))
        n_tensors = len(self.tensors)
        spec = {}

        def fn(*flat: torch.Tensor):
            tensors, states, lr, x = list(flat[:n_tensors]), flat[n_tensors:-2], flat[-2], flat[-1]
            if binarize:  # in the program: inductor's generator, fused with the first layer's read
                x = torch.bernoulli(x)
            with torch.enable_grad():
                loss, terms = torch.func.functional_call(step, dict(zip(names, tensors)), (x,))
                params = [tensors[i] for i in params_at]
                grads = torch.autograd.grad(loss, params)
            if clip_norm is not None:
                total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
                coef = torch.clamp(clip_norm / (total + 1e-6), max=1.0)
                grads = [g * coef for g in grads]
            k = len(states) // len(params_at)
            with torch.no_grad():
                for j, (p, g) in enumerate(zip(params, grads)):
                    _adam(p, g, *states[j * k : (j + 1) * k], lr=lr, **hyper)
            leaves, spec["terms"] = pytree.tree_flatten(terms)
            return [loss.detach(), *[t.detach() for t in leaves]]

        states = self._states()
        # make_fx records below autograd: the backward's ops are in the graph (the graph does not
        # depend on the values, so the copies the probe ran on serve)
        with rng_scope(x.device), pyro.validation_enabled(False), \
                restoring(step):
            self.graph = capture(fn, *copies, *[t.clone() for t in states], self._lr(), x)
        self.terms_spec = spec["terms"]
        owned = self.tensors + states
        _check_no_frozen_state(self.graph, owned, self.names + ["the optimizer's state"] * len(states))
        self.capture_seconds = time.perf_counter() - start
        with torch.no_grad(), warnings.catch_warnings():  # no_grad: the program is an inference graph
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\._inductor")
            self.fn = _inductor_compile(self.graph, [*self.tensors, *states, self._lr(), x])
        self.compile_seconds = time.perf_counter() - start

    @staticmethod
    def key(optimizer: torch.optim.Optimizer, clip_norm: Optional[float]) -> tuple:
        """What a program holds as constants besides the input's shape: a change needs another."""
        group = optimizer.param_groups[0]  # the learning rate is an input, not a constant: not in the key
        return type(optimizer), clip_norm, tuple((k, repr(v)) for k, v in sorted(group.items()) if k not in ("params", "lr", "initial_lr"))

    def _lr(self) -> torch.Tensor:
        """The optimizer's learning rate now, as the program's input (a tensor kept until it changes)."""
        lr = self.optimizer.param_groups[0]["lr"]
        cached = getattr(self, "_lr_cache", None)
        if cached is None or cached[0] != lr:
            p = self.params[0]
            cached = self._lr_cache = (lr, torch.tensor(float(lr), dtype=p.dtype, device=p.device))
        return cached[1]

    def _states(self) -> List[torch.Tensor]:
        """The optimizer's state tensors of the parameters it updates, as a flat list (``step``, ``exp_avg``,
        ``exp_avg_sq`` and, with ``amsgrad``, ``max_exp_avg_sq`` per parameter), created as a fused
        ``Adam`` creates them if the optimizer has not stepped yet. A loaded checkpoint replaces
        them: they are read at every call."""
        group = self.optimizer.param_groups[0]
        kinds = ("step", "exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ())
        flat = []
        for p in self.params:
            state = self.optimizer.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                for kind in kinds[1:]:
                    state[kind] = torch.zeros_like(p, memory_format=torch.preserve_format)
            flat.extend(state[kind] for kind in kinds)
        return flat

    def __call__(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        with torch.no_grad():  # the gradient is inside the program: no autograd graph around it
            out = self.fn(*self.tensors, *self._states(), self._lr(), x)
        return out[0], pytree.tree_unflatten(list(out[1:]), self.terms_spec)


def _adam(p, g, step, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, lr, betas, eps, weight_decay, amsgrad, maximize, decoupled):
    """``torch.optim.Adam``'s update of one parameter (``AdamW``'s with ``decoupled``), in place.

    Written out rather than traced from ``torch.optim.adam.adam``: in its capturable form (the step
    count a tensor) inductor inlines the bias corrections into the elementwise loop, two ``pow``
    per vector of every parameter (about half the updates' time on the Burda MLP). Here they are one
    stacked tensor, computed once per parameter. Checked against ``torch.optim.Adam``/``AdamW`` in
    tests/inference/test_compile.py."""
    beta1, beta2 = betas
    if maximize:
        g = -g
    step.add_(1)
    if weight_decay != 0:
        if decoupled:
            p.mul_(1 - lr * weight_decay)
        else:
            g = g.add(p, alpha=weight_decay)
    exp_avg.lerp_(g, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    t = step.to(p.dtype)
    scalars = torch.stack([lr / (1 - beta1**t), (1 - beta2**t).sqrt()])  # step size, sqrt(bias correction 2)
    second = exp_avg_sq
    if amsgrad:
        max_exp_avg_sq.copy_(torch.maximum(max_exp_avg_sq, exp_avg_sq))
        second = max_exp_avg_sq
    p.sub_(scalars[0] * exp_avg / (second.sqrt() / scalars[1] + eps))
