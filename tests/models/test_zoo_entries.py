"""Every zoo entry: a training step in float32 and float64, model and guide sites agree, the loss
falls on digits, and the model broadcasts over a particle plate."""

import pyro
import pytest
import torch

from vaezoo import data, traces, zoo
from vaezoo.errors import ConfigError, ShapeError, UnknownNameError

SHAPE = (1, 8, 8)


def entries():
    return zoo.names()


def batch(n=6, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.rand((n,) + SHAPE, generator=g)).to(dtype)


@pytest.mark.parametrize("name", entries())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_training_step(name, dtype):
    pyro.set_rng_seed(0)
    m = zoo.create(name, data_shape=SHAPE).to(dtype)
    objective = m.objective()
    opt = torch.optim.Adam(objective.parameters(), lr=1e-3)
    x = batch(dtype=dtype)
    loss, terms = objective(x)
    assert loss.dtype == dtype and loss.shape == ()
    assert torch.isfinite(loss)
    before = [p.detach().clone() for p in objective.parameters()]
    opt.zero_grad()
    loss.backward()
    for p in objective.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, objective.parameters()))
    for v in terms.values():
        assert v.dtype == dtype


@pytest.mark.parametrize("name", entries())
def test_model_and_guide_sites_agree(name):
    m = zoo.create(name, data_shape=SHAPE)
    x = batch()
    guide_run = traces.record(m.guide, x)
    model_run = traces.record(m.model, x, replay=guide_run.replay_values())
    traces.check_sites(model_run.sites, guide_run.sites)  # raises on a mismatch
    latents = [n for n, s in model_run.sites.items() if not s["is_observed"]]
    assert latents and "x" in model_run.sites and model_run.sites["x"]["is_observed"]
    for site in list(model_run.sites.values()) + list(guide_run.sites.values()):
        assert any(f.name == "data" and f.dim == -1 for f in site["cond_indep_stack"])


@pytest.mark.parametrize("name", entries())
def test_model_runs_under_particle_plate(name):
    m = zoo.create(name, data_shape=SHAPE)
    x = batch(n=5)
    log_p, log_q = traces.log_weights(m.model, m.guide, x, num_particles=3)
    assert log_p.shape == (3, 5) and log_q.shape == (3, 5)
    assert torch.isfinite(log_p).all() and torch.isfinite(log_q).all()
    # particle k of the vectorized pass equals a single-particle pass with the same latents
    with pyro.plate("particles", 3, dim=-2):
        guide_run = traces.record(m.guide, x)
    values = guide_run.replay_values()
    single = {k: v[1] for k, v in values.items() if k != "particles" and k != "data"}
    run = traces.record(m.model, x, replay=single)
    lp1 = sum(traces.site_log_prob(s) for s in run.sites.values())
    with pyro.plate("particles", 3, dim=-2):
        run3 = traces.record(m.model, x, replay={k: v for k, v in values.items() if k not in ("particles", "data")})
    lp3 = sum(traces.site_log_prob(s) for s in run3.sites.values())
    torch.testing.assert_close(lp3[1], lp1, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", entries())
def test_loss_falls_on_digits(name):
    pyro.set_rng_seed(1)
    ds = data.load("digits", split="train", binarize="fixed")
    x = ds.data[:256]
    m = zoo.create(name, data_shape=ds.shape, hidden=(64,), latent_dim=8)
    objective = m.objective()
    opt = torch.optim.Adam(objective.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss, _ = objective(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 5.0, (first, last)


@pytest.mark.parametrize("net", ["mlp", "conv"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "normal", "continuous-bernoulli"])
def test_nets_and_likelihoods(net, likelihood):
    m = zoo.create("vae", data_shape=(1, 8, 8), net=net, likelihood=likelihood, learn_scale=True).double()
    x = batch(dtype=torch.float64)
    loss, _ = m.objective()(x)
    assert torch.isfinite(loss)
    assert m.sample(3).shape == (3, 1, 8, 8)
    assert m.reconstruct(x).shape == x.shape


def test_registry_and_config_errors():
    assert {"vae", "iwae"} <= set(zoo.names())
    assert all(zoo.describe(n) for n in zoo.names())
    with pytest.raises(UnknownNameError, match="unknown model 'nope'"):
        zoo.create("nope")
    with pytest.raises(ConfigError, match="no config field 'widht'"):
        zoo.create("vae", widht=3)
    with pytest.raises(ConfigError, match="likelihood"):
        zoo.create("vae", likelihood="poisson")
    with pytest.raises(ShapeError, match="expected"):
        zoo.create("vae", data_shape=(28, 28))
    cfg = zoo.make_config("vae", {"hidden": "300,100", "learn_scale": "true", "binarize": "none"})
    assert cfg.hidden == (300, 100) and cfg.learn_scale is True and cfg.binarize is None
    with pytest.raises(ShapeError, match=r"\[N, 1, 8, 8\]"):
        zoo.create("vae", data_shape=SHAPE).reconstruct(torch.zeros(2, 64))
