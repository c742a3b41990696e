"""The result of a log-marginal estimate: per-datapoint estimates and diagnostics, their dataset
means with standard errors, and a JSON-able summary for ``eval.json``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Dict, NamedTuple, Optional

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


@dataclass(kw_only=True)
class EstimatorResult:
    """What every estimator of log p(x) returns: per-datapoint tensors ``[N]`` and a summary.

    Attributes:
        log_px: the estimate of log p(x) per datapoint (nats).
        stderr: its Monte Carlo standard error (delta method over the samples' weights; NaN for one
            sample). It measures the noise, not the bias of a short schedule or a poor proposal.
        ess: effective sample size of the weights, (sum w)^2 / sum w^2, in [1, num_samples].
        khat: PSIS Pareto k-hat of the weights (NaN with fewer than 21 samples); above 0.7 the
            estimate is unreliable.
        elbo: the mean log-weight where it estimates the ELBO (importance sampling), else None.
        num_samples: weights per datapoint (particles, or AIS chains).
        seed: the seed the run was drawn from (None when not a torch seed).
        wall_time: seconds the estimate took.
    """

    estimator: ClassVar[str] = "estimator"

    log_px: torch.Tensor
    stderr: torch.Tensor
    ess: torch.Tensor
    khat: torch.Tensor
    elbo: Optional[torch.Tensor] = None
    num_samples: int
    seed: Optional[int] = None
    wall_time: float = math.nan

    @property
    def num_datapoints(self) -> int:
        return self.log_px.shape[0]

    @property
    def mean_log_px(self) -> Estimate:
        return mean_with_stderr(self.log_px)

    @property
    def mean_elbo(self) -> Optional[Estimate]:
        return None if self.elbo is None else mean_with_stderr(self.elbo)

    def frac_khat_above(self, threshold: float = 0.7) -> float:
        """The share of datapoints whose k-hat exceeds ``threshold`` (NaN k-hats count as not above)."""
        return (self.khat > threshold).to(torch.float64).mean().item()

    def to_dict(self) -> dict:
        """A JSON-able summary (non-finite numbers become ``None``): the same keys for every
        estimator (``estimator``, ``num_samples``, ``num_datapoints``, ``seed``, ``log_px``,
        ``elbo``, ``mean_stderr_log_px``, ``ess``, ``khat``, ``wall_time_s``), then its own."""
        ess = self.ess.double()
        khat = self.khat.double()
        computed = khat[~torch.isnan(khat)]  # NaN: not computed (K < 21); +inf: weights too degenerate to fit
        out = {
            "estimator": self.estimator,
            "num_samples": self.num_samples,
            "num_datapoints": self.num_datapoints,
            "seed": self.seed,
            "log_px": _est(self.mean_log_px),
            "elbo": None if self.elbo is None else _est(self.mean_elbo),
            "mean_stderr_log_px": _num(torch.nanmean(self.stderr.double()).item()),
            "ess": {"mean": _num(ess.mean().item()), "median": _num(ess.median().item()), "min": _num(ess.min().item())},
            "khat": {
                "computed": bool(computed.numel()),
                "median": _num(computed.median().item()) if computed.numel() else None,
                "max": _num(khat.max().item()),
                "frac_above_0.5": self.frac_khat_above(0.5),
                "frac_above_0.7": self.frac_khat_above(0.7),
                "frac_above_1.0": self.frac_khat_above(1.0),
            },
            "wall_time_s": _num(self.wall_time),
        }
        out.update(self._own_dict())
        return out

    def _own_dict(self) -> dict:
        return {}


@dataclass(kw_only=True)
class LogMarginalResult(EstimatorResult):
    """Per-datapoint importance-sampling estimates, float64 tensors ``[N]`` on the CPU (see
    :class:`EstimatorResult`; ``elbo`` is the mean log-weight, an unbiased estimate of the ELBO).

    Attributes:
        iwae: ``{k: [N]}``, the IWAE-k bounds asked for (k = num_samples is ``log_px``).
        extra: further JSON-able entries for :meth:`to_dict`.
    """

    estimator: ClassVar[str] = "importance_sampling"

    elbo: torch.Tensor
    iwae: Dict[int, torch.Tensor] = field(default_factory=dict)
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
    def concatenate(cls, shards) -> "LogMarginalResult":
        """The whole result from the results of ``log_marginal(..., shard=(r, S))`` for r = 0..S-1
        (any order: each knows its first index); the wall time is the slowest shard's."""
        shards = sorted(shards, key=lambda r: r.extra["first_index"])
        first = shards[0]
        cat = lambda get: torch.cat([get(r) for r in shards])  # noqa: E731
        extra = {k: v for k, v in first.extra.items() if k != "first_index"}
        return cls(
            log_px=cat(lambda r: r.log_px), elbo=cat(lambda r: r.elbo), stderr=cat(lambda r: r.stderr),
            ess=cat(lambda r: r.ess), khat=cat(lambda r: r.khat),
            iwae={k: cat(lambda r: r.iwae[k]) for k in first.iwae},
            num_samples=first.num_samples, seed=first.seed, wall_time=max(r.wall_time for r in shards), extra=extra,
        )

    @classmethod
    def from_log_weights(cls, log_w: torch.Tensor, iwae_k=(), **kwargs) -> "LogMarginalResult":
        """The result for log-weights ``log_w  # [K, N]`` held in memory."""
        iwae_k = tuple(iwae_k)
        return cls.from_summaries([summarize(log_w, iwae_k)], iwae_k, log_w.shape[0], **kwargs)

    @property
    def gap(self) -> torch.Tensor:
        """``log_px - elbo`` per datapoint: an estimate of KL(q(z | x) || p(z | x)), biased low at
        small K as log p̂(x) is."""
        return self.log_px - self.elbo

    @property
    def mean_gap(self) -> Estimate:
        return mean_with_stderr(self.gap)

    def mean_iwae(self, k: int) -> Estimate:
        return mean_with_stderr(self.iwae[k])

    def _own_dict(self) -> dict:
        return {
            "gap": _est(self.mean_gap),
            "iwae": {str(k): _est(self.mean_iwae(k)) for k in sorted(self.iwae)},
            **self.extra,
        }


def _est(e: Estimate) -> dict:
    return {"mean": _num(e.mean), "stderr": _num(e.stderr)}


def _num(v):
    v = float(v)
    return v if math.isfinite(v) else None
