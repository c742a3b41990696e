"""A cache of decoded arrays, so that a dataset is decompressed, verified and parsed only once.

A cache file is an uncompressed ``.npz`` of the decoded arrays plus a *stamp* that names the source
files with their sizes and modification times; a cache whose stamp differs from the current one is
ignored (and rewritten). The first writable location of a list of candidates is used: the dataset's
own folder, else (for a read-only data directory) a folder under the per-user cache keyed by the
source folder's absolute path. If none is writable, nothing is cached.
"""

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from vaezoo.data.paths import atomic_writer, user_cache_dir

CACHE_VERSION = 1
STAMP_KEY = "__stamp__"


def stamp(paths):
    """A string that changes whenever one of the files ``paths`` is replaced or modified."""
    entries = []
    for path in paths:
        st = os.stat(path)
        entries.append([os.path.abspath(path), st.st_size, st.st_mtime_ns])
    return json.dumps({"version": CACHE_VERSION, "files": entries}, sort_keys=True)


def candidates(folder, key):
    """Where the cache ``key`` of the dataset folder ``folder`` may live, in order of preference."""
    folder = Path(folder).absolute()
    digest = hashlib.sha1(str(folder).encode()).hexdigest()[:16]
    return [
        folder / f".vaezoo-cache-{key}.npz",
        user_cache_dir() / "decoded" / f"{folder.name}-{digest}" / f"{key}.npz",
    ]


def load(paths, current_stamp):
    """The arrays of the first cache in ``paths`` whose stamp is ``current_stamp``, else ``None``."""
    for path in paths:
        try:
            with np.load(path, allow_pickle=False) as npz:
                if STAMP_KEY not in npz.files or str(npz[STAMP_KEY]) != current_stamp:
                    continue
                return {key: npz[key] for key in npz.files if key != STAMP_KEY}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            continue
    return None


def save(paths, current_stamp, arrays):
    """Write ``arrays`` with ``current_stamp`` atomically to the first writable path of ``paths``.

    Returns the path written, or ``None`` when no location is writable (caching is then skipped).
    """
    for path in paths:
        try:
            with atomic_writer(path) as f:
                np.savez(f, **arrays, **{STAMP_KEY: np.array(current_stamp)})
            return Path(path)
        except OSError:
            continue
    return None
