"""The best epoch so far and the patience count of a run: what ``Trainer(keep="best", patience=N)``
watches, kept in the checkpoint (its ``"best"`` field) so that a resumed run stops at the epoch the
uninterrupted one would have stopped at."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

#: which checkpoints a run keeps (vaezoo.defaults.KEEP names the same for the command line)
KEEP = ("last", "best")


class EarlyStopping:
    """Watches the test ELBO of each epoch (higher is better) or, for an objective without one, the
    test loss (lower is better). ``patience`` None: it only records the best epoch."""

    def __init__(self, patience: Optional[int] = None):
        self.patience = patience
        self.reset()

    def reset(self) -> None:
        self.best_epoch: Optional[int] = None
        self.best_value: Optional[float] = None
        self.metric: Optional[str] = None  # "test_elbo" or "test_loss"
        self.since_best = 0  # epochs since the best one

    def update(self, epoch: int, record: Dict[str, Any]) -> bool:
        """Takes epoch ``epoch``'s ``record`` (adding ``best_epoch`` and ``best_test_elbo`` or
        ``best_test_loss`` to it); returns whether it is the best so far. A record without test
        figures (no test data) changes nothing."""
        metric = "test_elbo" if "test_elbo" in record else "test_loss" if "test_loss" in record else None
        if metric is None:
            return False
        value = float(record[metric])
        sign = 1.0 if metric == "test_elbo" else -1.0
        improved = math.isfinite(value) and (
            self.best_value is None or self.metric != metric or sign * value > sign * self.best_value
        )
        if improved:
            self.best_epoch, self.best_value, self.metric, self.since_best = epoch, value, metric, 0
        else:
            self.since_best += 1
        if self.best_epoch is not None:
            record["best_epoch"] = self.best_epoch
            record[f"best_{self.metric}"] = self.best_value
        return improved

    def reason(self, epoch: int) -> Optional[str]:
        """Why training stops after epoch ``epoch``, or None while it goes on."""
        if self.patience is None or self.best_epoch is None or self.since_best < self.patience:
            return None
        what = "test ELBO" if self.metric == "test_elbo" else "test loss"
        return (f"stopped early after epoch {epoch}: the {what} has not improved for {self.since_best} epochs "
                f"(--patience {self.patience}; best {self.best_value:.3f} at epoch {self.best_epoch})")

    def state_dict(self) -> Dict[str, Any]:
        return {"epoch": self.best_epoch, "value": self.best_value, "metric": self.metric, "since": self.since_best}

    def load_state_dict(self, state: Optional[Dict[str, Any]], history: List[Dict[str, Any]]) -> None:
        """Restores :meth:`state_dict`; a checkpoint without it (written before this field existed)
        is replayed from its per-epoch history, which gives the same state."""
        self.reset()
        if state is None:
            for record in history:
                self.update(int(record["epoch"]), dict(record))
            return
        self.best_epoch, self.best_value, self.metric = state["epoch"], state["value"], state["metric"]
        self.since_best = int(state["since"])
