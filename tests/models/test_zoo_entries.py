"""Every zoo entry, on image data and on vector data: a training step in float32 and float64, model
and guide sites agree, the loss falls on digits, and the model broadcasts over a particle plate."""

import dataclasses

import pyro
import pytest
import torch

from vaezoo import data, particles, traces, zoo
from vaezoo.errors import ConfigError, ShapeError, UnknownNameError

SHAPE = (1, 8, 8)
def _default_net(name):
    return {f.name: f.default for f in dataclasses.fields(zoo.entry(name).config)}.get("net")


# entries that warp images spatially take images only (tests/models/test_transformer_vae.py), and so
# do entries whose default nets are convolutional (sos-vae-paper; net=mlp takes vectors)
IMAGE_ONLY = {n for n in zoo.names() if n.startswith(("tvae-", "dtvae-")) or _default_net(n) == "conv"}


def entries():
    return zoo.names()


def vector_latent_entries():
    """The entries with a vector latent of ``latent_dim`` units, which take any data shape (the spatial
    VAEs take images only and have their own config: tests/models/test_spatial_vae.py)."""
    return [
        n for n in entries()
        if n not in IMAGE_ONLY and "latent_dim" in {f.name for f in dataclasses.fields(zoo.entry(n).config)}
    ]


# image data for every entry, vector data for the entries that take them
CASES = [pytest.param(n, SHAPE, id=f"{n}-image") for n in entries()] + [
    pytest.param(n, (13,), id=f"{n}-vector") for n in vector_latent_entries()
]


def batch(n=6, dtype=torch.float32, seed=0, shape=SHAPE):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.rand((n,) + tuple(shape), generator=g)).to(dtype)


@pytest.mark.parametrize("name,shape", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_training_step(name, dtype, shape):
    pyro.set_rng_seed(0)
    m = zoo.create(name, data_shape=shape).to(dtype)
    objective = m.objective()
    opt = torch.optim.Adam(objective.parameters(), lr=1e-3)
    x = batch(dtype=dtype, shape=shape)
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


@pytest.mark.parametrize("name,shape", CASES)
def test_model_and_guide_sites_agree(name, shape):
    m = zoo.create(name, data_shape=shape)
    x = batch(shape=shape)
    guide_run = traces.record(m.guide, x)
    model_run = traces.record(m.model, x, replay=guide_run.replay_values())
    traces.check_sites(model_run.sites, guide_run.sites)  # raises on a mismatch
    latents = [n for n, s in model_run.sites.items() if not s["is_observed"]]
    assert latents and "x" in model_run.sites and model_run.sites["x"]["is_observed"]
    for site in list(model_run.sites.values()) + list(guide_run.sites.values()):
        assert any(f.name == "data" and f.dim == -1 for f in site["cond_indep_stack"])
    obs = model_run.sites["x"]["fn"]
    assert obs.batch_shape == (6,) and obs.event_shape == shape


@pytest.mark.parametrize("name,shape", CASES)
def test_model_runs_under_particle_plate(name, shape):
    m = zoo.create(name, data_shape=shape)
    x = batch(n=5, shape=shape)
    log_p, log_q = particles.log_weights(m.model, m.guide, x, num_particles=3)
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


def mean_loss_first_and_last(objective, x, steps=40, lr=3e-3, window=5):
    """Trains ``objective`` on ``x`` with Adam for ``steps`` steps; the mean loss of the first and of
    the last ``window`` steps."""
    opt = torch.optim.Adam(objective.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss, _ = objective(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return sum(losses[:window]) / window, sum(losses[-window:]) / window


@pytest.mark.parametrize("flat", [False, True], ids=["image", "vector"])
@pytest.mark.parametrize("name", vector_latent_entries())
def test_loss_falls_on_digits(name, flat):
    pyro.set_rng_seed(1)
    ds = data.load("digits", split="train", binarize="fixed")
    x = ds.data[:256]
    if flat:
        x = x.reshape(256, -1)  # the 8x8 digits as vectors [B, 64]
    m = zoo.create(name, data_shape=x.shape[1:], hidden=(64,), latent_dim=8)
    first, last = mean_loss_first_and_last(m.objective(), x)
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


@pytest.mark.parametrize("likelihood", ["bernoulli", "normal", "continuous-bernoulli"])
def test_vector_likelihoods_against_torch(likelihood):
    """On vectors the observation is one event of D entries: log p(x | z) is the sum over the D
    entries of torch's own one-dimensional log-density."""
    torch.manual_seed(0)
    m = zoo.create("vae", data_shape=(7,), likelihood=likelihood, likelihood_scale=0.3, hidden=(5,)).double()
    x = torch.rand(4, 7, dtype=torch.float64)
    if likelihood == "bernoulli":
        x = x.round()
    run = traces.record(m.model, x)
    site = run.sites["x"]
    out = m.model.decoder(run.sites["z"]["value"])  # [4, 7]
    ref = {
        "bernoulli": lambda: torch.distributions.Bernoulli(logits=out),
        "normal": lambda: torch.distributions.Normal(out, 0.3),
        "continuous-bernoulli": lambda: torch.distributions.ContinuousBernoulli(logits=out),
    }[likelihood]()
    assert site["fn"].event_shape == (7,) and site["fn"].batch_shape == (4,)
    torch.testing.assert_close(site["fn"].log_prob(x), ref.log_prob(x).sum(-1))
    assert m.sample(3).shape == (3, 7) and m.reconstruct(x).shape == (4, 7)


def test_conv_nets_refuse_data_that_are_not_images():
    for shape in [(20,), (28, 28), (1, 2, 8, 8)]:
        with pytest.raises(ConfigError, match=r"need image data of shape \(C, H, W\).*use the MLP nets"):
            zoo.create("vae", data_shape=shape, net="conv")


def test_registry_and_config_errors():
    assert {"vae", "iwae"} <= set(zoo.names())
    assert all(zoo.describe(n) for n in zoo.names())
    with pytest.raises(UnknownNameError, match="unknown model 'nope'"):
        zoo.create("nope")
    with pytest.raises(ConfigError, match="no config field 'widht'"):
        zoo.create("vae", widht=3)
    with pytest.raises(ConfigError, match="likelihood"):
        zoo.create("vae", likelihood="poisson")
    for bad in [(), (0, 3), (2.5,), (True, 3), 784, "1,28,28", None]:
        with pytest.raises(ShapeError, match=r"data_shape=.*expected a non-empty tuple of positive integers"):
            zoo.create("vae", data_shape=bad)
    cfg = zoo.make_config("vae", {"hidden": "300,100", "learn_scale": "true", "binarize": "none"})
    assert cfg.hidden == (300, 100) and cfg.learn_scale is True and cfg.binarize is None
    with pytest.raises(ShapeError, match=r"\[N, 1, 8, 8\]"):
        zoo.create("vae", data_shape=SHAPE).reconstruct(torch.zeros(2, 64))
