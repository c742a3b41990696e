"""Capturing a Pyro pair's tensor operations as one aten graph, for the compiled objectives
(:mod:`vaezoo.inference.compiled`) and the estimators' compiled pass alike: the capture runs on fake
tensors so that a value read from a tensor into Python cannot become a silent constant. It sits below
``inference`` and ``evaluation``; the guard of the pair's Python values is :mod:`vaezoo.guards`."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch.fx.experimental.proxy_tensor import make_fx


class CompileBlocked(Exception):
    """The captured program would not compute what eager calls compute (the message says why)."""


#: what a capture raises where the pair reads a tensor's value into Python (``.numpy()``,
#: ``.tolist()``, ``float()``, a branch on a tensor): on fake tensors there is no value to read
_DATA_DEPENDENT = ("GuardOnDataDependentSymNode", "DataDependentOutputException", "DynamicOutputShapeException")


def capture(fn: Callable, *args) -> torch.fx.GraphModule:
    """``fn``'s tensor operations on ``args`` as one aten graph, captured on *fake* tensors
    (``make_fx(tracing_mode="fake")``): no real computation runs, and a pair that reads a tensor's
    value into Python (``.numpy()``, ``.tolist()``, ``float(t)``, ``if t > 0``) cannot be captured,
    since that value would be a constant of the graph, right for the capturing batch only. Such a
    read raises :class:`CompileBlocked` naming it (``.item()`` stays a symbolic value of the graph,
    which is right). Python values read from objects, globals and closures are the business of
    :class:`vaezoo.guards.Guard`."""
    try:
        # tensors the pair holds outside its parameters and buffers (a constant grid) stay real:
        # constants of the graph, checked by _check_no_frozen_state and guarded by identity
        return make_fx(fn, tracing_mode="fake", _allow_non_fake_inputs=True)(*args)
    except CompileBlocked:
        raise
    except Exception as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if type(e).__name__ in _DATA_DEPENDENT or ".numpy()" in text or "data-dependent" in text:
            raise CompileBlocked(
                f"the pair reads a tensor's value into Python ({type(e).__name__}: {text[:120]}), and a compiled "
                "program would keep the value of the batch it was captured on"
            ) from e
        raise


@contextlib.contextmanager
def restoring(module: torch.nn.Module) -> Iterator[None]:
    """Puts every parameter and buffer of ``module`` back in place after the block.

    ``torch.func.functional_call`` swaps a module's tensors for the program's inputs and back, but a
    submodule reached by two paths (a model and a guide sharing a layer, as the double transformer
    VAE's pose map) is swapped twice and restored to the first swap's tensor: a capture's fake
    tensor, or before captures ran on fake tensors, a detached copy that silently stopped training."""
    # named_modules, not modules: modules() takes remove_duplicate only from torch 2.7 on
    saved = [(m, kind, dict(getattr(m, kind))) for _, m in module.named_modules(remove_duplicate=False)
             for kind in ("_parameters", "_buffers")]
    try:
        yield
    finally:
        for m, kind, tensors in saved:
            current = getattr(m, kind)
            for name, t in tensors.items():
                if current.get(name) is not t:
                    current[name] = t
