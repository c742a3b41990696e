"""What a longer budget changed: the same comparison (entries, seeds, test points, estimator
settings) at two budgets, read from the two leaderboards.

A second convergence criterion beside :func:`vaezoo.compare.measures.convergence`'s rise over the
last tenth. Under a cosine schedule the last tenth runs at a few percent of the peak rate, so a flat
tail says a run settled at its budget, not that more epochs would not help; the same cells trained
longer say that. Pairing is by seed. For every entry both leaderboards have: the change, longer
minus shorter, of each cell's final test ELBO, log p(x) and sample Frechet distance, and of the
entry's difference from the baseline in log p(x) and sample FD (what a verdict reads), each as a
:func:`vaezoo.compare.stats.t_interval` over the seeds with the per-seed values. A claim that sets
one figure of the entry against another of the baseline (the SOS-VAE's: its samples at least as good
as the beta-VAE's means) is followed by :data:`SAMPLES_VS_MEANS`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from vaezoo.compare.stats import t_interval
from vaezoo.errors import ConfigError


def _final_elbo(cell: dict) -> Optional[float]:
    curve = cell.get("curve") or []
    return float(curve[-1][1]) if curve else None


def _fd(cell: dict, which: str) -> Optional[float]:
    fid = cell.get("fid")  # a dict of figures, or the reason there is none ("n/a: not 28x28")
    return fid.get(which) if isinstance(fid, dict) else None


def _sample_fd(cell: dict) -> Optional[float]:
    return _fd(cell, "samples")


def _means_fd(cell: dict) -> Optional[float]:
    return _fd(cell, "means")


#: the per-cell figures whose change is reported, by name
MEASURES: Dict[str, Callable[[dict], Optional[float]]] = {
    "test_elbo": _final_elbo, "log_px": lambda c: c.get("log_px"), "fd_samples": _sample_fd}
#: every per-cell figure a difference may read: the measures and the Frechet distance of the means
FIGURES: Dict[str, Callable[[dict], Optional[float]]] = {**MEASURES, "fd_means": _means_fd}
#: the differences from the baseline followed across budgets: ``{name: (entry's figure, baseline's figure)}``
VERSUS_BASELINE: Dict[str, Tuple[str, str]] = {"log_px": ("log_px", "log_px"),
                                                "fd_samples": ("fd_samples", "fd_samples")}
#: the SOS-VAE's claim: the entry's samples against the baseline's means (Frechet distances)
SAMPLES_VS_MEANS: Dict[str, Tuple[str, str]] = {"fd_samples_vs_means": ("fd_samples", "fd_means")}


def _cells(board: dict) -> Dict[str, Dict[int, dict]]:
    """``{entry: {seed: cell}}`` of the cells that finished."""
    out: Dict[str, Dict[int, dict]] = {}
    for c in board["cells"]:
        if c.get("status") == "ok":
            out.setdefault(c["entry"], {})[int(c["seed"])] = c
    return out


def summarize(values: Dict[int, float]) -> Optional[dict]:
    """``{"mean", "low", "high", "per_seed"}`` of per-seed values: a 95% t-interval (NaN bounds with
    one seed); None for no values."""
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
    return summarize(per_seed)


def _gaps(entry: Dict[int, dict], base: Dict[int, dict], figure, base_figure=None) -> Dict[int, Optional[float]]:
    """``{seed: figure(entry's cell) - base_figure(baseline's cell)}`` (``base_figure`` defaults to
    ``figure``) over the seeds both have (None where either lacks its figure)."""
    base_figure = base_figure or figure
    out = {}
    for s in sorted(set(entry) & set(base)):
        e, b = figure(entry[s]), base_figure(base[s])
        out[s] = None if e is None or b is None else float(e) - float(b)
    return out


def budget_changes(shorter: dict, longer: dict, baseline: str = "vae",
                   entries: Optional[List[str]] = None,
                   versus: Dict[str, Tuple[str, str]] = VERSUS_BASELINE) -> Dict[str, dict]:
    """``{entry: {"seeds": [...], "change": {figure: summary}, "versus_baseline": {figure: summary}}}``
    from two leaderboards (``leaderboard.json``'s contents); a summary is ``{"mean", "low", "high",
    "per_seed"}`` (``low``/``high`` NaN with one seed) or None where no seed has the figure at both
    budgets. ``versus_baseline`` holds the differences ``versus`` names (``{name: (entry's figure,
    baseline's figure)}``, figures of :data:`FIGURES`; default :data:`VERSUS_BASELINE`, add
    :data:`SAMPLES_VS_MEANS` for the SOS-VAE's claim); it is empty for the baseline itself or where
    the baseline is missing. ``clause`` holds, for the same differences, :func:`stability`'s reading.
    An entry asked for that is not in both is a ConfigError."""
    a, b = _cells(shorter), _cells(longer)
    common = [e for e in b if e in a]
    for name in entries or []:
        if name not in common:
            raise ConfigError(f"entry {name!r} is not in both comparisons; expected one of {', '.join(common) or 'none'}")
    out = {}
    for name in entries or common:
        row = {"seeds": sorted(set(a[name]) & set(b[name])),
               "change": {k: _change(a[name], b[name], f) for k, f in MEASURES.items()},
               "versus_baseline": {}, "clause": {}}
        if name != baseline and baseline in a and baseline in b:
            for k, (mine, theirs) in versus.items():
                short, long = (_gaps(board[name], board[baseline], FIGURES[mine], FIGURES[theirs]) for board in (a, b))
                row["versus_baseline"][k] = _change(short, long, lambda c: c)
                row["clause"][k] = stability({s: v for s, v in short.items() if v is not None},
                                             {s: v for s, v in long.items() if v is not None})
        out[name] = row
    return out


#: the fewest seeds a verdict rests on (bench/RESULTS.md's rule), so the fewest the clause reads
MIN_SEEDS = 3
#: what a table of :func:`stability_shown` cells says under it
CLAUSE_LEGEND = ("the budget-stability clause of bench/RESULTS.md: (a) the difference's interval excludes the "
                 "reference (0 unless stated) on the same side at both budgets, (b) its change's interval includes 0, "
                 "(c) the change is smaller than the difference's distance from the reference at the longer budget; "
                 "`fails (...)` names the parts that fail")


def budgets_qualify(shorter: float, longer: float) -> bool:
    """Whether the clause may read two budgets (epochs or steps): the longer at least 5/3 of the shorter."""
    return 3 * longer >= 5 * shorter


def stability(shorter: Dict[int, float], longer: Dict[int, float], against: float = 0.0) -> dict:
    """The budget-stability clause of ``bench/RESULTS.md``, read on one paired difference given by
    seed (``{seed: difference}``) at a shorter and a longer budget of the same comparison, over the
    seeds both budgets have:

    (a) the difference's 95% t-interval excludes ``against`` on the same side at both budgets;
    (b) its change, longer minus shorter (paired by seed), has an interval that includes 0;
    (c) that change is smaller in size than the difference's distance from ``against`` at the longer
        budget.

    ``against`` is 0 for the sign of a difference, or a published figure (a paper's gap, say) for a
    claimed size. Returns ``{"seeds", "shorter", "longer", "change"}`` (summaries as
    :func:`budget_changes` gives them), ``"a"``, ``"b"``, ``"c"`` (bools), ``"holds"`` (all three),
    ``"side"`` (+1: above ``against`` at both budgets, -1: below at both, 0: neither) and ``"against"``.
    Seeds with a non-finite value at either budget are left out; under :data:`MIN_SEEDS` seeds (the
    rule's least for any verdict) every part fails. Whether the budgets qualify (the longer
    at least 5/3 of the shorter, the same protocol otherwise) is the caller's to check."""
    seeds = sorted(s for s in set(shorter) & set(longer) if math.isfinite(shorter[s]) and math.isfinite(longer[s]))
    short = summarize({s: float(shorter[s]) for s in seeds})
    long = summarize({s: float(longer[s]) for s in seeds})
    change = summarize({s: float(longer[s]) - float(shorter[s]) for s in seeds})
    out = {"seeds": seeds, "shorter": short, "longer": long, "change": change, "against": against,
           "a": False, "b": False, "c": False, "holds": False, "side": 0}
    if len(seeds) < MIN_SEEDS:
        return out

    def side(summary):  # +1 / -1 where the interval lies wholly above / below ``against``
        return 1 if summary["low"] > against else -1 if summary["high"] < against else 0

    out["side"] = side(short) if side(short) == side(long) else 0
    out["a"] = out["side"] != 0
    out["b"] = change["low"] <= 0.0 <= change["high"]
    out["c"] = abs(change["mean"]) < abs(long["mean"] - against)
    out["holds"] = out["a"] and out["b"] and out["c"]
    return out


def stability_shown(result: dict) -> str:
    """:func:`stability`'s reading as a table cell: ``holds (above 0)`` or ``fails (a, c)`` naming
    the parts that fail."""
    where = f"{result['against']:+.2f}" if result["against"] else "0"
    if result["holds"]:
        return f"holds ({'above' if result['side'] > 0 else 'below'} {where})"
    if len(result["seeds"]) < MIN_SEEDS:
        return f"no verdict (under {MIN_SEEDS} seeds)"
    return "fails (" + ", ".join(k for k in "abc" if not result[k]) + ")"
