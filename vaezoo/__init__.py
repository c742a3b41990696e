"""vaezoo: structured variational autoencoders as Pyro model/guide pairs, trained by SVI and
scored by per-datapoint estimators of log p(x)."""

import importlib

__version__ = "0.1.0"

from vaezoo import errors  # noqa: F401,E402

#: the subpackages ``vaezoo.NAME`` reaches without an import of its own (PEP 562): importing the
#: package loads none of them, so ``import vaezoo.distributions`` does not load the Trainer or the
#: compiler; the zoo's entries register themselves when the registry is first read
#: (:func:`vaezoo.zoo.names`, :func:`vaezoo.zoo.create`)
_SUBMODULES = {"cli", "data", "distributions", "entries", "evaluation", "fileio", "guards", "guides", "inference",
               "models", "nets", "particles", "runlock", "runs", "traces", "zoo", "capture", "trained"}


def load(run, device="cpu", dtype=None, which="last"):
    """A trained run directory in Python: model, guide, config, metrics, evaluations
    (:func:`vaezoo.trained.load`); ``which="best"`` loads the run's ``best.pt`` (``--keep best``)."""
    import torch

    # imported by name: the package sits below every layer and names none of them
    return importlib.import_module("vaezoo.trained").load(run, device, torch.float32 if dtype is None else dtype, which=which)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"vaezoo.{name}")
    raise AttributeError(f"module 'vaezoo' has no attribute {name!r}")
