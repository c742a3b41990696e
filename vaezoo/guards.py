"""Guards for captured programs: the Python values a model/guide pair may compute with, which a
capture (``make_fx``) freezes into constants of its graph, read again before every call of the
program so that a change is seen instead of silently ignored.

Why not dynamo's guards: dynamo would have to trace Pyro's handlers (graph breaks at every
messenger) to learn what is read; vaezoo captures below dynamo (``make_fx``) for speed. So the guard
is conservative, in the spirit of dynamo's ``ID_MATCH``/``EQUALS_MATCH`` guards but over everything
a pair can *reach* rather than what it read: the number, string and bool attributes (and tuples,
lists and dicts of them) of every module of the model and guide and of the plain objects they hold;
their ``training`` flags; the globals and closure cells that the code of the model, the guide, their
modules' classes and the functions they call names, and the attributes of the objects found there.
Values that reach Python from a tensor (``.item()``, ``.numpy()``, ``.tolist()``) are no concern
here: the capture runs on fake tensors, where such reads fail (:mod:`vaezoo.inference.compiled`).

A guard costs one attribute read and one comparison per value (a few microseconds for a zoo
entry, ``bench/svi_throughput.py``). Reading it sits below ``inference`` and ``evaluation``.
"""

from __future__ import annotations

import functools
import types
from typing import Any, List, Optional, Tuple

import torch
from torch import nn

#: values a guard compares (containers of them are compared whole)
SCALARS = (bool, int, float, complex, str, bytes, type(None))
#: code of these packages is library code: its globals are not the user's values
LIBRARIES = ("torch", "pyro", "numpy", "numpyro", "jax", "functools", "typing", "builtins", "collections", "math",
             "contextlib", "abc", "enum", "dataclasses", "warnings", "logging", "tqdm", "scipy", "sklearn")
#: how deep the walk follows plain objects and called functions
DEPTH = 3
_MISSING = object()
#: nn.Module's own bookkeeping attributes: not values a pair computes with
_MODULE_INTERNALS = frozenset(vars(nn.Module()).keys()) - {"training"}


def _is_scalar_value(v: Any) -> bool:
    if isinstance(v, SCALARS):
        return True
    if isinstance(v, (tuple, list, frozenset)) and len(v) <= 64:
        return all(_is_scalar_value(e) for e in v)
    if isinstance(v, dict) and len(v) <= 64:
        return all(isinstance(k, SCALARS) and _is_scalar_value(e) for k, e in v.items())
    return False


def _copy(v: Any) -> Any:
    """A copy of a container of scalars that later mutation of the original cannot change."""
    if isinstance(v, list):
        return [_copy(e) for e in v]
    if isinstance(v, dict):
        return {k: _copy(e) for k, e in v.items()}
    return v


def _freeze(v: Any) -> Any:
    """A snapshot of a scalar value that later mutation of a list or dict cannot change."""
    if isinstance(v, list):
        return ("list", tuple(_freeze(e) for e in v))
    if isinstance(v, dict):
        return ("dict", tuple((k, _freeze(e)) for k, e in v.items()))
    if isinstance(v, tuple):
        return tuple(_freeze(e) for e in v)
    return v


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return False


def _library(obj: Any) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module.split(".")[0] in LIBRARIES or module == "vaezoo.guards"


class _Cell:
    """A closure cell read like a mapping (``get``), as the guard reads ``__dict__``s and globals."""

    __slots__ = ("cell",)

    def __init__(self, cell):
        self.cell = cell

    def get(self, key, default):
        try:
            return self.cell.cell_contents
        except ValueError:  # emptied
            return default


class Guard:
    """The Python values reachable from ``roots`` (model, guide, ...) as they were when made;
    :meth:`changed` names the first that differs now. ``names`` label the roots in messages."""

    def __init__(self, *roots: Any, names: Tuple[str, ...] = ("model", "guide")):
        # each read: (label, mapping, key, snapshot, container); the mapping is an object's __dict__,
        # a function's globals or a closure cell, so a check is a dict lookup and an identity test
        self._reads: List[Tuple[str, Any, Any, Any, bool]] = []
        self._seen = set()
        for i, root in enumerate(roots):
            self._visit(root, names[i] if i < len(names) else getattr(root, "__name__", f"root{i}"), DEPTH)
        self._seen = None

    def __len__(self) -> int:
        return len(self._reads)

    def changed(self) -> Optional[str]:
        """None while every guarded value is as it was, else ``"WHAT changed from A to B"``."""
        # the fast path, on every compiled call: an unchanged attribute, global or cell holds the
        # very object it held (a float re-read is the same object), so identity is the test
        for i, (label, mapping, key, old, container) in enumerate(self._reads):
            new = mapping.get(key, _MISSING)
            if new is old and not container:
                continue
            if container:
                if _same(_freeze(new), _freeze(old[1])):
                    continue
                old = old[1]
            elif _same(new, old):  # an equal value in a new object: the same from now on
                self._reads[i] = (label, mapping, key, new, False)
                continue
            show = lambda v: "(missing)" if v is _MISSING else repr(v)  # noqa: E731
            return f"{label} changed from {show(old)} to {show(new)}"
        return None

    def _guard(self, label: str, mapping: Any, key: Any) -> None:
        value = mapping.get(key, _MISSING)
        if isinstance(value, (list, dict, tuple, frozenset)):  # compared by contents: a list changes in place
            self._reads.append((label, mapping, key, ("snapshot", _copy(value)), True))
        else:
            self._reads.append((label, mapping, key, value, False))

    # --- the walk
    def _visit(self, obj: Any, label: str, depth: int) -> None:
        if depth < 0 or obj is None or id(obj) in self._seen:
            return
        self._seen.add(id(obj))
        if isinstance(obj, nn.Module):
            for name, module in obj.named_modules(prefix=label):
                self._seen.add(id(module))
                self._attributes(module, name, depth, module=True)
                for fn in vars(type(module)).values():
                    if isinstance(fn, types.FunctionType) and not _library(type(module)):
                        self._code(fn, f"{type(module).__name__}.{fn.__name__}", depth - 1)
        elif isinstance(obj, types.MethodType):
            self._visit(obj.__self__, f"{label}.__self__", depth)
            self._function(obj.__func__, label, depth)
        elif isinstance(obj, functools.partial):
            self._function(obj.func, label, depth)
            self._value(obj.args, f"{label}.args", {"args": obj.args}, "args", depth - 1)
            for k, a in obj.keywords.items():
                self._value(a, f"{label}.keywords[{k!r}]", obj.keywords, k, depth - 1)
        elif isinstance(obj, types.FunctionType):
            self._function(obj, label, depth)
        elif callable(obj) and not isinstance(obj, type) and not _library(type(obj)):
            self._attributes(obj, label, depth)
            call = getattr(type(obj), "__call__", None)
            if isinstance(call, types.FunctionType):
                self._code(call, f"{type(obj).__name__}.__call__", depth - 1)

    def _attributes(self, obj: Any, label: str, depth: int, module: bool = False) -> None:
        """Guards the scalar attributes of ``obj`` and follows the plain objects among them."""
        try:
            items = list(vars(obj).items())
        except TypeError:
            return
        d = vars(obj)
        for name, value in items:
            if module and (name in _MODULE_INTERNALS or name.startswith("_pyro_")):
                continue
            self._value(value, f"{label}.{name}", d, name, depth - 1)

    def _value(self, value: Any, label: str, mapping: Any, key: Any, depth: int) -> None:
        if _is_scalar_value(value):
            self._guard(label, mapping, key)
        elif isinstance(value, torch.Tensor):
            # a tensor held outside parameters and buffers is a constant of the graph: replacing it
            # (not changing it in place) would go unseen, so it is guarded by identity
            self._reads.append((f"{label} (a tensor)", mapping, key, value, False))
        elif isinstance(value, (nn.Module, types.FunctionType, types.MethodType, functools.partial)):
            self._visit(value, label, depth)
        elif isinstance(value, (type, types.ModuleType)) or _library(type(value)):
            return  # classes and modules are code; a library's objects hold no value of the user's
        elif depth >= 0 and id(value) not in self._seen and hasattr(value, "__dict__"):
            self._seen.add(id(value))
            self._attributes(value, label, depth)

    def _function(self, fn: types.FunctionType, label: str, depth: int) -> None:
        if _library(fn):
            return
        self._code(fn, label, depth)

    def _code(self, fn: types.FunctionType, label: str, depth: int) -> None:
        """The globals that ``fn``'s code (and the code nested in it) names, and its closure cells."""
        if depth < 0 or id(fn.__code__) in self._seen:
            return
        self._seen.add(id(fn.__code__))
        names, stack = set(), [fn.__code__]
        while stack:
            code = stack.pop()
            names.update(code.co_names)
            stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
        g = fn.__globals__
        for name in sorted(names):
            if name in g:
                self._value(g[name], f"global {name}", g, name, depth - 1)
        for var, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            self._value(value, f"{fn.__name__}'s closure variable {var}", _Cell(cell), None, depth - 1)
