"""The result of a log-marginal estimate: per-datapoint estimates and diagnostics, their dataset
means with standard errors, and a JSON-able summary for ``eval.json``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, NamedTuple, Optional

import torch

from vaezoo.evaluation.weights import summarize


class Estimate(NamedTuple):
    """A dataset mean and its standard error (std over the datapoints / sqrt(N))."""

    mean: float
    stderr: float

    def __str__(self):
        return f"{self.mean:.3f} ± {self.stderr:.3f}"


def mean_with_stderr(values: torch.Tensor) -> Estimate:
    """Mean of ``values  # [N]`` with the standard error std / sqrt(N) (NaN for N = 1). Each value
    carries its own Monte Carlo noise, so the spread, and the standard error, include it."""
    values = values.to(torch.float64)
    n = values.numel()
    se = values.std(unbiased=True).item() / math.sqrt(n) if n > 1 else math.nan
    return Estimate(values.mean().item(), se)


@dataclass
class LogMarginalResult:
    """Per-datapoint importance-sampling estimates, float64 tensors ``[N]`` on the CPU.

    Attributes:
        log_px: log p̂(x), the estimate of the log marginal likelihood (nats).
        elbo: the mean log-weight, an unbiased estimate of the ELBO.
        stderr: delta-method standard error of ``log_px`` (see :func:`~vaezoo.evaluation.weights.summarize`).
        ess: effective sample size (sum w)^2 / sum w^2, in [1, num_samples].
        khat: PSIS Pareto k-hat of the weights; above 0.7 the estimate is unreliable.
        iwae: ``{k: [N]}``, the IWAE-k bounds asked for (k = num_samples is ``log_px``).
        num_samples: K, the particles per datapoint.
        seed: the seed the particles were drawn from (``None`` when not a torch seed).
        wall_time: seconds the estimate took.
    """

    log_px: torch.Tensor
    elbo: torch.Tensor
    stderr: torch.Tensor
    ess: torch.Tensor
    khat: torch.Tensor
    iwae: Dict[int, torch.Tensor]
    num_samples: int
    seed: Optional[int] = None
    wall_time: float = math.nan
    extra: Dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_summaries(cls, parts, iwae_k, num_samples, **kwargs) -> "LogMarginalResult":
        """Joins the outputs of :func:`summarize` for consecutive data chunks."""
        cat = {name: torch.cat([p[name] for p in parts]) for name in parts[0]}
        return cls(
            log_px=cat["log_px"],
            elbo=cat["elbo"],
            stderr=cat["stderr"],
            ess=cat["ess"],
            khat=cat["khat"],
            iwae={k: cat[f"iwae/{k}"] for k in iwae_k},
            num_samples=num_samples,
            **kwargs,
        )

    @classmethod
    def from_log_weights(cls, log_w: torch.Tensor, iwae_k=(), **kwargs) -> "LogMarginalResult":
        """The result for log-weights ``log_w  # [K, N]`` held in memory."""
        iwae_k = tuple(iwae_k)
        return cls.from_summaries([summarize(log_w, iwae_k)], iwae_k, log_w.shape[0], **kwargs)

    @property
    def num_datapoints(self) -> int:
        return self.log_px.shape[0]

    @property
    def gap(self) -> torch.Tensor:
        """``log_px - elbo`` per datapoint: an estimate of KL(q(z | x) || p(z | x)), biased low at
        small K as log p̂(x) is."""
        return self.log_px - self.elbo

    @property
    def mean_log_px(self) -> Estimate:
        return mean_with_stderr(self.log_px)

    @property
    def mean_elbo(self) -> Estimate:
        return mean_with_stderr(self.elbo)

    @property
    def mean_gap(self) -> Estimate:
        return mean_with_stderr(self.gap)

    def mean_iwae(self, k: int) -> Estimate:
        return mean_with_stderr(self.iwae[k])

    def frac_khat_above(self, threshold: float = 0.7) -> float:
        """The share of datapoints whose k-hat exceeds ``threshold`` (NaN k-hats count as not above)."""
        return (self.khat > threshold).to(torch.float64).mean().item()

    def to_dict(self) -> dict:
        """A JSON-able summary (non-finite numbers become ``None``)."""

        def est(e: Estimate):
            return {"mean": _num(e.mean), "stderr": _num(e.stderr)}

        finite_khat = self.khat[torch.isfinite(self.khat)]
        return {
            "estimator": "importance_sampling",
            "num_samples": self.num_samples,
            "num_datapoints": self.num_datapoints,
            "seed": self.seed,
            "log_px": est(self.mean_log_px),
            "elbo": est(self.mean_elbo),
            "gap": est(self.mean_gap),
            "iwae": {str(k): est(self.mean_iwae(k)) for k in sorted(self.iwae)},
            "mean_stderr_log_px": _num(self.stderr.mean().item()),
            "ess": {
                "mean": _num(self.ess.mean().item()),
                "median": _num(self.ess.median().item()),
                "min": _num(self.ess.min().item()),
            },
            "khat": {
                "median": _num(finite_khat.median().item()) if finite_khat.numel() else None,
                "max": _num(self.khat.max().item()),
                "frac_above_0.5": self.frac_khat_above(0.5),
                "frac_above_0.7": self.frac_khat_above(0.7),
                "frac_above_1.0": self.frac_khat_above(1.0),
            },
            "wall_time_s": _num(self.wall_time),
            **self.extra,
        }


def _num(v):
    v = float(v)
    return v if math.isfinite(v) else None
