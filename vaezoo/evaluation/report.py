"""Reports of a log-marginal estimate for run directories: markdown summary lines, a histogram of
the per-datapoint gaps, and strict JSON written atomically."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch

from vaezoo.evaluation.result import LogMarginalResult, mean_with_stderr


#: the share of datapoints with k-hat > 0.7 above which a summary calls its log p(x) loose
LOOSE_SHARE = 0.1


def format_summary(result: LogMarginalResult, seconds: Optional[float] = None) -> str:
    """Markdown lines: mean log p(x), ELBO and gap with standard errors over the dataset, the IWAE-k
    bounds, the share of datapoints with k-hat > 0.7, and the wall time."""
    seconds = result.wall_time if seconds is None else seconds
    n, k = result.num_datapoints, result.num_samples
    lines = [
        f"Importance sampling, K = {k} particles per datapoint, {n} datapoints (nats, ± standard error over the data):",
        "",
        f"- log p(x): {_pm(result.mean_log_px)} "
        f"(mean Monte Carlo stderr per datapoint {_f(result.stderr.mean().item())})",
        f"- ELBO (the mean log-weight of these K particles): {_pm(result.mean_elbo)}",
        f"- gap log p(x) - ELBO (≈ KL(q || posterior)): {_pm(result.mean_gap)}",
    ]
    for kk in sorted(result.iwae):
        lines.append(f"- IWAE-{kk} bound: {_pm(result.mean_iwae(kk))}")
    if not torch.isnan(result.khat).all():  # computed (K >= 21); an infinite k-hat is the heaviest tail, not a gap
        loose = result.frac_khat_above(0.7)
        lines.append(
            f"- k-hat > 0.7 (unreliable estimate): {100 * loose:.1f}% of datapoints; "
            f"median ESS {_f(result.ess.median().item(), 1)} of {k}"
        )
        if loose > LOOSE_SHARE:
            # Vehtari et al. (2024): above 0.7 the importance-sampling estimate is not to be trusted
            lines.append(
                f"- **loose**: for {100 * loose:.0f}% of the datapoints the weights are too heavy-tailed for K = {k}, "
                "so this log p(x) is a lower bound that may sit well below the truth; more particles (--samples) "
                "or an annealed estimate (--ais STEPS) tighten it"
            )
    else:
        lines.append(f"- k-hat: not computed (needs K >= 21); median ESS {_f(result.ess.median().item(), 1)} of {k}")
    if seconds is not None and math.isfinite(seconds):
        lines.append(f"- wall time: {seconds:.1f} s ({n / max(seconds, 1e-9):.1f} datapoints/s)")
    return "\n".join(lines)


def format_ais(result) -> str:
    """Markdown lines for an AIS result (anything with ``log_px``, ``stderr`` and ``ess`` tensors)."""
    direction = getattr(result, "direction", "forward")
    bound = "upper" if direction == "reverse" else "lower"
    lines = [
        f"- AIS ({direction}, stochastic {bound} bound) log p(x): {_pm(mean_with_stderr(result.log_px))} "
        f"(mean Monte Carlo stderr per datapoint {_f(torch.nanmean(result.stderr.double()).item())})"
    ]
    accept = getattr(result, "accept_rate", None)
    if accept is not None and torch.isfinite(accept).any():
        lines.append(f"- AIS mean HMC acceptance rate: {torch.nanmean(accept.double()).item():.2f}")
    return "\n".join(lines)


def plot_gap_histogram(result: LogMarginalResult, path, bins: int = 50) -> Path:
    """Writes a PNG histogram of the per-datapoint gaps log p̂(x) - ELBO (nats), marking their mean."""
    # a Figure with an Agg canvas, not pyplot: no global backend or figure state is touched
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from vaezoo.fileio import atomic_writer

    gap = result.gap[torch.isfinite(result.gap)].numpy()
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.hist(gap, bins=bins, color="#4477aa", edgecolor="white")
    if gap.size:
        ax.axvline(gap.mean(), color="#cc3311", linestyle="--", label=f"mean {gap.mean():.3f} nats")
        ax.legend()
    ax.set_xlabel("log p̂(x) − ELBO (nats)")
    ax.set_ylabel("datapoints")
    ax.set_title(f"Per-datapoint gap, K = {result.num_samples}, N = {result.num_datapoints}")
    fig.tight_layout()
    path = Path(path)
    with atomic_writer(path) as f:
        fig.savefig(f, format="png")
    return path


def plot_curves(history, path, title: str = "") -> Path:
    """``curves.png`` of a run: the training loss and the test loss by epoch in the first panel, then
    one small panel per other number the epochs recorded (the entry's own terms: test ELBO, KL,
    multipliers, active dimensions, the learning rate...), written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from vaezoo.fileio import atomic_writer

    skip = {"epoch", "seconds", "compile_seconds", "train_loss", "test_loss"}
    keys = []
    for record in history:
        for k, v in record.items():
            if k not in skip and k not in keys and isinstance(v, (int, float)) and not isinstance(v, bool):
                keys.append(k)
    panels = 1 + len(keys)
    cols = min(3, panels)
    rows = -(-panels // cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows), dpi=90)
    FigureCanvasAgg(fig)

    def series(key):
        pts = [(r["epoch"], r[key]) for r in history if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        return [e for e, _ in pts], [v for _, v in pts]

    ax = fig.add_subplot(rows, cols, 1)
    for key, label in (("train_loss", "training loss"), ("test_loss", "test loss")):
        e, v = series(key)
        if e:
            ax.plot(e, v, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (nats per datapoint)")
    ax.legend()
    ax.set_title(title or "loss")
    for i, key in enumerate(keys, start=2):
        ax = fig.add_subplot(rows, cols, i)
        e, v = series(key)
        ax.plot(e, v, color="#4477aa")
        ax.set_xlabel("epoch")
        ax.set_title(key)
    fig.tight_layout()
    path = Path(path)
    with atomic_writer(path) as f:
        fig.savefig(f, format="png")
    return path


def write_json(path, obj) -> Path:
    """Writes ``obj`` as strict JSON atomically (temporary file, then ``os.replace``): tensors become
    lists, non-finite numbers ``null``."""
    from vaezoo.fileio import write_json as _write

    path = Path(path)
    _write(path, _jsonable(obj))
    return path


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", None) == 0:  # numpy scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _pm(est) -> str:
    return f"{_f(est.mean)} ± {_f(est.stderr)}"


def _f(v: float, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if math.isfinite(v) else "n/a"
