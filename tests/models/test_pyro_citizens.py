"""Zoo pairs are Pyro citizens: Pyro's own SVI, Predictive, Importance and poutine handlers see
and train the networks' parameters, in float64, with distinct param-store names for every
created model."""

import dataclasses

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI, Importance, Predictive, Trace_ELBO

from test_zoo_entries import IMAGE_ONLY

from vaezoo import data, traces, zoo

SMALL = dict(hidden=(32,), latent_dim=4)
# the entries SMALL configures, whose latent is a vector (the spatial VAEs: test_spatial_vae.py)
VECTOR_LATENT = [n for n in zoo.names() if "latent_dim" in {f.name for f in dataclasses.fields(zoo.entry(n).config)}]


def digits(n=64, flat=False):
    x = data.load("digits", split="train", binarize="fixed").data[:n].double()
    return x.reshape(n, -1) if flat else x


def network_params(module):
    return {id(p) for p in module.parameters()}


@pytest.mark.parametrize("flat", [False, True], ids=["image", "vector"])
@pytest.mark.parametrize("name", VECTOR_LATENT)
def test_pyro_svi_trains_a_zoo_entry(name, flat):
    if flat and name in IMAGE_ONLY:
        pytest.skip(f"{name} takes images only")
    pyro.set_rng_seed(0)
    x = digits(flat=flat)
    m = zoo.create(name, data_shape=x.shape[1:], **SMALL).double()
    before = [p.detach().clone() for p in m.parameters()]
    svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(x) for _ in range(60)]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.1 * abs(first), (first, last)
    # every network parameter moved, in place: the modules' own tensors are the ones Pyro trains
    assert all(not torch.equal(b, p) for b, p in zip(before, m.parameters()))


def test_param_sites_and_param_store_hold_the_modules_own_parameters():
    x = digits(8)
    m = zoo.create("vae", data_shape=x.shape[1:], **SMALL).double()
    model_trace = poutine.trace(m.model).get_trace(x)
    guide_trace = poutine.trace(m.guide).get_trace(x)
    params = lambda tr: {id(s["value"]) for s in tr.nodes.values() if s["type"] == "param"}  # noqa: E731
    assert params(model_trace) == network_params(m.model.decoder)
    assert params(guide_trace) == network_params(m.guide.encoder)
    store = pyro.get_param_store()
    prefix = m.pyro_name + "."
    mine = {n: store.get_param(n) for n in store.keys() if n.startswith(prefix)}
    assert {id(t) for t in mine.values()} == network_params(m)
    assert f"{m.pyro_name}.model.decoder$$$net.0.weight" in mine
    assert mine[f"{m.pyro_name}.model.decoder$$$net.0.weight"] is m.model.decoder.net[0].weight


def test_two_models_of_one_entry_train_under_pyro_svi_without_clearing_the_param_store():
    """Pyro's store is global and keyed by name: were the names shared, the second model's param
    sites would be the first model's tensors and SVI would not move it."""
    x = digits(32)
    models = [zoo.create("vae", data_shape=x.shape[1:], **SMALL).double() for _ in range(2)]
    assert models[0].pyro_name != models[1].pyro_name
    for m in models:
        w = m.model.decoder.net[0].weight.detach().clone()
        svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
        for _ in range(3):
            svi.step(x)
        assert not torch.equal(w, m.model.decoder.net[0].weight)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("name", VECTOR_LATENT)
def test_predictive_runs_on_a_zoo_entry(name, parallel):
    x = digits(5)
    m = zoo.create(name, data_shape=x.shape[1:], **SMALL).double()
    out = Predictive(m.model, guide=m.guide, num_samples=7, parallel=parallel)(x)
    assert out["z"].shape == (7, 5, 4) and out["z"].dtype == torch.float64
    assert torch.isfinite(out["z"]).all()


@pytest.mark.parametrize("name", VECTOR_LATENT)
def test_pyro_importance_weights_are_vaezoos_per_datapoint_weights_summed(name):
    """Pyro's Importance on the zoo pair against log p(x, z) - log q(z | x) of vaezoo's own
    recorder, for the same draws z, summed over the data plate."""
    pyro.set_rng_seed(0)
    x = digits(6)
    m = zoo.create(name, data_shape=x.shape[1:], **SMALL).double()
    imp = Importance(m.model, m.guide, num_samples=4).run(x)
    assert torch.isfinite(imp.get_log_normalizer())
    for trace, log_w in zip(imp.exec_traces, imp.log_weights):
        latents = {n: s["value"] for n, s in traces.Run(trace).sites.items() if not s["is_observed"]}
        model_run = traces.record(m.model, x, replay=latents)
        guide_run = traces.record(m.guide, x, replay=latents)
        log_p = sum(traces.site_log_prob(s) for s in model_run.sites.values())  # [N]
        log_q = sum(traces.site_log_prob(guide_run.sites[n]) for n in latents)  # [N]
        torch.testing.assert_close(torch.as_tensor(log_w, dtype=torch.float64), (log_p - log_q).sum(), rtol=1e-10, atol=1e-8)
