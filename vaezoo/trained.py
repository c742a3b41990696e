"""A trained run in Python: ``vaezoo.load("runs/NAME")`` gives its model and guide with the trained
weights, its config, its learning curve and its evaluations, as ``timm.create_model(pretrained=True)``
or pythae's ``AutoModel.load_from_folder`` do for theirs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import torch

from vaezoo import runs, zoo
from vaezoo.errors import ConfigError


@dataclasses.dataclass
class TrainedRun:
    """A run directory, loaded (read only: it takes no lock and writes nothing).

    ``zoo_model`` is the entry (:class:`vaezoo.zoo.ZooModel`) with the checkpoint's weights, in eval
    mode; ``model`` and ``guide`` its Pyro programs, for ``evaluation.log_marginal(run.model,
    run.guide, x)`` or Pyro's own ``Predictive``; ``config`` the run's ``config.json``; ``metrics``
    one record per epoch trained (``metrics.jsonl``: ``train_loss``, ``test_elbo``, ...);
    ``evaluations`` the ``eval*.json`` files as ``(path, content)``."""

    path: Path
    zoo_model: zoo.ZooModel
    config: Dict[str, Any]
    metrics: List[Dict[str, Any]]
    epoch: int
    evaluations: List[Tuple[Path, Dict[str, Any]]]

    @property
    def model(self):
        return self.zoo_model.model

    @property
    def guide(self):
        return self.zoo_model.guide

    def test_data(self, data_dir: Union[str, Path, None] = None) -> torch.Tensor:
        """The run's test split under the evaluation protocol (one fixed, seeded binarization)."""
        return runs.load_split(self.config, "test", None if data_dir is None else str(data_dir)).data


#: ``which`` checkpoint of a run :func:`load` reads
CHECKPOINTS = {"last": runs.CHECKPOINT, "best": runs.BEST}


def load(run: Union[str, Path], device: Union[str, torch.device] = "cpu", dtype: torch.dtype = torch.float32,
         which: str = "last") -> TrainedRun:
    """Loads the run directory ``run`` (as ``vaezoo train`` wrote it) onto ``device``, from its last
    checkpoint (``which="last"``, ``checkpoint.pt``) or from the epoch of its best test ELBO
    (``which="best"``, ``best.pt``, written by ``vaezoo train --keep best``). ``epoch`` and
    ``metrics`` are then those of that checkpoint.

    Raises a one-line :class:`vaezoo.errors.VaezooError` for a directory that is not a run, a
    config or checkpoint that does not check out (as ``vaezoo evaluate`` would)."""
    from vaezoo.inference import resolve_device

    if which not in CHECKPOINTS:
        raise ConfigError(f"which={which!r} is not a checkpoint of a run; expected 'last' or 'best'")
    run = Path(run)
    device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    m, cfg, state = runs.load_trained(run, device, dtype, checkpoint=CHECKPOINTS[which])
    history = [dict(r) for r in state.get("history", [])]
    return TrainedRun(path=run, zoo_model=m, config=cfg, metrics=history, epoch=int(state.get("epoch", len(history))),
                      evaluations=runs.evaluations(run))
