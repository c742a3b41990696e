"""Where datasets live: the data directory and the per-user cache directory."""

import os
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
