"""Learning-rate schedules and KL warm-up for the Trainer, chosen by name.

The learning rate of epoch ``e`` (counted from 0) is ``lr * warmup(e) * schedule(e)``:

- ``constant``: ``schedule(e) = 1``.
- ``burda``: the schedule of Burda, Grosse and Salakhutdinov (2016): stage ``i = 0, ..., 7`` lasts
  ``3^i`` epochs at ``10^(-i/7)`` times the base rate (theirs was 1e-3: ``--lr 1e-3``), 3280 epochs
  in all; epochs beyond stay at the last stage's rate.
- ``cosine``: ``schedule(e) = (1 + cos(pi e / E)) / 2`` over the run's ``E`` epochs: the full rate in
  the first epoch, decaying to 0 at the end of the last.
- ``warmup_epochs = W > 0``: ``warmup(e) = min(1, (e + 1) / W)``, a linear warm-up to the full rate
  in epoch ``W`` (it multiplies the schedule, which is not shifted).

They are ``torch.optim.lr_scheduler.LambdaLR`` schedulers stepped once an epoch, whose state the
Trainer's checkpoint holds: a resumed run continues the schedule exactly.

KL warm-up (``kl_warmup = W`` epochs, for the :class:`~vaezoo.inference.ELBO`): the KL term of the
loss is weighted by ``min(1, t / (W S))`` at step ``t`` (counted from 0 over the run, ``S`` steps an
epoch), linear from 0 to 1 over the first ``W`` epochs, set before every step into the objective's
``kl_weight`` buffer (an input of a compiled program, never a constant of it). The reported
``elbo`` term is always the unweighted bound.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Optional

import torch

from vaezoo.arguments import check_int
from vaezoo.errors import ConfigError

SCHEDULES = ("constant", "burda", "cosine")
#: Burda et al.'s number of stages (i = 0 .. 7) and their total length in epochs
BURDA_STAGES = 8
BURDA_EPOCHS = (3**BURDA_STAGES - 1) // 2  # 3280


def check_schedule(schedule) -> str:
    if not isinstance(schedule, str) or schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
    return schedule


def check_epochs(name: str, value) -> int:
    """A number of epochs >= 0 (warm-ups)."""
    return check_int(name, value, 0)


def burda_stage(epoch: int) -> int:
    """The stage ``i`` of Burda et al.'s schedule that epoch ``epoch`` (from 0) is in: stage ``i``
    spans epochs ``[(3^i - 1) / 2, (3^(i+1) - 1) / 2)``; the last stage goes on."""
    i = 0
    while i < BURDA_STAGES - 1 and epoch >= (3 ** (i + 1) - 1) // 2:
        i += 1
    return i


def factor(schedule: str, epochs: int, warmup_epochs: int = 0) -> Callable[[int], float]:
    """The multiplier ``e -> warmup(e) * schedule(e)`` of the base learning rate in epoch ``e``
    (from 0) of a run of ``epochs`` epochs (module docstring)."""
    check_schedule(schedule)

    def f(e: int) -> float:
        if schedule == "burda":
            value = 10 ** (-burda_stage(e) / 7)
        elif schedule == "cosine":
            value = 0.5 * (1 + math.cos(math.pi * min(e, epochs) / max(epochs, 1)))
        else:
            value = 1.0
        if warmup_epochs > 0:
            value *= min(1.0, (e + 1) / warmup_epochs)
        return value

    return f


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, epochs: int,
                   warmup_epochs: int = 0) -> Optional[torch.optim.lr_scheduler.LambdaLR]:
    """A ``LambdaLR`` with :func:`factor` (it sets epoch 0's rate now), or None for a constant rate
    without warm-up (the optimizer is left as it is)."""
    if schedule == "constant" and warmup_epochs == 0:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor(schedule, epochs, warmup_epochs))


def kl_weight(step: int, steps_per_epoch: int, kl_warmup: int) -> float:
    """The KL weight at step ``step`` (from 0 over the run): ``min(1, step / (kl_warmup * steps_per_epoch))``,
    1 without warm-up."""
    if kl_warmup <= 0:
        return 1.0
    return min(1.0, step / (kl_warmup * steps_per_epoch))


def step(scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """Steps ``scheduler`` to the next epoch. torch warns when the optimizer's own ``step`` has not
    run since: the Trainer's one-program step updates the parameters inside its program."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`")
        scheduler.step()
