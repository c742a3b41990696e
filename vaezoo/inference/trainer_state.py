"""The Trainer's checkpoint: what :class:`~vaezoo.inference.trainer.Trainer` saves each epoch
(``checkpoint.pt``, and ``best.pt`` with ``keep="best"``) and how it restores it, exactly."""

from __future__ import annotations

import json
import warnings
from typing import Any, Dict

import pyro
import torch

from vaezoo.errors import CheckpointError
from vaezoo.fileio import atomic_write_text
from vaezoo.inference import checkpoint as ckpt
from vaezoo.inference import distributed
from vaezoo.inference.checkpoint import rng_state as _rng_state, set_rng_state as _set_rng_state


class TrainerState:
    """The state_dict/load_state_dict/save half of the Trainer (it reads the Trainer's attributes)."""

    def state_dict(self) -> Dict[str, Any]:
        """The checkpoint. In a process group, every process must call it (it gathers the random
        number states of all processes, for an exact resume with the same number of processes).

        ``param_store`` holds, in the format of Pyro's ``ParamStoreDict.get_state``, only the
        param-store entries that are not parameters of the objective (those are in ``objective``)."""
        rng = distributed.gather_objects(_rng_state(self.device))
        constraints_ = pyro.get_param_store().get_state()["constraints"]
        state = {
            "objective": self.objective.state_dict(),
            "param_store": {
                "params": {n: t.detach() for n, t in self._store_params.items()},
                "constraints": {n: constraints_[n] for n in self._store_params if n in constraints_},
            },
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "rng": rng[0],
            "metadata": self.metadata,
        }
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        state["best"] = self.stopping.state_dict()
        if len(rng) > 1:
            state["rng_ranks"] = rng
        return state

    def load_state_dict(self, state: Dict[str, Any], path="checkpoint") -> None:
        """Restores a :meth:`state_dict` after :meth:`fit`'s set-up, in place: the param store keeps
        holding the very tensors the modules and the optimizer use."""
        meta = state.get("metadata", {})
        # every setting both record (another model, optimizer or rate would continue silently);
        # not "config", where a field added to an entry since the run started reads as its default:
        # the command line checks it with the defaults filled in
        for key in sorted(set(self.metadata) & set(meta) - {"config"}, key=lambda k: (k != "model", str(k))):
            if meta[key] != self.metadata[key]:
                raise CheckpointError(
                    f"{path} is a checkpoint of {key} {meta[key]!r}, not {self.metadata[key]!r}; "
                    f"expected a checkpoint of the same {key}"
                )
        saved = state.get("param_store", {}).get("params", {})
        unknown = [n for n in saved if n not in self._store_params and n not in self._owned_names]
        missing = [n for n in self._store_params if n not in saved]
        if unknown or missing:
            what = f"holds a Pyro parameter {unknown[0]!r} that this model does not register" if unknown else f"lacks the Pyro parameter {missing[0]!r}"
            raise CheckpointError(f"{path} {what}; expected a checkpoint of the same model and config")
        try:
            self.objective.load_state_dict(state["objective"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None:
                if "scheduler" not in state:
                    raise KeyError("the checkpoint has no learning-rate schedule")
                self.scheduler.load_state_dict(state["scheduler"])
            with torch.no_grad():
                for name, target in self._store_params.items():
                    target.copy_(saved[name])  # older checkpoints' entries of owned names: in "objective"
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0]
            raise CheckpointError(f"{path} does not fit this model ({first}); expected a checkpoint of the same model and config") from None
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.stopping.load_state_dict(state.get("best"), self.history)
        ranks = state.get("rng_ranks", [state["rng"]])
        if len(ranks) == distributed.world_size():
            _set_rng_state(ranks[distributed.rank()], self.device)
        else:  # another number of processes than the run had: fresh streams, no longer exact
            warnings.warn(f"{path} was written by {len(ranks)} process(es) and is resumed by {distributed.world_size()}: "
                          "training continues, but not as the uninterrupted run would have (fresh random streams)")
            pyro.set_rng_seed(self._rank_seed(self.seed * 1_000_003 + self.epoch))

    @staticmethod
    def _rank_seed(seed: int) -> int:
        """This process's seed: ``seed`` itself on rank 0 (a single process), distinct elsewhere."""
        return (seed + 7_919 * distributed.rank()) % 2**32

    @staticmethod
    def _eval_seed(seed: int) -> int:
        """The seed of the per-epoch test evaluation, apart from the training seeds and the same on
        every rank (a test set too small to share is evaluated whole by each: the same figure)."""
        return (seed + 2**31 + 104_729) % 2**32

    def _save(self, best: bool = False) -> None:
        """Writes checkpoint.pt and metrics.jsonl; with ``best``, best.pt first (a crash between the
        two leaves a checkpoint.pt whose best epoch is the one best.pt holds, or an older one that
        the resumed run rewrites)."""
        if self.out is None:
            return
        state = self.state_dict()  # a collective: every process takes part
        if distributed.rank() == 0:
            if best:
                ckpt.save(self.best_path, state)
            ckpt.save(self.checkpoint_path, state)
            self._saved = True
            lines = "".join(json.dumps(r) + "\n" for r in self.history)
            atomic_write_text(self.out / "metrics.jsonl", lines)
        distributed.barrier()  # nobody reads the run directory before it is complete
