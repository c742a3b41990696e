"""User-facing errors: each carries a one-line message naming the bad value and what was expected.

The CLI prints ``str(err)`` of any :class:`VaezooError` and exits with status 2, without a traceback;
an operating system's refusal (:class:`OSError`) becomes one through :func:`from_os_error`.
"""

import errno
import os


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


class MemoryLimitError(VaezooError, MemoryError):
    """A setting whose memory does not fit the machine (refused before it runs, or out of memory)."""


class NonFiniteLossError(VaezooError, FloatingPointError):
    """Training produced a NaN or infinite loss."""


#: the longest name of one path component on the usual file systems (ext4, XFS, APFS, NTFS)
NAME_MAX = 255


def _shown_path(path) -> str:
    """``path``, with a component too long to show shortened to its start and its length."""
    parts = []
    for part in str(path).split(os.sep):
        size = len(os.fsencode(part))
        parts.append(part if size <= 60 else f"{part[:24]}...({size} bytes)")
    return os.sep.join(parts)


def from_os_error(e: OSError, path=None) -> "RunError":
    """The one place where an operating system's refusal becomes a user's error: one line naming
    the path (``e.filename`` unless ``path`` is given) and what was expected of it."""
    path = path if path is not None else (e.filename if e.filename is not None else "a file of the run")
    shown = _shown_path(path)
    code = e.errno
    if code == errno.ENAMETOOLONG:
        longest = max((len(os.fsencode(p)) for p in str(path).split(os.sep)), default=0)
        what = (f"has a name of {longest} bytes" if longest > NAME_MAX else f"is {len(os.fsencode(str(path)))} bytes long")
        return RunError(f"the path {shown} {what}, longer than the file system allows; expected names of at most "
                        f"{NAME_MAX} bytes")
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        # every file of a run is written atomically: what is on disk is complete, old or new
        return RunError(f"the disk is full ({path}); each file of the run is kept whole, in its previous version; "
                        "expected free space")
    if code in (errno.EACCES, errno.EPERM):
        return RunError(f"permission denied for {shown}; expected a path you may read and write")
    if code == errno.EROFS:
        return RunError(f"{shown} is on a read-only file system; expected a writable location")
    if code == errno.ENOENT:
        return RunError(f"{shown} does not exist; expected an existing path")
    if code == errno.ENOTDIR:
        return RunError(f"{shown} lies under a file; expected a directory path")
    if code == errno.EISDIR:
        return RunError(f"{shown} is a directory; expected a file")
    reason = e.strerror or type(e).__name__
    return RunError(f"cannot use {shown} ({reason}); expected a readable and writable path")
