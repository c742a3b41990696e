"""Per-datapoint estimators of log p(x) for model/guide pairs, their diagnostics and reports."""

from vaezoo.evaluation.importance import log_marginal
from vaezoo.evaluation.result import Estimate, LogMarginalResult

__all__ = ["Estimate", "LogMarginalResult", "log_marginal", "numpyro_log_marginal"]


def __getattr__(name):
    # the NumPyro estimator needs the optional jax extra: import it only when asked for
    if name == "numpyro_log_marginal":
        from vaezoo.evaluation.numpyro_importance import numpyro_log_marginal

        return numpyro_log_marginal
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
