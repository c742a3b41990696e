"""Atomic checkpoints: written to a temporary file in the same directory and renamed over the old
one, so a crash at any moment leaves either the previous checkpoint or the new one, never half.
Loading unpickles only what vaezoo itself saves (``weights_only``), so a checkpoint cannot run code."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from pyro.distributions import constraints as pyro_constraints
from torch.distributions import constraints as torch_constraints

from vaezoo.errors import CheckpointError, RunError
from vaezoo.fileio import atomic_writer
from vaezoo.inference.checkpoint_fields import validate

FORMAT = "vaezoo-checkpoint-1"

# What the Trainer's state_dict() holds beyond tensors and plain containers: the constraint objects
# of Pyro's param store (get_state()["constraints"]). Constraint classes only carry numbers,
# tensors and other constraints; the two that wrap functions (dependent ones) are left out.
SAFE_GLOBALS = sorted(
    {
        c
        for module in (torch_constraints, pyro_constraints)
        for c in vars(module).values()
        if isinstance(c, type)
        and issubclass(c, torch_constraints.Constraint)
        and not issubclass(c, (torch_constraints._Dependent, property))
    },
    key=lambda c: f"{c.__module__}.{c.__qualname__}",
)

def save(path, state: Dict[str, Any]) -> None:
    path = Path(path)
    state = dict(state, format=FORMAT)
    try:
        with atomic_writer(path) as f:
            torch.save(state, f)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise
        kept = f"the previous checkpoint {path} is kept unchanged" if path.exists() else "no checkpoint is kept"
        raise RunError(
            f"the disk is full: checkpoint {path} (epoch {state.get('epoch')}) could not be written and {kept}; "
            "expected free space for a checkpoint"
        ) from None


def load(path, map_location="cpu", objective: Optional[Mapping] = None, params: Optional[Sequence] = None,
         optimizer: Optional[Mapping] = None, model: str = "this model") -> Dict[str, Any]:
    """The checkpoint at ``path``, read without running code and checked whole by :func:`validate`
    (against ``objective``, a fresh objective's ``state_dict()``, ``params``, the shapes of the
    parameters the optimizer steps, and ``optimizer``, a fresh optimizer's, where given): a damaged one is a one-line :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; expected a file written by vaezoo train")
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        try:
            # a static read of the pickle: names what torch.load would refuse, without running it
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # not a zip, truncated: the load below says so
            unsafe = []
        if unsafe:
            raise CheckpointError(
                f"checkpoint {path} holds objects vaezoo never saves ({', '.join(unsafe[:3])}); refused to load it, "
                "since unpickling them could run code; expected a checkpoint written by vaezoo train"
            )
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # truncated zip, garbage bytes, refused pickles: all mean "not ours"
            raise CheckpointError(
                f"checkpoint {path} is corrupt or truncated ({type(e).__name__}); expected a vaezoo checkpoint"
            ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a vaezoo checkpoint (format {FORMAT!r} expected)")
    validate(state, path, objective=objective, params=params, optimizer=optimizer, model=model)
    return state


def rng_state(device: torch.device) -> Dict[str, Any]:
    """The default generators' states as a checkpoint holds them (CPU, and ``device`` if CUDA)."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Dict[str, Any], device: torch.device) -> None:
    """Restores :func:`rng_state`. The states are byte tensors that torch wants on the CPU, whatever
    ``torch.load(map_location=...)`` moved them to (a GPU run's resume)."""
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
