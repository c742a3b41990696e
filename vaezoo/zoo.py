"""The zoo: a registry of named model/guide pairs, each with one config dataclass, and the only
door to them, :func:`create` (the shape of timm's ``register_model``/``create_model``).

Adding an entry is one new file in ``vaezoo/entries/`` with one decorated builder::

    @zoo.register("my-vae", MyConfig, "one line saying what it is")
    def build(config: MyConfig, data_shape) -> tuple[nn.Module, nn.Module]:
        return model, guide
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
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


_REGISTRY: Dict[str, Entry] = {}


def register(name: str, config: type, description: str):
    """Decorator registering ``build(config, data_shape) -> (model, guide)`` under ``name``."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"the config of {name!r} must be a dataclass")

    def deco(build):
        if name in _REGISTRY:
            raise ValueError(f"zoo entry {name!r} is registered twice")
        _REGISTRY[name] = Entry(name, config, description, build)
        return build

    return deco


def names() -> list:
    """Every registered entry, sorted."""
    return sorted(_REGISTRY)


def entry(name: str) -> Entry:
    if name not in _REGISTRY:
        raise UnknownNameError(f"unknown model {name!r}; expected one of: {', '.join(names())}")
    return _REGISTRY[name]


def describe(name: str) -> str:
    return entry(name).description


# --------------------------------------------------------------------------------- configs
def _parse(value: str, tp, key: str):
    """Parses a command-line string into a config field of type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:  # Optional[X]
        if value.lower() in ("none", "null", ""):
            return None
        return _parse(value, next(a for a in args if a is not type(None)), key)
    if origin in (tuple, Tuple):
        return tuple(_parse(v, args[0], key) for v in value.split(",") if v)
    if tp is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}={value!r} is not a boolean; expected true or false")
    try:
        return tp(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} is not a valid {tp.__name__}") from None


def make_config(name: str, overrides: Optional[Dict[str, Any]] = None):
    """The entry's default config with ``overrides`` applied; string values (from ``--set``) are
    parsed to the field's type. An unknown field is a :class:`ConfigError` naming the fields."""
    cls = entry(name).config
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in (overrides or {}).items():
        if key not in fields:
            raise ConfigError(f"{name!r} has no config field {key!r}; expected one of: {', '.join(sorted(fields))}")
        if isinstance(value, str) and hints[key] is not str:
            value = _parse(value, hints[key], key)
        elif isinstance(value, list):
            value = tuple(value)
        values[key] = value
    config = cls(**values)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


# --------------------------------------------------------------------------------- models
class ZooModel(nn.Module):
    """A created zoo entry: the Pyro program pair ``model``/``guide`` (nn.Modules), its ``config``,
    and conveniences that go through the contract only (so they work for every entry)."""

    def __init__(self, name: str, config, data_shape: Tuple[int, ...], model: nn.Module, guide: nn.Module):
        super().__init__()
        self.name = name
        self.config = config
        self.data_shape = tuple(data_shape)
        self.model = model
        self.guide = guide

    def objective(self, jit: bool = True) -> Objective:
        """The training objective the config names (``elbo`` or ``iwae``); zoo entries have static
        structure, so it is compiled with ``torch.jit.trace`` unless ``jit=False``."""
        kind = getattr(self.config, "objective", "elbo")
        if kind == "elbo":
            return ELBO(self.model, self.guide, analytic_kl=getattr(self.config, "analytic_kl", True), jit=jit)
        if kind == "iwae":
            return IWAE(self.model, self.guide, num_particles=getattr(self.config, "num_particles", 5), jit=jit)
        raise ConfigError(f"unknown objective {kind!r}; expected elbo or iwae")

    def _template(self, n: int) -> torch.Tensor:
        p = next(self.parameters())
        return torch.zeros((n,) + self.data_shape, device=p.device, dtype=p.dtype)

    @torch.no_grad()
    def sample(self, n: int = 64) -> torch.Tensor:
        """Mean images E[x | z] of ``n`` draws z from the prior: ``[n, C, H, W]``."""
        return traces.record(self.model, self._template(n)).sites["x"]["fn"].mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z = mean of q(z | x)] for every latent site: ``[N, C, H, W]``."""
        self.check_shape(x)
        guide_run = traces.record(self.guide, x)
        means = {name: s["fn"].mean for name, s in guide_run.sites.items() if not s["is_observed"]}
        return traces.record(self.model, x, replay=means).sites["x"]["fn"].mean

    def check_shape(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.data_shape or x.dim() != len(self.data_shape) + 1:
            raise ShapeError(f"data of shape {tuple(x.shape)} given to {self.name!r}; expected [N, {', '.join(map(str, self.data_shape))}]")

    def check_data(self, x: torch.Tensor) -> None:
        """Shape and likelihood support of a data tensor (call before training on it)."""
        self.check_shape(x)
        likelihood = getattr(self.model, "likelihood", None)
        if likelihood is not None and hasattr(likelihood, "check_support"):
            likelihood.check_support(x)


def create(name: str, data_shape: Sequence[int] = (1, 28, 28), **overrides) -> ZooModel:
    """Builds the entry ``name`` for data of shape ``(C, H, W)``, with config ``overrides``."""
    e = entry(name)
    data_shape = tuple(int(s) for s in data_shape)
    if len(data_shape) != 3 or min(data_shape) < 1:
        raise ShapeError(f"data_shape {data_shape} is not an image shape; expected (C, H, W)")
    config = make_config(name, overrides)
    model, guide = e.build(config, data_shape)
    return ZooModel(name, config, data_shape, model, guide)


def config_dict(config) -> Dict[str, Any]:
    return dataclasses.asdict(config)
