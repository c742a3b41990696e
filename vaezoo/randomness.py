"""The random streams a program draws from, forked and seeded in one way everywhere.

A check, a probe, a compiled program's capture or a picture draws random numbers that must not
shift the stream of the run around it: each does so inside :func:`rng_scope`, which restores the
CPU generator, and the device's when it is a GPU, on exit (``torch.random.fork_rng`` with the right
devices: without them it forks every visible GPU, and warns when there are several).
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def rng_scope(device: torch.device):
    """Restores the CPU generator (and ``device``'s, if a GPU) on exit, like ``torch.random.fork_rng``."""
    device = torch.device(device)
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        yield


def seed_device(seed: int, device: torch.device) -> None:
    """Seeds the generators a program running on ``device`` draws from: the CPU's, and the device's."""
    device = torch.device(device)
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)
    elif device.type != "cpu":
        torch.manual_seed(seed)
