"""User-facing errors: each carries a one-line message naming the bad value and what was expected.

The CLI prints ``str(err)`` of any :class:`VaezooError` and exits with status 2, without a traceback.
"""


class VaezooError(Exception):
    """Base class of every error caused by a user's input rather than a bug in vaezoo."""


class UnknownNameError(VaezooError, KeyError):
    """An unknown zoo entry, dataset or option name."""

    def __str__(self):  # KeyError would quote the message
        return self.args[0] if self.args else ""


class ConfigError(VaezooError, ValueError):
    """A configuration value of the wrong type or outside its range."""


class ShapeError(VaezooError, ValueError):
    """A tensor of the wrong shape (data, latents, parameters)."""


class SupportError(VaezooError, ValueError):
    """Data outside the support of a likelihood (e.g. non-binary data under a Bernoulli)."""


class SiteError(VaezooError, ValueError):
    """A model and a guide that do not agree on their latent sites."""


class DataError(VaezooError, OSError):
    """A dataset that is missing, cannot be downloaded, or fails its checksum."""


class MissingDependencyError(VaezooError, ImportError):
    """An optional dependency (one of vaezoo's pip extras) that is not installed."""


class RunError(VaezooError, OSError):
    """A run directory that does not exist or does not hold what was expected."""


class CheckpointError(VaezooError, ValueError):
    """A checkpoint that is corrupt, truncated, or from another model."""


class NonFiniteLossError(VaezooError, FloatingPointError):
    """Training produced a NaN or infinite loss."""
