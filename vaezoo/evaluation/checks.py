"""Explicit input checks shared by the estimators, run before the pair is: the data, and the dtype of
the pair's parameters where they can be found. Errors raised inside the pair itself propagate."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from pyro.poutine.messenger import Messenger
from torch import nn

from vaezoo.arguments import check_positive_int, is_int  # noqa: F401  (the estimators import them here)
from vaezoo.errors import ConfigError, ShapeError
from vaezoo.traces import check_event_shape


def check_data(x, dtype: Optional[torch.dtype] = None, model=None) -> torch.Tensor:
    """``x`` as a detached float tensor ``[N, ...]`` with N >= 1, cast to ``dtype`` if given; of the
    ``model``'s data shape where it declares one (:func:`vaezoo.traces.check_event_shape`)."""
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"x is a {type(x).__name__}; expected a float tensor [N, ...] with N >= 1")
    if x.dim() == 0 or x.shape[0] == 0:
        raise ShapeError(f"x has shape {tuple(x.shape)}; expected a float tensor [N, ...] with N >= 1")
    if model is not None:
        check_event_shape(model, x, "x")
    if dtype is not None:
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ConfigError(f"dtype={dtype!r} is not a floating torch dtype; expected e.g. torch.float64")
        x = x.to(dtype)
    if not x.is_floating_point():
        raise ConfigError(f"x has dtype {x.dtype}; expected floating-point data (or pass dtype=)")
    return x.detach()


def check_module_dtypes(x: torch.Tensor, **fns: Optional[Callable]) -> None:
    """Raises ConfigError if a floating parameter or buffer of an ``nn.Module`` model or guide (or of
    the module a bound method belongs to) has another dtype than ``x``."""
    for role, fn in fns.items():
        module = fn if isinstance(fn, nn.Module) else getattr(fn, "__self__", None)
        if not isinstance(module, nn.Module):
            continue
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if t.is_floating_point() and t.dtype != x.dtype:
                raise ConfigError(
                    f"the {role}'s parameter {name!r} has dtype {t.dtype} but x has dtype {x.dtype}; expected "
                    "them to agree (call .to(dtype) on the model and guide, or pass dtype=)"
                )


class ParamDtypeCheck(Messenger):
    """Raises ConfigError at a ``pyro.param`` site (``pyro.module`` registers its parameters through
    them) whose floating value has another dtype than the data, before the pair uses it."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def _pyro_post_param(self, msg):
        value = msg["value"]
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != self.dtype:
            raise ConfigError(
                f"param site {msg['name']!r} has dtype {value.dtype} but x has dtype {self.dtype}; expected "
                "them to agree (call .to(dtype) on the model and guide, or pass dtype=)"
            )


positive_int = check_positive_int  # the estimators' name for it
