"""Seeds for blocks of particles, so that an estimate depends on its seed and not on how the work is
chunked, and an RNG scope that leaves the caller's random stream as it was."""

from __future__ import annotations

import numbers

import torch

from vaezoo.errors import ConfigError
from vaezoo.randomness import rng_scope, seed_device  # noqa: F401  (the estimators import them here)

_MASK64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    # Steele, Lea and Flood (2014): a bijective mixer whose every output bit depends on every input
    # bit; torch's CPU generator keeps only the low 32 bits of a seed, so these must be well mixed.
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def block_seed(seed: int, *indices: int) -> int:
    """A 63-bit seed for the block at ``indices`` of a run seeded with ``seed``."""
    h = _splitmix64(seed & _MASK64)
    for i in indices:
        h = _splitmix64(h ^ (i & _MASK64))
    return h >> 1


def draw_seed() -> int:
    """A fresh seed from torch's global generator, for runs not given one: the global stream then
    fixes the run, as ``torch.manual_seed`` users expect."""
    return int(torch.randint(0, 2**62, (), dtype=torch.int64))


def resolve_seed(seed) -> int:
    """``seed`` as an int, or a fresh one from :func:`draw_seed` for ``None``."""
    if seed is None:
        return draw_seed()
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return int(seed)
    raise ConfigError(f"seed={seed!r} is not an integer; expected an int or None")
