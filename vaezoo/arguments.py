"""The argument checks every layer shares: one function per kind of value, one wording.

Each returns the value converted (``int``, ``float``) or raises a one-line :class:`ConfigError`
``"{name}={value!r}; expected ..."``: ``name`` is what the user wrote (a keyword argument, a config
field, a ``--flag``). Bools are refused where a number is expected (``True`` is an ``int`` to
Python, never to a user), and so are integral floats (``2.0`` epochs) and strings.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

from vaezoo.errors import ConfigError


def is_int(value) -> bool:
    """An integer that is not a bool (Python ints, NumPy integers: NumPy registers them as Integral)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def int_range(minimum: int, maximum: Optional[int] = None) -> str:
    """The words for the integers in ``[minimum, maximum]`` (no upper bound for ``None``)."""
    return f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"


def check_int(name: str, value, minimum: int = 0, maximum: Optional[int] = None) -> int:
    """``value`` as an int in ``[minimum, maximum]``."""
    if not is_int(value) or value < minimum or (maximum is not None and value > maximum):
        raise ConfigError(f"{name}={value!r}; expected {int_range(minimum, maximum)}")
    return int(value)


def check_positive_int(name: str, value) -> int:
    """``value`` as an int >= 1."""
    return check_int(name, value, minimum=1)


def is_real(value) -> bool:
    """A real number that is not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive_float(name: str, value) -> float:
    """``value`` as a finite float > 0."""
    if not is_real(value) or not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}={value!r}; expected a finite number > 0")
    return float(value)


def check_nonnegative_float(name: str, value) -> float:
    """``value`` as a finite float >= 0."""
    if not is_real(value) or not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name}={value!r}; expected a finite number >= 0")
    return float(value)
