"""The data a Trainer is given, checked once: a tensor (or a dataset holding one) of the pair's
event shape, and values in the support of the observed site (one line naming the first bad value)."""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import pyro
import torch

from vaezoo import traces
from vaezoo.errors import ConfigError, ShapeError, SupportError
from vaezoo.particles import check_observed


def _index(flat: int, shape) -> Tuple[int, ...]:
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), tuple(shape)))


def _first_bad(ok: torch.Tensor) -> Tuple[int, ...]:
    """The index of the first False of a boolean tensor."""
    return _index(int((~ok).flatten().nonzero()[0]), ok.shape)


def as_data(data, name: str = "data") -> Tuple[torch.Tensor, bool]:
    """A tensor ``[N, *event]``, a dataset with ``.data`` (and optionally ``.binarize``), or
    anything ``torch.as_tensor`` takes -> ``(tensor, dynamic)``, after the checks that need no
    model: a real-valued tensor with at least one datapoint, all of it finite, and within [0, 1]
    under dynamic binarization (which draws ``Bernoulli(x)``). Integer data are accepted (counts,
    0/1 pixels) and converted to the trainer's dtype later."""
    dynamic = False
    if isinstance(data, torch.Tensor):
        x = data
    elif isinstance(getattr(data, "data", None), torch.Tensor):
        x, dynamic = data.data, getattr(data, "binarize", None) == "dynamic"
    else:
        try:
            x = torch.as_tensor(data)
        except (TypeError, ValueError, RuntimeError):
            raise ConfigError(
                f"{name} of type {type(data).__name__} is not a tensor; expected a float tensor [N, ...] "
                "or a dataset with a .data tensor"
            ) from None
    if x.is_complex():
        raise ConfigError(f"{name} has dtype {x.dtype}; expected a real (float or integer) tensor")
    if x.dim() == 0 or x.shape[0] == 0:
        raise ShapeError(f"{name} of shape {tuple(x.shape)} holds no datapoints; expected a tensor [N, ...] with N >= 1")
    if x.dtype == torch.bool:
        return x, dynamic
    # one fused pass (min and max are NaN when any value is), ~50 times faster than isfinite on
    # MNIST; the offending index is looked for only when something is wrong
    lo, hi = (float(v) for v in x.aminmax())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        i = _first_bad(torch.isfinite(x))
        raise SupportError(f"{name}[{', '.join(map(str, i))}] is {float(x[i])}; expected finite values")
    if dynamic and not (lo >= 0 and hi <= 1):
        i = _first_bad((x >= 0) & (x <= 1))
        raise SupportError(
            f"{name}[{', '.join(map(str, i))}] is {float(x[i])}; dynamic binarization expects "
            "probabilities in [0, 1]"
        )
    return x, dynamic


def check_support(model: Callable, x: torch.Tensor, name: str = "data", full: Optional[torch.Tensor] = None) -> None:
    """Runs ``model(x)`` once (with Pyro's validation on) and checks every observed site's value
    against its distribution's support with :func:`vaezoo.particles.check_observed`, the check the
    estimators use: a :class:`SupportError` names the site, the first value outside the support and
    its datapoint. Where a site observes ``x`` itself under a support without tensor parameters (a
    Bernoulli's {0, 1}, a Beta's [0, 1]), the whole dataset ``full`` (of which ``x`` is the first
    datapoints) is checked too, in one elementwise pass. Exceptions from the model itself propagate
    (they are bugs in the model, not in the data)."""
    with pyro.validation_enabled(True), torch.no_grad():
        sites = traces.record(model, x).sites
    check_observed(sites, data=x, full=full, data_name=name)
