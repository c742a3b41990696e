"""Atomic checkpoints: written to a temporary file in the same directory and renamed over the old
one, so a crash at any moment leaves either the previous checkpoint or the new one, never half."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import torch

from vaezoo.fileio import atomic_writer
from vaezoo.errors import CheckpointError

FORMAT = "vaezoo-checkpoint-1"


def save(path, state: Dict[str, Any]) -> None:
    state = dict(state, format=FORMAT)
    with atomic_writer(path) as f:
        torch.save(state, f)


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
