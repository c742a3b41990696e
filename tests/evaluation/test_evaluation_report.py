"""Reports of a log-marginal estimate: markdown summary, gap histogram, strict atomic JSON."""

import json
import math

import torch
from ppca import PPCA

from vaezoo.evaluation import log_marginal
from vaezoo.evaluation.report import format_summary, plot_gap_histogram, write_json


def _result():
    p = PPCA()
    return log_marginal(p.model, p.guide, p.sample_images(30), num_samples=200, iwae_k=(10,), seed=0)


def test_summary_json_and_histogram(tmp_path):
    r = _result()
    text = format_summary(r, seconds=2.0)
    for needle in ("log p(x)", "ELBO", "gap", "IWAE-10", "k-hat > 0.7", "wall time: 2.0 s", "±"):
        assert needle in text
    assert f"{r.mean_log_px.mean:.3f}" in text
    summary = r.to_dict()
    summary["nan"] = math.nan
    summary["tensor"] = torch.tensor([1.0, math.inf])
    path = write_json(tmp_path / "eval.json", summary)
    loaded = json.loads(path.read_text())  # strict JSON: no NaN/Infinity tokens
    assert loaded["nan"] is None and loaded["tensor"] == [1.0, None]
    assert loaded["log_px"]["mean"] == r.mean_log_px.mean and loaded["num_samples"] == 200
    assert loaded["khat"]["frac_above_0.7"] == r.frac_khat_above(0.7)
    assert not [p for p in tmp_path.iterdir() if p.name != "eval.json"]  # no temporary left behind
    png = plot_gap_histogram(r, tmp_path / "gaps.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_without_khat():
    p = PPCA()
    r = log_marginal(p.model, p.guide, p.sample_images(3), num_samples=5, seed=0)
    assert "not computed" in format_summary(r)
    assert r.to_dict()["khat"]["max"] is None


def test_a_summary_of_degenerate_weights_says_loose_not_uncomputed():
    """Log-weights a thousand nats apart (a proposal far too wide for a very peaked posterior, as an
    SOS-VAE's with a pixel variance of 1e-5): ArviZ's k-hat is infinite, which is the heaviest tail,
    not "not computed"; the summary calls the estimate loose and the JSON says k-hat was computed."""
    from vaezoo.evaluation.importance import LogMarginalResult

    g = torch.Generator().manual_seed(0)
    r = LogMarginalResult.from_log_weights(1e4 * torch.randn(1000, 5, generator=g, dtype=torch.float64))
    assert torch.isinf(r.khat).all()
    text = format_summary(r)
    assert "not computed" not in text and "k-hat > 0.7 (unreliable estimate): 100.0%" in text and "**loose**" in text
    khat = r.to_dict()["khat"]
    assert khat["computed"] and khat["frac_above_0.7"] == 1.0 and khat["median"] is None  # JSON has no infinity
    few = LogMarginalResult.from_log_weights(torch.randn(5, 3, generator=g, dtype=torch.float64))
    assert "not computed" in format_summary(few) and few.to_dict()["khat"]["computed"] is False


def test_public_names_are_the_functions_and_classes():
    import importlib
    import importlib.util

    import vaezoo.evaluation as ev

    has_jax = importlib.util.find_spec("jax") is not None
    for module in ("annealed", "bidirectional", "importance", "report", "figures") + (("numpyro_importance",) if has_jax else ()):
        importlib.import_module(f"vaezoo.evaluation.{module}")  # loading a submodule must not shadow a name
    for name in ev.__all__:
        if name == "numpyro_log_marginal" and not has_jax:
            continue
        obj = getattr(ev, name)
        assert callable(obj) and not isinstance(obj, type(ev)), name


def test_a_summary_says_when_k_hat_makes_log_px_loose():
    r = _result()
    tight = format_summary(r)
    assert (r.frac_khat_above(0.7) > 0.1) == ("**loose**" in tight)
    r.khat = torch.full_like(r.khat, 0.9)  # every datapoint's weights too heavy-tailed
    loose = format_summary(r)
    assert "**loose**" in loose and "--samples" in loose and "--ais" in loose
    r.khat = torch.full_like(r.khat, 0.3)
    assert "**loose**" not in format_summary(r)
