"""The per-datapoint arrays of an importance-sampling evaluation (``eval-*.npz`` beside its
``eval-*.json``), so that models can be compared datapoint by datapoint (``vaezoo compare``)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Dict

import numpy as np

from vaezoo.errors import RunError
from vaezoo.fileio import atomic_write_bytes

FIELDS = ("log_px", "elbo", "khat", "stderr")


def write_per_datapoint(result, path) -> Path:
    """Writes ``result``'s per-datapoint ``log_px``, ``elbo``, ``khat`` and ``stderr`` (float64,
    ``[N]``, in the order of the data) to the ``.npz`` file ``path`` atomically; returns the path."""
    buffer = io.BytesIO()
    np.savez(buffer, **{name: getattr(result, name).detach().double().cpu().numpy() for name in FIELDS})
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def read_per_datapoint(path) -> Dict[str, np.ndarray]:
    """The arrays :func:`write_per_datapoint` wrote, or a one-line :class:`RunError`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {name: np.asarray(f[name], dtype=np.float64) for name in FIELDS}
    except FileNotFoundError:
        raise RunError(f"{path} not found; expected the per-datapoint arrays of vaezoo evaluate") from None
    except (OSError, ValueError, KeyError) as e:
        raise RunError(f"{path} is not an evaluation's arrays ({e}); expected a file written by vaezoo evaluate") from None
    return arrays
