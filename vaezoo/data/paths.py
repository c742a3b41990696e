"""Where datasets live (data and cache directories), and atomic writing of files there."""

import contextlib
import errno
import os
import tempfile
from pathlib import Path

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


@contextlib.contextmanager
def atomic_writer(path):
    """Open a temporary file beside ``path`` for binary writing; on success it replaces ``path``.

    Readers never see a partial file: the temporary file is renamed over ``path`` with
    :func:`os.replace` only when the block exits without an exception, and deleted otherwise.
    Raises :class:`OSError` when the folder cannot be created or written.
    """
    path = Path(path)
    if not is_writable_dir(path.parent):
        raise PermissionError(errno.EACCES, "folder is read-only", str(path.parent))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; others may read a shared data dir
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
