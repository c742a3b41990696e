"""The leaderboard of a comparison, rebuilt from its cells alone: ``leaderboard.md``, ``.csv`` and
``.json``, and the figures (log p(x) with intervals, the gap, learning curves, samples per entry)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from vaezoo.compare import measures, settings as settings_mod, stats
from vaezoo.compare.cells import cell_dir
from vaezoo.evaluation.arrays import read_per_datapoint
from vaezoo.fileio import atomic_write_text, atomic_writer
from vaezoo.inference import schedules

#: the figures of a cell that are averaged over seeds, with their column titles
NUMERIC = [("elbo", "test ELBO"), ("log_px", "log p(x)"), ("gap", "gap"), ("khat_above", "k-hat > 0.7"),
           ("ais", "AIS log p(x)"), ("active_units", "active units"), ("mutual_information", "I(x; z)"),
           ("fid_means", "FID means"), ("fid", "FID samples"), ("probe", "probe accuracy"), ("parameters", "parameters"),
           ("seconds_per_epoch", "s / epoch"), ("seconds_to_target", "s to target ELBO")]


def _value(rec: Dict[str, Any], key: str):
    if key in ("fid", "fid_means"):  # one measure, {"means": ..., "samples": ...}, or why there is none
        v = rec.get("fid")
        return v.get("samples" if key == "fid" else "means") if isinstance(v, dict) else v
    return rec.get(key)


def collect(out: Path, settings: Dict[str, Any]) -> Dict[str, Any]:
    """Every cell's record, the per-entry summaries and the paired differences against the baseline."""
    out = Path(out)
    cells = {}
    for name in settings["models"]:
        for seed in settings["seeds"]:
            run = cell_dir(out, name, seed)
            rec = measures.cell_record(run, settings) if (run / "config.json").is_file() else {
                "run": str(run), "status": "missing: not trained", "curve": []}
            if rec.get("conditional") and isinstance(rec.get("log_px"), float):
                rec["log_px_conditional"], rec["log_px"] = rec["log_px"], measures.CONDITIONAL
                rec["gap"] = measures.CONDITIONAL
            cells[(name, seed)] = dict(rec, entry=name, seed=seed, run=f"{name}/seed{seed}")  # relative to out
    arrays = {}
    for (name, seed), rec in cells.items():
        if rec.get("status") == "ok" and "arrays" in rec and isinstance(rec.get("log_px"), float):
            arrays.setdefault(name, {})[seed] = read_per_datapoint(cell_dir(out, name, seed) / rec["arrays"])["log_px"]
    entries = []
    base = settings["baseline"]
    for name in settings["models"]:
        recs = [cells[(name, s)] for s in settings["seeds"]]
        ok = [r for r in recs if r.get("status") == "ok"]
        entry: Dict[str, Any] = {"entry": name, "seeds": len(ok), "of_seeds": len(recs)}
        for key, _ in NUMERIC:
            values = [_value(r, key) for r in ok]
            reasons = [v for v in values if isinstance(v, str)]
            if reasons:
                entry[key] = reasons[0]
            elif values and all(v is not None for v in values):
                entry[key] = stats.over_seeds(values).to_dict()
            else:
                entry[key] = None
        flags = [r["convergence"]["flag"] for r in ok]
        entry["convergence"] = _convergence(flags)
        entries.append(entry)
    base_reason = next((e["log_px"] for e in entries if e["entry"] == base and isinstance(e["log_px"], str)), None)
    for entry in entries:
        name = entry["entry"]
        if name == base:
            entry["vs_baseline"] = "baseline"
        elif isinstance(entry.get("log_px"), str):
            entry["vs_baseline"] = entry["log_px"]
        elif base_reason is not None:
            entry["vs_baseline"] = f"n/a: baseline {base}: {base_reason}"
        elif name in arrays and base in arrays:
            diff = stats.paired_difference(arrays[name], arrays[base])
            entry["vs_baseline"] = diff.to_dict() if diff is not None else "no common seed"
        else:
            entry["vs_baseline"] = "n/a: missing cells"
    for entry in entries:  # the Frechet distances, paired by seed (a lower one is better)
        entry["fid_vs_baseline"] = None if entry["entry"] == base else {
            kind: _paired_cells(cells, entry["entry"], base, settings["seeds"], kind) for kind in ("fid", "fid_means")}
    return {"settings": settings, "entries": entries,
            "cells": [cells[(n, s)] for n in settings["models"] for s in settings["seeds"]],
            "published": settings_mod.published(settings)}


def _paired_cells(cells, name: str, base: str, seeds, key: str):
    """The paired difference over seeds of the number ``key`` of the two entries' cells, as a
    dict, or None where no seed has it in both (one seed: the difference without an interval)."""
    values = {n: {s: v for s in seeds if isinstance(v := _value(cells[(n, s)], key), float) and math.isfinite(v)
                  and cells[(n, s)].get("status") == "ok"} for n in (name, base)}
    diff = stats.paired_over_seeds(values[name], values[base])
    if diff is None:
        return None
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in diff.to_dict().items()}  # JSON: no NaN


def _convergence(flags: List[str]) -> str:
    if not flags:
        return "n/a"
    for flag in flags:
        if flag == "too short to tell" or flag.startswith("n/a"):
            return flag
    rising, falling = flags.count("not converged"), flags.count("falling")
    if rising + falling == 0:
        return "converged"
    return f"not converged ({rising + falling} of {len(flags)} seeds" + (f"; {falling} falling)" if falling else ")")


def code_line(cells: List[Dict[str, Any]]) -> str:
    """Which code trained the cells (those that trained at all): one commit, or how many cells each
    code trained (a comparison whose cells resumed or joined across commits says so)."""
    counts: Dict[str, int] = {}
    for c in cells:
        if c.get("epochs_done") == 0:
            continue
        key = c.get("code") or "not recorded"
        counts[key] = counts.get(key, 0) + 1
    if not counts:
        return "Code: no cell trained yet."
    if len(counts) == 1:
        (code,) = counts
        return "Code: every cell trained by vaezoo " + (f"commit {code}." if code != "not recorded" else
                                                         "of a commit not recorded (trained before runs recorded it).")
    parts = ", ".join(f"{k} ({n} cell{'s' * (n != 1)})" for k, n in sorted(counts.items()))
    return f"Code: the cells were trained by different vaezoo code: {parts}."


# ------------------------------------------------------------------------------- formatting
def _num(v, digits=2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return f"{v:,}"
    return f"{v:.{digits}f}" if math.isfinite(v) else "n/a"


def _summary(v, key) -> str:
    if not isinstance(v, dict):
        return _num(v)
    digits = {"khat_above": 3, "probe": 3, "seconds_per_epoch": 3, "active_units": 1}.get(key, 2)
    if key == "parameters":
        return _num(int(v["mean"]))
    text = _num(v["mean"], digits)
    return text + (f" ± {v['sd']:.{digits}f}" if v.get("sd") is not None else "")


def _diff(v) -> str:
    if not isinstance(v, dict):
        return _num(v)
    if v["low"] is None or not math.isfinite(v["low"]):
        return f"{v['mean']:+.2f}"
    text = f"{v['mean']:+.2f} [{v['low']:+.2f}, {v['high']:+.2f}]"
    return text + (f" ({stats.ONE_SEED})" if v["method"] == stats.ONE_SEED else "")


def _tenths(curve) -> str:
    """A cell's :func:`~vaezoo.compare.measures.tenths_change`, from the ``[epoch, test ELBO]`` pairs
    its record keeps (so older leaderboards show it too)."""
    trend = measures.tenths_change([{"test_elbo": v} for _, v in curve or []])
    return "n/a" if trend is None else f"{trend['change']:+.2f} [{trend['low']:+.2f}, {trend['high']:+.2f}]"


def _cosine_tail(epochs: int) -> float:
    """The cosine schedule's largest rate factor in the window the convergence flag reads."""
    return schedules.factor("cosine", epochs)(epochs - measures.last_tenth(epochs))


def markdown(board: Dict[str, Any]) -> str:
    s = board["settings"]
    lines = [f"# Leaderboard: {', '.join(s['models'])} on {s['dataset']}", ""]
    lines.append(f"{s['epochs']} epochs, seeds {', '.join(map(str, s['seeds']))}"
                 + (f", preset `{s['preset']}`" if s.get("preset") else "")
                 + (f", --set {' '.join(f'{k}={v}' for k, v in s['set'].items())}" if s.get("set") else "")
                 + "".join(f", `{name}`: --set {' '.join(f'{k}={v}' for k, v in kv.items())}"
                           for name, kv in s.get("set_entry", {}).items())
                 + (f", train {', '.join(f'{k}={v}' for k, v in s['train'].items())}" if s.get("train") else "")
                 + f". log p(x): importance sampling, K = {s['samples']} per test point (evaluate --seed "
                 f"{s.get('eval_seed', 0)}), on "
                 + (f"the first {s['num_test']} test points" if s.get("n_test") else "the whole test split")
                 + f"; mean ± sd over seeds. Δ vs `{s['baseline']}`: paired "
                 "difference of log p(x) over the same test points and seeds, 95% t-interval over seeds. "
                 f"Convergence: \"not converged\" when the test ELBO rose by more than {s['flat']} nats over the last tenth of "
                 "the epochs, \"falling\" when it fell by more (over-fitting or an unstable run); per cell, the "
                 "mean test ELBO of the last tenth minus the tenth before's, with a 95% interval that treats the epochs as "
                 "independent, reads the same trend through the curve's jitter."
                 + (f" Under the cosine schedule the last tenth runs at under {_cosine_tail(s['epochs']):.1%} of the peak "
                    "learning rate, so a flat curve there says the run settled at this budget, not that more epochs "
                    "would not help." if (s.get("train") or {}).get("schedule") == "cosine" else "")
                 + (f" s to target ELBO: training seconds until the test ELBO reached {s['target_elbo']}."
                    if s.get("target_elbo") is not None else ""))
    lines.append("")
    cols = ["entry", "seeds"] + [title for key, title in NUMERIC[:2]] + [f"Δ log p(x) vs {s['baseline']}"] + \
        [title for key, title in NUMERIC[2:]] + ["convergence"]
    shown = [(k, t) for k, t in NUMERIC[2:] if (s.get("ais_steps") or k != "ais")
             and (s.get("target_elbo") is not None or k != "seconds_to_target")]
    cols = cols[:5] + [t for _, t in shown] + ["convergence"]
    lines += ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for e in board["entries"]:
        row = [f"`{e['entry']}`", f"{e['seeds']}/{e['of_seeds']}"] + [_summary(e[k], k) for k, _ in NUMERIC[:2]]
        row += [_diff(e["vs_baseline"])]
        row += [_summary(e[k], k) for k, _ in shown]
        row += [e["convergence"]]
        lines.append("| " + " | ".join(row) + " |")
    fd_rows = [e for e in board["entries"] if any((e.get("fid_vs_baseline") or {}).values())]
    if fd_rows:
        lines += ["", f"Frechet distances against `{s['baseline']}` (entry minus baseline, paired by seed, 95% "
                  "t-interval over seeds; lower is better):", "",
                  f"| entry | Δ FID samples vs {s['baseline']} | Δ FID means vs {s['baseline']} |", "| --- | --- | --- |"]
        lines += [f"| `{e['entry']}` | {_diff(e['fid_vs_baseline']['fid'])} | {_diff(e['fid_vs_baseline']['fid_means'])} |"
                  for e in fd_rows]
    lines += ["", "Per cell:", "", "| entry | seed | status | test ELBO | log p(x) ± se | gap | k-hat > 0.7 | "
              "active units | probe | s / epoch | last-tenth rise | last tenth - tenth before | convergence |",
              "|" + " --- |" * 13]
    for c in board["cells"]:
        conv = c.get("convergence", {})
        lp = c.get("log_px")
        lp = f"{lp:.2f} ± {c['log_px_stderr']:.2f}" if isinstance(lp, float) and c.get("log_px_stderr") is not None else _num(lp)
        row = [f"`{c['entry']}`", str(c["seed"]), c["status"], _num(c.get("elbo")), lp, _num(c.get("gap")),
               _num(c.get("khat_above"), 3), _num(c.get("active_units")), _num(c.get("probe"), 3),
               _num(c.get("seconds_per_epoch"), 3), _num(conv.get("rise"), 3), _tenths(c.get("curve")),
               conv.get("flag", "n/a")]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", code_line(board["cells"])]
    if board.get("published"):
        lines += ["", "Published figures, each under its own protocol (not ours: other budgets and schedules):", "",
                  "| entry | source | protocol | log p(x) |", "| --- | --- | --- | --- |"]
        lines += [f"| `{p['entry']}` | {p['source']} | {p['protocol']} | {p['log_px']:.2f} |" for p in board["published"]]
    lines += ["", "![log p(x)](logpx.png) ![gap](gap.png)", "", "![learning curves](curves.png)", "",
              "![samples](samples.png)", ""]
    return "\n".join(lines)


def csv_text(board: Dict[str, Any]) -> str:
    keys = [k for k, _ in NUMERIC]
    buffer = io.StringIO()
    w = csv.writer(buffer, lineterminator="\n")
    w.writerow(["kind", "entry", "seed", "status"] + keys + ["log_px_stderr", "vs_baseline", "vs_baseline_low",
                                                              "vs_baseline_high", "convergence"])
    for c in board["cells"]:
        w.writerow(["cell", c["entry"], c["seed"], c["status"]] + [_value(c, k) for k in keys]
                   + [c.get("log_px_stderr"), "", "", "", c.get("convergence", {}).get("flag", "")])
    for e in board["entries"]:
        values = [e[k]["mean"] if isinstance(e[k], dict) else e[k] for k in keys]
        d = e["vs_baseline"]
        vs = [d["mean"], d["low"], d["high"]] if isinstance(d, dict) else [d, "", ""]
        w.writerow(["entry", e["entry"], "mean", f"{e['seeds']}/{e['of_seeds']} seeds"] + values + [""] + vs
                   + [e["convergence"]])
    return buffer.getvalue()


# ------------------------------------------------------------------------------- figures
def _figure(width=6.0, height=4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_writer(path) as f:
        fig.savefig(f, format="png")
    return path


def figures(board: Dict[str, Any], out: Path) -> List[Path]:
    s, cells = board["settings"], board["cells"]
    names = s["models"]
    paths = []
    for key, title, file in (("log_px", f"log p(x), IS K = {s['samples']} (nats)", "logpx.png"),
                             ("gap", "gap log p(x) - ELBO (nats)", "gap.png")):
        fig = _figure()
        ax = fig.add_subplot()
        for i, name in enumerate(names):
            values = [c[key] for c in cells if c["entry"] == name and isinstance(c.get(key), float)]
            if not values:
                reason = next((c.get(key) for c in cells if c["entry"] == name and isinstance(c.get(key), str)), "missing")
                ax.text(i, 0.5, reason, rotation=90, ha="center", va="center", fontsize=7, transform=ax.get_xaxis_transform())
                continue
            ax.scatter([i] * len(values), values, color="#999999", s=12, zorder=2)
            mean, low, _ = stats.t_interval(values)
            ax.errorbar(i, mean, yerr=0 if math.isnan(low) else mean - low, fmt="o", color="#4477aa", capsize=6, zorder=3)
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_ylabel(title)
        ax.set_title("mean over seeds, 95% t-interval; grey: seeds", fontsize=9)
        paths.append(_save(fig, out / file))
    fig = _figure(7, 4.5)
    ax = fig.add_subplot()
    colours = {name: f"C{i}" for i, name in enumerate(names)}
    styles = ["-", "--", ":", "-."]
    for c in cells:
        curve = [(e, v) for e, v in c.get("curve", []) if v is not None]
        if curve:
            ax.plot(*zip(*curve), color=colours[c["entry"]], linestyle=styles[s["seeds"].index(c["seed"]) % 4],
                    label=f"{c['entry']} seed {c['seed']}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test ELBO (nats)")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "curves.png"))
    paths.append(_samples(names, s["seeds"], out))
    return paths


def _samples(names, seeds, out: Path) -> Path:
    import matplotlib.image as mpimg

    fig = _figure(2.6 * len(names), 3.0)
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        ax.set_axis_off()
        path = cell_dir(out, name, seeds[0]) / "samples.png"
        if path.is_file():
            ax.imshow(mpimg.imread(path), cmap="gray")
        ax.set_title(f"{name} (seed {seeds[0]})", fontsize=9)
    return _save(fig, out / "samples.png")


def write(out: Path, settings: Dict[str, Any]) -> List[Path]:
    """Collects the cells of the comparison in ``out`` and writes its tables and figures."""
    out = Path(out)
    board = collect(out, settings)
    from vaezoo.evaluation.report import _jsonable

    paths = [out / "leaderboard.md", out / "leaderboard.csv", out / "leaderboard.json"]
    atomic_write_text(paths[0], markdown(board))
    atomic_write_text(paths[1], csv_text(board))
    atomic_write_text(paths[2], json.dumps(_jsonable(board), indent=2, sort_keys=True) + "\n")
    return paths + figures(board, out)
