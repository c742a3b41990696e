"""Atomic file writes (a temporary file beside the target, then a rename), shared by every layer:
a crash at any moment leaves the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_writer(path):
    """Opens a temporary file beside ``path`` for binary writing; when the block exits without an
    exception the file is flushed to disk and renamed over ``path``, otherwise deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; others may read a shared folder
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_writer(path) as f:
        f.write(data)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def stale_parts(directory, name: str = "*"):
    """The temporary files :func:`atomic_writer` left in ``directory`` for ``name`` (all names by
    default) when its process was killed before the rename: ``.NAME.*.part``."""
    return sorted(p for p in Path(directory).glob(f".{name}.*.part") if p.is_file())


def remove_stale_parts(directory, name: str = "*") -> int:
    """Deletes :func:`stale_parts`; the caller must own ``directory`` (no other writer may be
    in the middle of an atomic write there). Returns how many were removed."""
    removed = 0
    for p in stale_parts(directory, name):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed += 1
    return removed


def is_part(path) -> bool:
    """Whether ``path`` is named like a temporary file of :func:`atomic_writer`."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(".part")
