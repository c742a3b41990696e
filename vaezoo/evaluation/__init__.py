"""Per-datapoint estimators of log p(x) for model/guide pairs, their diagnostics and reports.

Every estimator takes ``(model, guide, x, ...)`` (``guide=None`` where the prior can be the
proposal) with ``seed``, ``progress`` and ``dtype`` keywords, and returns an
:class:`EstimatorResult` (``log_px``, ``stderr``, ``ess``, ``khat``, ``elbo``, ``to_dict()``).

Module names differ from the functions they define (``annealed.ais``, ``bidirectional.bdmc``): a
submodule named like a function would replace that function as an attribute of this package as
soon as it is imported.
"""

from vaezoo.evaluation.annealed import AISResult, AnnealingOptions, ais, annealing_schedule, reverse_ais
from vaezoo.evaluation.bidirectional import BDMCResult, bdmc, simulate
from vaezoo.evaluation.importance import log_marginal
from vaezoo.evaluation.quality import frechet_distance
from vaezoo.evaluation.result import Estimate, EstimatorResult, LogMarginalResult

__all__ = [
    "Estimate",
    "EstimatorResult",
    "LogMarginalResult",
    "AnnealingOptions",
    "log_marginal",
    "frechet_distance",
    "numpyro_log_marginal",
    "ais",
    "reverse_ais",
    "annealing_schedule",
    "AISResult",
    "bdmc",
    "simulate",
    "BDMCResult",
]


def __getattr__(name):
    # the NumPyro estimator needs the optional jax extra: imported only when asked for
    if name == "numpyro_log_marginal":
        from vaezoo.evaluation.numpyro_importance import numpyro_log_marginal

        return numpyro_log_marginal
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
