"""Per-datapoint statistics of importance log-weights: log p(x), the ELBO, IWAE-k bounds, the
effective sample size, the delta-method standard error and the PSIS Pareto k-hat."""

from __future__ import annotations

import math
import warnings
from typing import Dict, Iterable

import numpy as np
import torch

# PSIS fits a generalized Pareto to the largest ceil(min(K / 5, 3 sqrt(K))) weights and needs at
# least 5 of them (Vehtari et al. 2024), which takes K >= 21.
MIN_PSIS_SAMPLES = 21


def summarize(log_w: torch.Tensor, iwae_k: Iterable[int] = ()) -> Dict[str, torch.Tensor]:
    """Statistics of the log-weights ``log_w  # [K, N]``, log w_k = log p(x, z_k) - log q(z_k | x)
    with z_k ~ q(z | x), each a float64 tensor ``[N]`` on the CPU:

    - ``log_px``: log p̂(x) = log (1/K) sum_k w_k, the importance-sampling estimate (it is also the
      IWAE-K bound of Burda et al. 2016, a lower bound of log p(x) in expectation);
    - ``elbo``: (1/K) sum_k log w_k, an unbiased estimate of the ELBO, so that
      ``log_px - elbo`` estimates KL(q(z | x) || p(z | x)) as K grows;
    - ``ess``: (sum_k w_k)^2 / sum_k w_k^2, in [1, K];
    - ``stderr``: the delta-method standard error of log p̂(x). With p̂ = mean(w) and s^2 the unbiased
      sample variance of the w_k, Var(log p̂) ≈ Var(p̂) / p^2 ≈ s^2 / (K mean(w)^2), which in terms of
      the ESS is (K / ESS - 1) / (K - 1). NaN for K = 1. It trusts the sample variance, which
      understates the error when k-hat > 0.7 (the variance of the weights may then be infinite);
    - ``khat``: the Pareto k-hat of the weights from ArviZ's ``psislw`` (NaN for K < 21);
    - ``iwae/<k>`` for each k in ``iwae_k``: the IWAE-k bound estimated without bias from the
      floor(K / k) disjoint groups of k consecutive particles, mean_g log (1/k) sum_{k in g} w_k.
    """
    log_w = log_w.detach().to(torch.float64)
    K = log_w.shape[0]
    ess, stderr = ess_and_stderr(log_w)
    out = {
        "log_px": torch.logsumexp(log_w, 0) - math.log(K),
        "elbo": log_w.mean(0),
        "ess": ess,
        "stderr": stderr,
    }
    for k in iwae_k:
        groups = K // k
        grouped = log_w[: groups * k].reshape(groups, k, -1)
        out[f"iwae/{k}"] = (torch.logsumexp(grouped, 1) - math.log(k)).mean(0)
    out = {name: value.cpu() for name, value in out.items()}
    out["khat"] = pareto_khat(log_w)
    return out


def ess_and_stderr(log_w: torch.Tensor):
    """The effective sample size (sum_k w_k)^2 / sum_k w_k^2 in [1, K] and the delta-method
    standard error of log mean_k w_k, sqrt((K / ESS - 1) / (K - 1)) (NaN for K = 1), of the
    log-weights ``log_w  # [K, N]``, each ``[N]``: the one place the importance sampler and AIS's
    chains get them (see :func:`summarize`)."""
    K = log_w.shape[0]
    ess = torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))
    if K > 1:
        stderr = ((K / ess - 1).clamp(min=0.0) / (K - 1)).sqrt()
    else:
        stderr = torch.full_like(ess, math.nan)
    return ess.clamp(1.0, float(K)), stderr  # rounding can leave the ESS a hair outside [1, K]


def pareto_khat(log_w: torch.Tensor) -> torch.Tensor:
    """ArviZ's PSIS k-hat of the log-weights ``log_w  # [K, N]``, one per datapoint (``[N]``; NaN
    when K < 21, too few weights for the tail fit)."""
    K, N = log_w.shape
    if K < MIN_PSIS_SAMPLES or N == 0:
        return torch.full((N,), math.nan, dtype=torch.float64)
    az = _arviz()
    lw = log_w.detach().to(torch.float64).T.contiguous().cpu().numpy()  # [N, K]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        _, khat = az.psislw(lw)
    khat = np.asarray(khat, dtype=np.float64).reshape(N)
    return torch.from_numpy(khat.copy())


def _arviz():
    # ArviZ takes seconds to import and warns about its refactor on import: load it on first use
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz

    return arviz
