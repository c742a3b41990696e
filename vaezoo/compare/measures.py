"""What ``vaezoo compare`` reads off a trained cell beyond its evaluation: active units, the linear
probe of the codes, the Frechet distance of samples, I(x; z), parameters (cached in the cell as
``compare-measures.json``), and its figures from ``metrics.jsonl`` and ``eval-*.json``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from vaezoo import runs, traces
from vaezoo.errors import VaezooError
from vaezoo.fileio import write_json
from vaezoo.randomness import rng_scope

MEASURES = "compare-measures.json"
VERSION = 2
ACTIVE = 0.01  # Burda et al. 2016: a unit is active if Cov_x(E_q[z | x]) > 0.01
KHAT = 0.7
SITE = "z"
MI_POINTS = 1000  # I(x; z) from the first test points: an N x N matrix of log q(z_i | x_j)
BATCH = 500
POINT_MASS = "no density: point-mass guide"
CONDITIONAL = "conditional on the inferred pose"


def _site_fn(fn):
    while hasattr(fn, "base_dist"):  # Independent(...) -> the distribution it wraps
        fn = fn.base_dist
    return fn


def point_mass_sites(m, x: torch.Tensor) -> list:
    """The guide's latent sites that are point masses (``Delta``), sorted."""
    import pyro.distributions as dist

    with torch.no_grad():
        sites = traces.record(m.guide, x[:2]).sites
    return sorted(name for name, site in sites.items()
                  if not site["is_observed"] and isinstance(_site_fn(site["fn"]), dist.Delta))


def point_mass(m, x: torch.Tensor) -> bool:
    """Whether the guide's site ``"z"`` is a point mass (a ``Delta``): such a pair has no density
    q(z | x), so no ELBO, importance-sampled log p(x), gap or k-hat (``vaezoo compare`` does not
    evaluate it). Another point-mass site (a transformer VAE's pose under ``pose_prior=none``) leaves
    an importance-sampled log p(x) conditional on it, but no AIS."""
    return SITE in point_mass_sites(m, x)


conditional = runs.pose_conditional  # the one test, shared with `vaezoo evaluate`


# ------------------------------------------------------------------------------- from files
def read_metrics(run: Path):
    path = Path(run) / "metrics.jsonl"
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def last_tenth(epochs: int) -> int:
    """The epochs of the window :func:`convergence` reads: a tenth of them, at least one."""
    return max(1, math.ceil(epochs / 10))


def convergence(history, flat: float) -> Dict[str, Any]:
    """``{"flag", "rise"}``: over the last tenth of the epochs (at least one), "not converged" when
    the test ELBO rose by more than ``flat`` nats, "falling" when it fell by more than ``flat`` (an
    over-fitting or unstable run: not one that settled either), "converged" when it moved by at
    most ``flat``; "too short to tell" below 10 epochs. A history whose early epochs have no test
    ELBO (a run continued from one trained before it was recorded) is read by epoch number, between
    the last epoch and the one a tenth of all its epochs before, and is "not recorded" when either
    lacks it."""
    elbo = [r["test_elbo"] for r in history if r.get("test_elbo") is not None]
    if not elbo and history:
        return {"flag": "n/a: no test ELBO", "rise": None}
    if len(elbo) < len(history):
        by_epoch = {r["epoch"]: r["test_elbo"] for r in history if r.get("test_elbo") is not None}
        last = history[-1]["epoch"]
        first = last - last_tenth(len(history))
        if len(history) < 10 or last not in by_epoch or first not in by_epoch:
            return {"flag": "not recorded", "rise": None}
        rise = float(by_epoch[last] - by_epoch[first])
        return {"flag": flatness(rise, flat), "rise": rise}
    if len(elbo) < 10:
        return {"flag": "too short to tell", "rise": None}
    window = last_tenth(len(elbo))
    rise = float(elbo[-1] - elbo[-1 - window])
    return {"flag": flatness(rise, flat), "rise": rise}


def flatness(rise: float, flat: float) -> str:
    """The flag of a test ELBO that moved by ``rise`` nats over the last tenth (see :func:`convergence`)."""
    return "not converged" if rise > flat else "falling" if rise < -flat else "converged"


def tenths_change(history, level: float = 0.95) -> Optional[Dict[str, float]]:
    """The test ELBO's trend read through its noise, for curves that jitter from epoch to epoch (a
    constant rate, Adadelta's), where :func:`convergence`'s two-point rise is mostly noise: the mean
    over the last tenth of the epochs minus the mean over the tenth before (``change``), with a Welch
    ``level`` interval (scipy's ``ttest_ind``), and ``jitter``, the epoch-to-epoch noise over those
    two tenths: the standard deviation of successive differences over sqrt(2), which a steady trend
    does not inflate. The interval treats the epochs as independent: too narrow for a curve that
    wanders, too wide for one that trends within each tenth (a trend adds to each tenth's spread).
    None below 20 epochs: each tenth's spread needs two epochs."""
    elbo = np.array([r["test_elbo"] for r in history if r.get("test_elbo") is not None], dtype=np.float64)
    if len(elbo) < 20:
        return None
    from scipy import stats

    window = last_tenth(len(elbo))

    last, before = elbo[-window:], elbo[-2 * window:-window]
    ci = stats.ttest_ind(last, before, equal_var=False).confidence_interval(level)
    return {"change": float(last.mean() - before.mean()), "low": float(ci.low), "high": float(ci.high),
            "jitter": float(np.diff(elbo[-2 * window:]).std(ddof=1) / math.sqrt(2)), "window": int(window)}


def seconds_to(history, target: float) -> Any:
    """Training seconds until the end of the first epoch whose test ELBO reached ``target``."""
    total = 0.0
    for r in history:
        total += r.get("seconds", 0.0)
        if r.get("test_elbo") is not None and r["test_elbo"] >= target:
            return total
    return "not reached"


def _json(path: Optional[Path]) -> Optional[Dict[str, Any]]:
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------- from the model
@torch.no_grad()
def codes(m, x: torch.Tensor) -> Optional[torch.Tensor]:
    """E_q[z | x] of the guide's site ``"z"``, flattened to ``[N, D]``: the mean of the site's
    distribution (given the guide's other latents as drawn), or, where it has none, the average of
    200 draws; None when the guide has no site ``"z"``."""
    out = []
    for start in range(0, x.shape[0], BATCH):
        site = traces.record(m.guide, x[start:start + BATCH]).sites.get(SITE)
        if site is None:
            return None
        try:
            mean = site["fn"].mean
        except NotImplementedError:
            mean = site["fn"].sample((200,)).mean(0)
        out.append(mean.reshape(mean.shape[0], -1).double().cpu())
    return torch.cat(out)


def active_units(z: torch.Tensor) -> int:
    """Burda et al. 2016: the latent dimensions whose E_q[z | x] varies over x by more than 0.01."""
    return int((z.var(0, unbiased=True) > ACTIVE).sum())


def probe(z: torch.Tensor, labels: torch.Tensor) -> Any:
    """Held-out accuracy of a logistic regression on the standardized codes: trained on a
    stratified half of the test codes, scored on the other half (scikit-learn, seed 0)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = labels.cpu().numpy()
    counts = np.unique(y, return_counts=True)[1]
    if counts.size < 2:
        return "n/a: one class"
    stratify = y if counts.min() >= 2 else None
    z_train, z_test, y_train, y_test = train_test_split(z.numpy(), y, test_size=0.5, random_state=0, stratify=stratify)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(z_train, y_train)
    return float(clf.score(z_test, y_test))


@torch.no_grad()
def mutual_information(m, x: torch.Tensor, seed: int = 0) -> Any:
    """I(x; z) under q(z | x) and the test points as p(x) (Hoffman & Johnson 2016; He et al. 2019):
    mean over i of log q(z_i | x_i) - log (1/M sum_j q(z_i | x_j)), one z_i ~ q(z | x_i) for each
    of the first M test points. Bounded above by log M; a reason (str) where it cannot be computed."""
    x = x[:MI_POINTS]
    with rng_scope(torch.device("cpu")):
        torch.manual_seed(seed)
        site = traces.record(m.guide, x).sites.get(SITE)
    if site is None:
        return "n/a: no site z"
    fn, z = site["fn"], site["value"]
    if tuple(fn.batch_shape) != (x.shape[0],):
        return "not computed: the guide's z is not one draw per datapoint"
    try:
        cross = fn.log_prob(z.unsqueeze(1))  # [M, M]: log q(z_i | x_j)
    except (ValueError, RuntimeError, NotImplementedError) as e:
        return f"not computed: {type(e).__name__}"
    cross = cross.double()
    mi = torch.diagonal(cross) - (torch.logsumexp(cross, dim=1) - math.log(x.shape[0]))
    return float(mi.mean())


def frechet(m, x: torch.Tensor, seed: int) -> Any:
    from vaezoo.evaluation.quality import IMAGE_SHAPE, model_quality

    if tuple(m.data_shape) != IMAGE_SHAPE:
        return "n/a: not 28x28"
    return model_quality(m, x, seed=seed)


def model_measures(run: Path, seed: int = 0, data_dir: Optional[str] = None) -> Dict[str, Any]:
    """The measures that need the trained pair, computed once per checkpoint and cached in
    ``run/compare-measures.json`` (recomputed when the checkpoint has more epochs)."""
    from vaezoo import runlock

    run = Path(run)
    from vaezoo.compare.cells import checkpoint_epoch

    epoch = checkpoint_epoch(run)
    cached = _json(run / MEASURES)
    if cached is not None and cached.get("epoch") == epoch and cached.get("version") == VERSION and cached.get("seed") == seed:
        return cached
    with runlock.RunLock(run, "vaezoo compare", create=False):
        m, cfg, state = runs.load_trained(run, torch.device("cpu"))
        split = runs.load_split(cfg, "test", data_dir)
        x = split.data.to(torch.float32)
        out: Dict[str, Any] = {"version": VERSION, "epoch": int(state["epoch"]), "seed": seed,
                               "parameters": int(sum(p.numel() for p in m.parameters())),
                               "point_mass_sites": point_mass_sites(m, x), "conditional": conditional(cfg)}
        out["point_mass"] = SITE in out["point_mass_sites"]
        with rng_scope(torch.device("cpu")):
            torch.manual_seed(seed)
            z = codes(m, x)
        if z is None:
            out.update(active_units="n/a: no site z", latent_dims=None, probe="n/a: no site z")
        else:
            out.update(active_units=active_units(z), latent_dims=int(z.shape[1]), probe=probe(z, split.targets))
        out["mutual_information"] = POINT_MASS if out["point_mass"] else mutual_information(m, x, seed)
        out["mi_bound"] = math.log(min(MI_POINTS, x.shape[0]))
        try:
            out["fid"] = frechet(m, x, seed)
        except VaezooError as e:
            out["fid"] = f"n/a: {e}"
        write_json(run / MEASURES, out)
    return out


# ------------------------------------------------------------------------------- one cell
def cell_record(run: Path, settings: Dict[str, Any]) -> Dict[str, Any]:
    """Everything the leaderboard says of one cell; ``status`` is "ok" or why it has no figures."""
    from vaezoo.compare.cells import eval_file

    run = Path(run)
    rec: Dict[str, Any] = {"run": str(run)}
    history = read_metrics(run)
    rec["curve"] = [[r["epoch"], r.get("test_elbo")] for r in history]
    rec["epochs_done"] = history[-1]["epoch"] if history else 0
    seconds = [r["seconds"] for r in history if "seconds" in r]
    rec["seconds_per_epoch"] = float(np.median(seconds)) if seconds else None
    rec["train_seconds"] = float(sum(seconds)) if seconds else None
    rec["convergence"] = convergence(history, settings["flat"])
    rec["code"] = runs.code_of(_json(run / runs.CONFIG) or {})  # None: not recorded (older runs)
    if settings.get("target_elbo") is not None:
        rec["seconds_to_target"] = seconds_to(history, settings["target_elbo"])
    K, seed = settings["samples"], settings.get("eval_seed", 0)
    if rec["epochs_done"] < settings["epochs"]:
        rec["status"] = f"missing: {rec['epochs_done']} of {settings['epochs']} epochs trained"
        return rec
    measures = model_measures(run, seed, settings.get("data_dir"))
    rec.update({k: v for k, v in measures.items() if k not in ("version", "seed")})
    if measures["point_mass"]:  # no density: nothing for vaezoo evaluate to estimate
        rec["status"] = "ok"
        for key in ("elbo", "log_px", "gap", "khat_above") + (("ais",) if settings.get("ais_steps") else ()):
            rec[key] = POINT_MASS
        return rec
    path = eval_file(run, settings.get("num_test"), K, seed)
    ev = _json(path)
    if ev is None or ev.get("epoch") != measures["epoch"]:
        rec["status"] = f"missing: no evaluation with --samples {K} --seed {seed} of epoch {measures['epoch']}"
        return rec
    rec["status"] = "ok"
    rec["eval_file"] = path.name
    rec["num_test"] = ev.get("num_data")
    rec["elbo"] = ev.get("objective_elbo")
    rec["log_px"] = ev["log_px"]["mean"]
    rec["log_px_stderr"] = ev["log_px"]["stderr"]
    rec["gap"] = ev["gap"]["mean"]  # log p(x) - mean log-weight, per datapoint, on the same draws
    rec["khat_above"] = ev["khat"]["frac_above_0.7"] if ev["khat"].get("computed", ev["khat"]["median"] is not None) else "n/a: K < 21"
    rec["arrays"] = path.with_suffix(".npz").name
    if settings.get("ais_steps"):
        if measures["point_mass_sites"]:
            rec["ais"] = f"no AIS: point-mass guide site {', '.join(measures['point_mass_sites'])}"
        else:
            ais = _json(eval_file(run, settings["ais_subset"], K, seed, settings["ais_steps"]))
            rec["ais"] = ais["ais"]["log_px"]["mean"] if ais and "ais" in ais else "missing"
            rec["ais_is"] = ais["log_px"]["mean"] if ais else None
    return rec
