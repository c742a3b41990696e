"""Atomic checkpoints: written to a temporary file in the same directory and renamed over the old
one, so a crash at any moment leaves either the previous checkpoint or the new one, never half."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict

import torch

from vaezoo.errors import CheckpointError

FORMAT = "vaezoo-checkpoint-1"


def atomic_write_bytes(path, write) -> None:
    """Calls ``write(file)`` on a temporary file beside ``path`` and renames it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def save(path, state: Dict[str, Any]) -> None:
    state = dict(state, format=FORMAT)
    atomic_write_bytes(path, lambda f: torch.save(state, f))


def load(path, map_location="cpu") -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; expected a file written by vaezoo train")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated zip, garbage bytes, unpickling errors: all mean "corrupt"
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}); expected a vaezoo checkpoint") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a vaezoo checkpoint (format {FORMAT!r} expected)")
    return state
