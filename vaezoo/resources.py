"""Memory: a setting that cannot fit is refused before training starts where that can be computed
(the parameters' bytes, the particles' outputs), and an allocator failure during training or
evaluation becomes one line naming the settings and the memory asked for."""

from __future__ import annotations

import contextlib
import math
import os
import re
from typing import Dict, Iterable, Optional, Sequence

import torch

from vaezoo import zoo
from vaezoo.errors import MemoryLimitError, VaezooError

# torch's allocator messages: "DefaultCPUAllocator: can't allocate memory: you tried to allocate
# 17179869184 bytes", "... not enough memory: you tried to allocate ...", "CUDA out of memory. Tried
# to allocate 20.00 GiB"
_ALLOCATOR = re.compile(r"can't allocate memory|not enough memory|out of memory", re.IGNORECASE)
_ASKED_BYTES = re.compile(r"tried to allocate (\d+) bytes", re.IGNORECASE)
_ASKED_UNITS = re.compile(r"tried to allocate ([\d.]+) ([KMGT]i?B)", re.IGNORECASE)
_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
#: bytes per parameter element while training with Adam: the weight, its gradient, two moments
TRAINING_COPIES = 4


def human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def available_memory(device: torch.device) -> Optional[int]:
    """The memory a run on ``device`` can use at most: the GPU's, or this machine's physical memory
    (None where it cannot be told)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        try:
            import psutil

            return int(psutil.virtual_memory().total)
        except ImportError:
            return None


def allocator_failure(e: BaseException):
    """``(True, bytes asked for or None)`` if ``e`` is an allocator's failure, else ``(False, None)``."""
    oom = getattr(torch, "OutOfMemoryError", None)
    if not (isinstance(e, MemoryError) or (oom is not None and isinstance(e, oom))
            or (isinstance(e, RuntimeError) and _ALLOCATOR.search(str(e)))):
        return False, None
    text = str(e)
    m = _ASKED_BYTES.search(text)
    if m:
        return True, int(m.group(1))
    m = _ASKED_UNITS.search(text)
    if m:
        return True, int(float(m.group(1)) * _UNITS[m.group(2)[0].upper()])
    return True, None


def changed_settings(name: str, config: Dict) -> Sequence[str]:
    """The numeric config fields of ``config`` that differ from the entry's defaults, ``k=v``:
    the settings a user chose, which an out-of-memory message names."""
    defaults = zoo.config_dict(zoo.make_config(name))
    out = []
    for key, value in config.items():
        numeric = isinstance(value, (int, float)) or (isinstance(value, (list, tuple)) and value and
                                                     all(isinstance(v, (int, float)) for v in value))
        if numeric and not isinstance(value, bool) and defaults.get(key) != value:
            shown = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
            out.append(f"{key}={shown}")
    return out


@contextlib.contextmanager
def memory_guard(doing: str, settings: Iterable[str], device: torch.device):
    """Turns an allocator failure inside the block into a one-line :class:`MemoryLimitError`
    naming what was being done, the ``settings`` and the memory asked for."""
    try:
        yield
    except VaezooError:
        raise
    except BaseException as e:
        failed, asked = allocator_failure(e)
        if not failed:
            raise
        have = available_memory(device)
        amount = f"another {human(asked)}" if asked is not None else "more memory"
        beyond = f" beyond {_where(device, have)}" if have else ""
        raise MemoryLimitError(
            f"out of memory while {doing} ({', '.join(settings)}): it asked for {amount}{beyond}; "
            "expected smaller settings (a smaller batch size, fewer particles or samples, narrower layers)"
        ) from None


def check_fits(name: str, config, data_shape: Sequence[int], batch_size: int, dtype: torch.dtype,
               device: torch.device) -> None:
    """Refuses, before anything is built for real, a model whose training needs more memory than
    ``device`` has: its parameters (built on the meta device, which allocates nothing) times
    :data:`TRAINING_COPIES`, and for an objective of ``num_particles`` particles the likelihood's
    outputs for every particle of a batch. An entry that cannot be built on the meta device is
    not checked here (an allocator failure is still one line, through :func:`memory_guard`)."""
    have = available_memory(device)
    if have is None:
        return
    item = torch.tensor([], dtype=dtype).element_size()
    try:
        with torch.device("meta"):
            model, guide = zoo.entry(name).build(config, tuple(data_shape))
        params = sum(p.numel() for module in (model, guide) for p in module.parameters())
    except Exception:  # an entry whose construction computes on its tensors
        return
    need = params * item * TRAINING_COPIES
    settings = ", ".join(changed_settings(name, zoo.config_dict(config))) or "the default config"
    if need > have:
        raise MemoryLimitError(
            f"{name} with {settings} has {params:,} parameters: training needs about {human(need)} "
            f"(weights, gradients and Adam's two moments), more than {_where(device, have)}; expected smaller layers"
        )
    particles = getattr(config, "num_particles", 1)
    if isinstance(particles, int) and particles > 1:
        outputs = particles * batch_size * math.prod(data_shape) * item
        if outputs > have:
            raise MemoryLimitError(
                f"{name} with num_particles={particles} and batch size {batch_size} needs at least {human(outputs)} "
                f"for the likelihood of every particle of a batch, more than {_where(device, have)}; "
                "expected fewer particles or a smaller batch size"
            )


def _where(device: torch.device, have: int) -> str:
    return f"the {human(have)} of the GPU" if device.type == "cuda" else f"the {human(have)} of this machine"
