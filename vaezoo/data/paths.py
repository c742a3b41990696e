"""Where datasets live (data and cache directories), and atomic writing of files there."""

import errno
import os
from pathlib import Path

from vaezoo import fileio

ENV_DATA_DIR = "VAEZOO_DATA_DIR"


def user_cache_dir():
    """The per-user cache directory: ``$XDG_CACHE_HOME/vaezoo``, else ``~/.cache/vaezoo``."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vaezoo"


def resolve_data_dir(data_dir=None):
    """The data directory: ``data_dir`` if given, else ``$VAEZOO_DATA_DIR``, else :func:`user_cache_dir`."""
    if data_dir is None or data_dir == "":
        data_dir = os.environ.get(ENV_DATA_DIR) or user_cache_dir()
    return Path(os.path.expanduser(os.fspath(data_dir))).absolute()


def is_writable_dir(path):
    """Whether files may be created in the folder ``path`` (or, if it does not exist, be created in it).

    Also for root, a folder whose permission bits grant no write access counts as read-only: a
    data directory made read-only with ``chmod a-w`` is never written to.
    """
    path = Path(path).absolute()
    while not path.exists():
        if path.parent == path:
            return False
        path = path.parent
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return path.is_dir() and bool(mode & 0o222) and os.access(path, os.W_OK | os.X_OK)


def atomic_writer(path):
    """:func:`vaezoo.fileio.atomic_writer`, refusing a folder whose permission bits forbid writes
    (root may write anywhere, but a shared read-only data folder must stay untouched)."""
    path = Path(path)
    if not is_writable_dir(path.parent):
        raise PermissionError(errno.EACCES, "folder is read-only", str(path.parent))
    return fileio.atomic_writer(path)
