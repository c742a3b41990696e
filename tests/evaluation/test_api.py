"""One estimator API: every estimator takes (model, guide, x) positionally with the same keywords
and returns an EstimatorResult whose common fields and to_dict keys agree."""

import json

import pytest
import torch
from ppca import PPCA

from vaezoo.evaluation import (
    AISResult,
    AnnealingOptions,
    EstimatorResult,
    LogMarginalResult,
    ais,
    bdmc,
    log_marginal,
    reverse_ais,
    simulate,
)

COMMON = {
    "estimator", "num_samples", "num_datapoints", "seed", "log_px", "elbo", "mean_stderr_log_px", "ess", "khat",
    "wall_time_s",
}


@pytest.fixture(scope="module")
def ppca():
    return PPCA()


def _estimators(ppca):
    x = ppca.sample_images(3)
    xs, latents = simulate(ppca.model, x)
    o = AnnealingOptions(steps=3, chains=21, leapfrog_steps=2)
    kw = dict(seed=0, progress=False, dtype=torch.float64)
    return {
        "log_marginal": lambda: log_marginal(ppca.model, ppca.guide, x, 21, **kw),
        "ais": lambda: ais(ppca.model, ppca.guide, x, o, **kw),
        "ais (prior)": lambda: ais(ppca.model, None, x, o, **kw),
        "reverse_ais": lambda: reverse_ais(ppca.model, ppca.guide, xs, latents, o, **kw),
        "bdmc": lambda: bdmc(ppca.model, ppca.guide, x, o, **kw),
    }


def test_every_estimator_returns_the_common_fields(ppca):
    for name, run in _estimators(ppca).items():
        r = run()
        assert isinstance(r, EstimatorResult), name
        for field in ("log_px", "stderr", "ess", "khat"):
            t = getattr(r, field)
            assert t.shape == (3,) and torch.isfinite(t).all(), (name, field)
        assert r.num_samples == 21 and r.seed == 0 and r.wall_time > 0, name
        assert (r.elbo is not None) == isinstance(r, LogMarginalResult), name
        d = r.to_dict()
        assert COMMON <= set(d), name
        json.dumps(d, allow_nan=False)
        assert d["log_px"]["mean"] == pytest.approx(r.log_px.double().mean().item()), name
        assert d["khat"]["max"] is not None  # 21 samples: PSIS applies


def test_ais_result_fields_and_khat(ppca):
    x = ppca.sample_images(3)
    r = ais(ppca.model, ppca.guide, x, AnnealingOptions(steps=3, chains=8, leapfrog_steps=2), seed=0)
    assert isinstance(r, AISResult) and r.elbo is None and torch.isnan(r.khat).all()  # < 21 chains
    d = r.to_dict()
    assert d["estimator"] == "ais" and d["options"]["chains"] == 8 and d["elbo"] is None


def test_seed_none_is_recorded_and_reproducible(ppca):
    x = ppca.sample_images(2)
    o = AnnealingOptions(steps=2, chains=2, leapfrog_steps=1)
    torch.manual_seed(4)
    a = ais(ppca.model, ppca.guide, x, o)
    b = ais(ppca.model, ppca.guide, x, o, seed=a.seed)
    torch.testing.assert_close(a.log_weights, b.log_weights, rtol=0, atol=0)
