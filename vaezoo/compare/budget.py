"""What a longer budget changed: the same comparison (entries, seeds, test points, estimator
settings) at two budgets, read from the two leaderboards.

A second convergence criterion beside :func:`vaezoo.compare.measures.convergence`'s rise over the
last tenth. Under a cosine schedule the last tenth runs at a few percent of the peak rate, so a flat
tail says a run settled at its budget, not that more epochs would not help; the same cells trained
longer say that. Pairing is by seed. For every entry both leaderboards have: the change, longer
minus shorter, of each cell's final test ELBO, log p(x) and sample Frechet distance, and of the
entry's difference from the baseline in log p(x) and sample FD (what a verdict reads), each as a
:func:`vaezoo.compare.stats.t_interval` over the seeds with the per-seed values.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from vaezoo.compare.stats import t_interval
from vaezoo.errors import ConfigError


def _final_elbo(cell: dict) -> Optional[float]:
    curve = cell.get("curve") or []
    return float(curve[-1][1]) if curve else None


def _sample_fd(cell: dict) -> Optional[float]:
    return (cell.get("fid") or {}).get("samples")


#: the per-cell figures whose change is reported, by name
MEASURES: Dict[str, Callable[[dict], Optional[float]]] = {
    "test_elbo": _final_elbo, "log_px": lambda c: c.get("log_px"), "fd_samples": _sample_fd}
#: the figures whose difference from the baseline is followed across budgets
VERSUS_BASELINE = ("log_px", "fd_samples")


def _cells(board: dict) -> Dict[str, Dict[int, dict]]:
    """``{entry: {seed: cell}}`` of the cells that finished."""
    out: Dict[str, Dict[int, dict]] = {}
    for c in board["cells"]:
        if c.get("status") == "ok":
            out.setdefault(c["entry"], {})[int(c["seed"])] = c
    return out


def _summary(values: Dict[int, float]) -> Optional[dict]:
    if not values:
        return None
    mean, low, high = t_interval(np.asarray(list(values.values())))
    return {"mean": mean, "low": low, "high": high, "per_seed": values}


def shown(summary: Optional[dict]) -> str:
    """A summary as a table cell: ``mean [low, high] (per seed)``, or ``mean (per seed)`` without an
    interval, or ``-``."""
    if summary is None:
        return "-"
    per = ", ".join(f"{v:+.2f}" for v in summary["per_seed"].values())
    if math.isnan(summary["low"]):
        return f"{summary['mean']:+.2f} ({per})"
    return f"{summary['mean']:+.2f} [{summary['low']:+.2f}, {summary['high']:+.2f}] ({per})"


def _change(short: Dict[int, Any], long: Dict[int, Any], figure) -> Optional[dict]:
    """The change, longer minus shorter, of ``figure`` of each seed's item, summarized over the seeds."""
    per_seed = {}
    for s in sorted(set(short) & set(long)):
        a, b = figure(short[s]), figure(long[s])
        if a is not None and b is not None:
            per_seed[s] = float(b) - float(a)
    return _summary(per_seed)


def _gaps(entry: Dict[int, dict], base: Dict[int, dict], figure) -> Dict[int, Optional[float]]:
    """``{seed: figure(entry's cell) - figure(baseline's cell)}`` over the seeds both have (None where
    either lacks the figure)."""
    out = {}
    for s in sorted(set(entry) & set(base)):
        e, b = figure(entry[s]), figure(base[s])
        out[s] = None if e is None or b is None else float(e) - float(b)
    return out


def budget_changes(shorter: dict, longer: dict, baseline: str = "vae",
                   entries: Optional[List[str]] = None) -> Dict[str, dict]:
    """``{entry: {"seeds": [...], "change": {figure: summary}, "versus_baseline": {figure: summary}}}``
    from two leaderboards (``leaderboard.json``'s contents); a summary is ``{"mean", "low", "high",
    "per_seed"}`` (``low``/``high`` NaN with one seed) or None where no seed has the figure at both
    budgets. ``versus_baseline`` is empty for the baseline itself or where the baseline is missing. An
    entry asked for that is not in both is a ConfigError."""
    a, b = _cells(shorter), _cells(longer)
    common = [e for e in b if e in a]
    for name in entries or []:
        if name not in common:
            raise ConfigError(f"entry {name!r} is not in both comparisons; expected one of {', '.join(common) or 'none'}")
    out = {}
    for name in entries or common:
        row = {"seeds": sorted(set(a[name]) & set(b[name])),
               "change": {k: _change(a[name], b[name], f) for k, f in MEASURES.items()},
               "versus_baseline": {}}
        if name != baseline and baseline in a and baseline in b:
            for k in VERSUS_BASELINE:
                short, long = _gaps(a[name], a[baseline], MEASURES[k]), _gaps(b[name], b[baseline], MEASURES[k])
                row["versus_baseline"][k] = _change(short, long, lambda c: c)
        out[name] = row
    return out
