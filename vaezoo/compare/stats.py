"""The statistics of ``vaezoo compare``: means and standard deviations over seeds, and the paired
difference of log p(x) between an entry and the baseline with a 95% t-interval.

The paired difference (an entry e against the baseline b, over the same test points and seeds):
for each seed s, d_s = mean over the test points i of (log p_e,s(x_i) - log p_b,s(x_i)), where
e,s and b,s are the cells of seed s (the same test points, the same estimator settings). With
S >= 2 seeds the estimate is the mean of the d_s and its interval mean ± t(0.975, S - 1) sd(d_s) /
sqrt(S) (scipy.stats.t): the seed-to-seed variation of training, which is what a reader who retrains
meets. With one seed only the test points vary: the interval is mean ± t(0.975, N - 1) sd_i / sqrt(N)
over the N per-point differences, labelled "1 seed: test-point interval only" (it ignores the
variation between trainings, and is too narrow for a claim about the entries).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95
ONE_SEED = "1 seed: test-point interval only"


@dataclass(frozen=True)
class Summary:
    """Mean and standard deviation (ddof 1; None for one value) of a figure over seeds."""

    mean: Optional[float]
    sd: Optional[float]
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def over_seeds(values: Sequence[Optional[float]]) -> Summary:
    """:class:`Summary` of the finite ``values`` (one per seed; None and NaN are left out)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return Summary(None, None, 0)
    sd = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
    return Summary(float(np.mean(finite)), sd, len(finite))


@dataclass(frozen=True)
class PairedDifference:
    """The paired difference of log p(x), entry minus baseline (nats): its mean, the 95% interval
    ``[low, high]``, the per-seed means ``per_seed``, and how the interval was made (``method``)."""

    mean: float
    low: float
    high: float
    per_seed: Dict[int, float]
    method: str

    def to_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high,
                "per_seed": {str(k): v for k, v in self.per_seed.items()}, "method": self.method}


def t_interval(values: np.ndarray, level: float = LEVEL):
    """``(mean, low, high)``: the ``level`` Student-t interval of the mean of ``values``."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    mean = float(values.mean())
    if n < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half


def paired_difference(entry: Dict[int, np.ndarray], baseline: Dict[int, np.ndarray],
                      level: float = LEVEL) -> Optional[PairedDifference]:
    """The paired difference of per-datapoint log p(x), ``entry[seed]`` minus ``baseline[seed]``
    (arrays ``[N]`` over the same test points), over the seeds both have (see the module's
    docstring); None when they share no seed. Arrays of different lengths are a ValueError."""
    seeds = sorted(set(entry) & set(baseline))
    if not seeds:
        return None
    diffs = {}
    for s in seeds:
        a, b = np.asarray(entry[s], dtype=np.float64), np.asarray(baseline[s], dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"seed {s}: {a.shape[0]} test points against {b.shape[0]}; expected the same test set")
        diffs[s] = a - b
    per_seed = {s: float(d.mean()) for s, d in diffs.items()}
    if len(seeds) >= 2:
        mean, low, high = t_interval(np.array([per_seed[s] for s in seeds]), level)
        method = f"{len(seeds)} seeds: t-interval over seeds"
    else:
        mean, low, high = t_interval(diffs[seeds[0]], level)
        method = ONE_SEED
    return PairedDifference(mean, low, high, per_seed, method)


def paired_over_seeds(entry: Dict[int, float], baseline: Dict[int, float],
                      level: float = LEVEL) -> Optional[PairedDifference]:
    """The paired difference of a per-cell measure (one value per seed, such as a Frechet
    distance), ``entry[seed]`` minus ``baseline[seed]`` over the seeds both have: the ``level``
    t-interval over seeds (no interval from one seed); None when they share no seed."""
    seeds = sorted(set(entry) & set(baseline))
    if not seeds:
        return None
    per_seed = {s: float(entry[s]) - float(baseline[s]) for s in seeds}
    mean, low, high = t_interval(np.array([per_seed[s] for s in seeds]), level)
    method = f"{len(seeds)} seeds: t-interval over seeds" if len(seeds) >= 2 else ONE_SEED
    return PairedDifference(mean, low, high, per_seed, method)
