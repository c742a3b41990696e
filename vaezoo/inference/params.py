"""The param-store parameters of a plain-Pyro pair, found and cast by the Trainer's probing run."""

from __future__ import annotations

from typing import Dict

import pyro
import torch
from pyro.poutine.messenger import Messenger



class _RegisterParams(Messenger):
    """Around the probing run of a model/guide pair: moves each parameter the pair registers with
    Pyro's param store (``pyro.param``/``pyro.module``/``PyroModule``) to the trainer's device
    and dtype *before* its first use, and records it (``params``: name -> unconstrained tensor).

    Why before: a plain-function pair's networks are not submodules of the objective, so
    ``objective.to(dtype)`` cannot reach them, and the trainer learns of them only when the pair
    runs; cast afterwards, the first run would already mix float32 weights with float64 data.
    ``owned`` holds the ids of the objective's own parameters: a store entry under one of their
    names that is another tensor is a stale copy (an earlier model, an old checkpoint), and the
    module's own tensor replaces it.
    """

    def __init__(self, device: torch.device, dtype: torch.dtype, owned: set):
        super().__init__()
        self.device, self.dtype, self.owned = device, dtype, owned
        self.params: Dict[str, torch.Tensor] = {}

    def _cast_(self, t: torch.Tensor) -> None:
        """In place (``.data``), so that a module and the param store keep sharing the tensor."""
        dtype = self.dtype if t.is_floating_point() else t.dtype
        if t.device != self.device or t.dtype != dtype:
            with torch.no_grad():
                t.data = t.data.to(self.device, dtype)

    def _cast(self, t: torch.Tensor) -> torch.Tensor:
        dtype = self.dtype if t.is_floating_point() else t.dtype
        if t.device == self.device and t.dtype == dtype:
            return t
        return t.detach().to(self.device, dtype)  # a new leaf, as the store expects

    def _pyro_param(self, msg):
        store = pyro.get_param_store()
        name, init = msg["args"][0], (msg["args"][1] if len(msg["args"]) > 1 else None)
        if name in store:
            current = store[name].unconstrained()
            if isinstance(init, torch.Tensor) and id(init) in self.owned and current is not init:
                del store[name]
            else:
                self._cast_(current)
        if isinstance(init, torch.nn.Parameter):
            self._cast_(init)
        elif isinstance(init, torch.Tensor):
            msg["args"] = (name, self._cast(init))
        elif callable(init):
            msg["args"] = (name, lambda: self._cast(init()))

    def _pyro_post_param(self, msg):
        self.params[msg["name"]] = msg["value"].unconstrained()
