"""vaezoo: structured variational autoencoders as Pyro model/guide pairs, trained by SVI and
scored by per-datapoint estimators of log p(x)."""

__version__ = "0.1.0"

from vaezoo import errors  # noqa: F401,E402

# The package imports the zoo's entries (as timm's models/__init__.py does), so that they are
# registered whichever vaezoo module is imported first; vaezoo.zoo itself imports no entry.
from vaezoo import entries  # noqa: F401,E402
