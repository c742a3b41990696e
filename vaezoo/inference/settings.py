"""The Trainer's settings checked in one place, each a one-line ConfigError (the CLI calls the same
functions): optimizers, counts, rates, seeds, devices and dtypes."""

from __future__ import annotations

from typing import Callable, Union

import torch

from vaezoo.arguments import check_int, check_positive_float, check_positive_int  # noqa: F401  (re-exported)
from vaezoo.errors import ConfigError


OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}
#: optimizers that a compiled objective's run steps with their fused kernels
FUSED = ("adam", "adamw")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


# --------------------------------------------------------------------------------- argument checks
# One-line ConfigErrors for the Trainer's arguments; the CLI calls the same functions.


# check_int, check_positive_int, check_positive_float: vaezoo.arguments, imported above


def check_seed(value) -> int:
    """A seed for ``torch.manual_seed``/``pyro.set_rng_seed``: an int in [0, 2^32)."""
    return check_int("seed", value, minimum=0, maximum=2**32 - 1)


def check_optimizer(optimizer) -> Union[str, Callable]:
    """A name in :data:`OPTIMIZERS` or a callable ``params -> torch.optim.Optimizer``."""
    if callable(optimizer) or (isinstance(optimizer, str) and optimizer in OPTIMIZERS):
        return optimizer
    raise ConfigError(
        f"unknown optimizer {optimizer!r}; expected one of {', '.join(sorted(OPTIMIZERS))} "
        "or a callable params -> torch.optim.Optimizer"
    )


def resolve_device(device: Union[str, torch.device]) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (or such a
    ``torch.device``) -> a device this machine has."""
    expected = "expected auto, cpu or cuda[:N]"
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise ConfigError(f"device {device!r} is not a device name; {expected}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {device!r}; {expected}") from None
    if dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index not in (None, 0)):
        raise ConfigError(f"device {device!r} is not supported; {expected}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available here; expected auto or cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} does not exist; expected cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return dev


def resolve_dtype(dtype) -> torch.dtype:
    """``"float32"``/``"float64"`` or ``torch.float32``/``torch.float64`` -> the torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ConfigError(f"unsupported dtype {dtype!r}; expected float32 or float64")


# --------------------------------------------------------------------------------- data checks
