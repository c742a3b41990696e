"""Per-datapoint estimators of log p(x) for model/guide pairs, their diagnostics and reports."""

from vaezoo.evaluation.importance import log_marginal
from vaezoo.evaluation.result import Estimate, LogMarginalResult

__all__ = ["Estimate", "LogMarginalResult", "log_marginal", "numpyro_log_marginal", "ais", "reverse_ais", "bdmc"]

_LAZY = {
    # the NumPyro estimator needs the optional jax extra: imported only when asked for
    "numpyro_log_marginal": "vaezoo.evaluation.numpyro_importance",
    "ais": "vaezoo.evaluation.ais",
    "reverse_ais": "vaezoo.evaluation.ais",
    "AISResult": "vaezoo.evaluation.ais",
    "bdmc": "vaezoo.evaluation.bdmc",
    "BDMCResult": "vaezoo.evaluation.bdmc",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
