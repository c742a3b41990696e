"""The zoo: a registry of named model/guide pairs, each with one config dataclass, and the only
door to them, :func:`create` (the shape of timm's ``register_model``/``create_model``).

Adding an entry is one new file in ``vaezoo/entries/`` with one decorated builder::

    @zoo.register("my-vae", MyConfig, "one line saying what it is")
    def build(config: MyConfig, data_shape) -> tuple[PyroModule, PyroModule]:
        return model, guide

The registry imports ``vaezoo.entries`` (which imports every entry module) when it is first read,
so that importing a lower layer (``vaezoo.distributions``) loads no entry, and this module imports
no entry at import time, so the registry has no import cycle. The model and guide should be
``PyroModule``s (as ``VAEModel`` and the guides are), so that Pyro sees their networks.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import numbers
import typing
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from pyro.nn import PyroModule
from torch import nn

from vaezoo import traces
from vaezoo.errors import ConfigError, ShapeError, UnknownNameError
from vaezoo.inference.objectives import ELBO, IWAE, Objective


@dataclass(frozen=True)
class Entry:
    name: str
    config: type
    description: str
    build: Callable
    objective: Optional[Callable] = None  # (config, model, guide, compile) -> Objective, else ELBO/IWAE


_REGISTRY: Dict[str, Entry] = {}


def register(name: str, config: type, description: str, objective: Optional[Callable] = None):
    """Decorator registering ``build(config, data_shape) -> (model, guide)`` under ``name``.
    ``objective(config, model, guide, compile) -> Objective``, if given, builds the entry's training
    objective (a Lagrangian, ...); otherwise the config's ``objective`` field picks ELBO or IWAE."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"the config of {name!r} must be a dataclass")
    hints = typing.get_type_hints(config)
    for f in dataclasses.fields(config):
        if not _supported(hints[f.name]):
            raise TypeError(f"config field {f.name!r} of {name!r} has type {hints[f.name]}; make_config checks "
                            "int, float, bool, str, Optional of those and Tuple[X, ...]")
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise TypeError(f"config field {f.name!r} of {name!r} needs a default")

    def deco(build):
        if name in _REGISTRY:
            raise ValueError(f"zoo entry {name!r} is registered twice")
        _REGISTRY[name] = Entry(name, config, description, build, objective)
        return build

    return deco


def _load_entries() -> None:
    """Registers the zoo's own entries, once (an entry module imports this one to register)."""
    importlib.import_module("vaezoo.entries")


def names() -> list:
    """Every registered entry, sorted."""
    _load_entries()
    return sorted(_REGISTRY)


def entry(name: str) -> Entry:
    _load_entries()
    if name not in _REGISTRY:
        raise UnknownNameError(f"unknown model {name!r}; expected one of: {', '.join(names())}")
    return _REGISTRY[name]


def describe(name: str) -> str:
    return entry(name).description


# --------------------------------------------------------------------------------- configs
# The field types a config may use; each is checked (and converted) by :func:`make_config`.
_SCALARS = (int, float, bool, str)


def _optional_arg(tp):
    """``X`` for ``Optional[X]``, else None."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union and len(args) == 2 and type(None) in args:
        return next(a for a in args if a is not type(None))
    return None


def _is_tuple(tp) -> bool:
    args = typing.get_args(tp)
    return typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in _SCALARS


def _supported(tp) -> bool:
    inner = _optional_arg(tp)
    return tp in _SCALARS or _is_tuple(tp) or (inner is not None and _supported(inner))


def _expected(tp) -> str:
    inner = _optional_arg(tp)
    if inner is not None:
        return f"{_expected(inner)}, or None"
    if _is_tuple(tp):
        return {int: "a list of integers", float: "a list of finite numbers", bool: "a list of booleans",
                str: "a list of strings"}[typing.get_args(tp)[0]]
    return {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}[tp]


class _WrongType(Exception):
    pass


def _parse(value: str, tp):
    """Reads a string as ``--set`` gives it (``hidden=300,100``, ``binarize=none``) into ``tp``."""
    inner = _optional_arg(tp)
    if inner is not None:
        return None if value.strip().lower() in ("none", "null", "") else _parse(value, inner)
    if _is_tuple(tp):
        if not value.strip():
            return ()
        items = value.split(",")
        if any(not v.strip() for v in items):  # "300,,100" or "300,": a missing size, not (300, 100)
            raise _WrongType
        return tuple(_parse(v, typing.get_args(tp)[0]) for v in items)
    if tp is bool:
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise _WrongType
    if tp is str:
        return value
    try:
        return _convert(tp(value), tp)
    except ValueError:
        raise _WrongType from None


def _convert(value, tp):
    """``value`` as a ``tp`` (lists for tuples, integers for floats), or :class:`_WrongType`."""
    if isinstance(value, str) and tp is not str:
        return _parse(value, tp)
    inner = _optional_arg(tp)
    if inner is not None:
        return None if value is None else _convert(value, inner)
    if _is_tuple(tp):
        if not isinstance(value, (list, tuple)):
            raise _WrongType
        return tuple(_convert(v, typing.get_args(tp)[0]) for v in value)
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if tp is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:  # an int beyond the float range
            raise _WrongType from None
        if math.isfinite(value):
            return value
    if tp is str and isinstance(value, str):
        return value
    raise _WrongType


def fields(name: str) -> List[Tuple[str, str, Any]]:
    """The entry's config fields as ``(name, what it takes, default)``, in the dataclass's order:
    what ``--set key=value`` accepts (``vaezoo show NAME`` prints them)."""
    cls = entry(name).config
    hints = typing.get_type_hints(cls)
    default = cls()
    return [(f.name, _expected(hints[f.name]), getattr(default, f.name)) for f in dataclasses.fields(cls)]


def make_config(name: str, overrides: Optional[Dict[str, Any]] = None):
    """The entry's default config with ``overrides`` applied, each checked against the field's
    type hint (an int is an int, not a bool or 2.5; a float is finite; lists stand for tuples)
    and then against the config's ``validate()`` (ranges). A string given for a field that is not a
    string is read as ``--set`` reads it (``"3"``, ``"300,100"``, ``"none"``), so command-line,
    config.json and Python values mean the same. Any mistake is a one-line :class:`ConfigError`
    naming the field, the value and what was expected."""
    cls = entry(name).config
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in (overrides or {}).items():
        if key not in fields:
            raise ConfigError(f"{name!r} has no config field {key!r}; expected one of: {', '.join(sorted(fields))}")
        try:
            values[key] = _convert(value, hints[key])
        except _WrongType:
            raise ConfigError(f"{key}={value!r} is not valid for {name!r}; expected {_expected(hints[key])}") from None
    config = cls(**values)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


# --------------------------------------------------------------------------------- models
_created: Dict[str, int] = {}  # entry name -> number of models created in this process


def _pyro_name(name: str) -> str:
    """``name`` for the first model of an entry created in this process, then ``name#2``, ...:
    Pyro's param store is global and keyed by name, and two models sharing names would have the
    second one's param sites point at the first one's tensors (``pyro.module`` keeps a stored
    parameter), so that Pyro's SVI would step the wrong model."""
    _created[name] = _created.get(name, 0) + 1
    return name if _created[name] == 1 else f"{name}#{_created[name]}"


class ZooModel(PyroModule):
    """A created zoo entry: the Pyro program pair ``model``/``guide``, its ``config``, and
    conveniences that go through the contract only (so they work for every entry).

    A ``PyroModule`` named ``pyro_name`` (the entry's name, ``vae#2`` for the second ``vae`` of a
    process, ...) with ``model`` and ``guide`` as sub-``PyroModule``s: their networks enter Pyro's
    param store as ``{pyro_name}.model.decoder$$$net.0.weight``, ``{pyro_name}.guide.encoder$$$...``,
    distinct for every created model."""

    def __init__(self, name: str, config, data_shape: Tuple[int, ...], model: nn.Module, guide: nn.Module):
        pyro_name = _pyro_name(name)
        super().__init__(pyro_name)
        self.pyro_name = pyro_name
        self.name = name
        self.config = config
        self.data_shape = tuple(data_shape)
        self.model = model
        self.guide = guide
        if getattr(model, "data_shape", None) is None:  # what the Trainer and the estimators check data against
            model.data_shape = self.data_shape

    def objective(self, compile: bool = False) -> Objective:
        """The training objective: the entry's own (see :func:`register`), else the one the config
        names (``elbo`` or ``iwae``). Zoo entries have static structure, so ``compile=True`` runs
        their steps as compiled programs (see :class:`~vaezoo.inference.Objective`). Off by default,
        from ``bench/svi_throughput.py``: compiling costs ~20 s per batch shape on a 2-core CPU (an
        epoch with a smaller last batch has two) and makes a step of the Burda MLP 1.3-1.5x faster,
        so it pays back after 5,000-8,000 steps (12-17 MNIST epochs at batch 128); the conv nets
        gain 0-8% (their steps are convolutions, which inductor leaves to oneDNN); tests and
        smoke runs are faster eagerly. ``vaezoo train`` decides by the run's length instead (it
        compiles runs of at least ``cli.COMPILE_AUTO_STEPS`` steps, the main job included)."""
        build = entry(self.name).objective
        estimator = getattr(self.config, "estimator", "standard")
        weights = {"beta": getattr(self.config, "beta", 1.0), "mmd_weight": getattr(self.config, "mmd_weight", 0.0)}
        if build is not None:
            if estimator != "standard":
                raise ConfigError(f"{self.name!r} trains with its own objective, which takes no estimator={estimator!r}; "
                                  "expected estimator=standard")
            if weights != {"beta": 1.0, "mmd_weight": 0.0}:
                raise ConfigError(f"{self.name!r} trains with its own objective, which takes no beta={weights['beta']} "
                                  f"or mmd_weight={weights['mmd_weight']}; expected beta=1 and mmd_weight=0")
            return build(self.config, self.model, self.guide, compile)
        kind = getattr(self.config, "objective", "elbo")
        if kind == "elbo":
            return ELBO(self.model, self.guide, analytic_kl=getattr(self.config, "analytic_kl", True), compile=compile,
                        estimator=estimator, **weights)
        if kind == "iwae":
            return IWAE(self.model, self.guide, num_particles=getattr(self.config, "num_particles", 5), compile=compile,
                        estimator=estimator)
        raise ConfigError(f"unknown objective {kind!r}; expected elbo or iwae")

    def _template(self, n: int) -> torch.Tensor:
        p = next(self.parameters())
        return torch.zeros((n,) + self.data_shape, device=p.device, dtype=p.dtype)

    @torch.no_grad()
    def sample(self, n: int = 64) -> torch.Tensor:
        """Means E[x | z] of ``n`` draws z from the prior: ``[n, *data_shape]``."""
        return traces.record(self.model, self._template(n)).sites["x"]["fn"].mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z = mean of q(z | x)] for every latent site, for ``x  # [N, *data_shape]``: ``[N, *data_shape]``."""
        self.check_shape(x)
        guide_run = traces.record(self.guide, x)
        means = {name: s["fn"].mean for name, s in guide_run.sites.items() if not s["is_observed"]}
        return traces.record(self.model, x, replay=means).sites["x"]["fn"].mean

    def check_shape(self, x: torch.Tensor) -> None:
        """Raises :class:`ShapeError` unless ``x`` is ``[N, *data_shape]``."""
        if tuple(x.shape[1:]) != self.data_shape or x.dim() != len(self.data_shape) + 1:
            raise ShapeError(f"data of shape {tuple(x.shape)} given to {self.name!r}; expected [N, {', '.join(map(str, self.data_shape))}]")

    def check_data(self, x: torch.Tensor) -> None:
        """Shape and likelihood support of a data tensor (call before training on it)."""
        self.check_shape(x)
        likelihood = getattr(self.model, "likelihood", None)
        if likelihood is not None and hasattr(likelihood, "check_support"):
            likelihood.check_support(x)


def _check_data_shape(data_shape) -> Tuple[int, ...]:
    """``data_shape`` as a tuple of Python ints, or a one-line :class:`ShapeError`."""
    try:
        sizes = tuple(data_shape)
    except TypeError:
        sizes = None
    if (
        not sizes
        or isinstance(data_shape, str)
        or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in sizes)
    ):
        raise ShapeError(
            f"data_shape={data_shape!r} is not a data shape; expected a non-empty tuple of positive "
            "integers: (C, H, W) for images, (D,) for vectors, (T, D) for sequences"
        )
    return tuple(int(s) for s in sizes)


def create(name: str, data_shape: Sequence[int] = (1, 28, 28), **overrides) -> ZooModel:
    """Builds the entry ``name`` for datapoints of shape ``data_shape`` (``(C, H, W)`` images,
    ``(D,)`` vectors, ``(T, D)`` sequences: the pair takes ``x  # [B, *data_shape]``), with config
    ``overrides`` checked by :func:`make_config`."""
    e = entry(name)
    data_shape = _check_data_shape(data_shape)
    config = make_config(name, overrides)
    model, guide = e.build(config, data_shape)
    return ZooModel(name, config, data_shape, model, guide)


def config_dict(config) -> Dict[str, Any]:
    return dataclasses.asdict(config)
