"""vaezoo: structured variational autoencoders as Pyro model/guide pairs, trained by SVI and
scored by per-datapoint estimators of log p(x)."""

__version__ = "0.1.0"

from vaezoo import errors  # noqa: F401,E402
