"""What the command-line commands share: checked integer flags, the device, the threads, the run's
lock. It imports torch only inside the functions that need it, so that ``vaezoo --help`` stays fast."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional

from vaezoo import runlock
from vaezoo.defaults import DEFAULT_EPOCHS, MAX_SAMPLES  # noqa: F401  (the commands read them here)
from vaezoo.arguments import check_int
from vaezoo.errors import ConfigError, RunError, from_os_error

if TYPE_CHECKING:
    import torch


def overrides(pairs: Optional[List[str]]) -> Dict[str, str]:
    """``--set key=value`` pairs as a dict."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r} is not key=value")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def count(value: Optional[int], flag: str, minimum: int, default: Optional[int] = None, maximum: Optional[int] = None):
    """``value`` of an integer flag (``default`` if not given) checked against its range."""
    return default if value is None else check_int(flag, value, minimum, maximum)


def seed(value: int) -> int:
    from vaezoo import runs

    return runs.TRAIN_CHECKS["seed"](value, "--seed")


def threads(value: Optional[int]) -> None:
    """``--threads N``: torch's intra-op threads for this command (``torch.set_num_threads``); None
    keeps torch's default (the cores, or ``OMP_NUM_THREADS`` when set)."""
    if value is None:
        return
    check_int("--threads", value, 1)
    import torch

    torch.set_num_threads(value)


def device(text: Optional[str]) -> "torch.device":
    import torch

    from vaezoo.inference import resolve_device

    text = "auto" if text is None else text
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise ConfigError(f"--device {text!r} is not supported; expected auto, cpu or cuda[:N]")
    device = resolve_device(text)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {text} names a GPU that is not here; expected cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


@contextlib.contextmanager
def owning(run: Path, command: str, create: bool):
    """Holds ``run``'s lock (rank 0 takes it for a process group) while the block runs."""
    from vaezoo.inference import distributed

    with contextlib.ExitStack() as stack:
        error = None
        if distributed.rank() == 0:
            try:
                stack.enter_context(runlock.RunLock(run, f"vaezoo {command}", create=create))
            except RunError as e:
                error = str(e)
        error = distributed.gather_objects(error)[0]  # every process stops if rank 0 has no lock
        if error is not None:
            raise RunError(error)
        yield


def write_error(path: Path, e: OSError) -> RunError:
    return from_os_error(e, path)
