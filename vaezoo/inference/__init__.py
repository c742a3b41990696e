"""Objectives as nn.Modules, the SVI trainer and checkpoints."""

from vaezoo.inference.adversarial import AAE, WAEMMD, LatentMatching
from vaezoo.inference.constrained import Constrained
from vaezoo.inference.mask_aae import MaskAAE
from vaezoo.inference.objectives import ELBO, IWAE, OBJECTIVES, Objective
from vaezoo.inference.trainer import Trainer, resolve_device, resolve_dtype

__all__ = [
    "Objective", "ELBO", "IWAE", "Constrained", "LatentMatching", "AAE", "WAEMMD", "MaskAAE", "OBJECTIVES",
    "Trainer", "resolve_device", "resolve_dtype",
]
