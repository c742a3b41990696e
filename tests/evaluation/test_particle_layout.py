"""Particles that cannot leak: linear-Gaussian pairs with an extra plate, whose log p(x) is exact, for
log_marginal, AIS and the IWAE weights of particles.log_weights; subsampling refused; Pyro's own
Importance as a reference."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Importance

from vaezoo import particles
from vaezoo.errors import ConfigError, ShapeError
from vaezoo.evaluation import AnnealingOptions, ais, log_marginal
from vaezoo.inference.objectives import IWAE


def exact_log_px(x):
    """x[n, j] = mu[j, n] + noise with mu ~ N(0, 1), noise ~ N(0, 1): N(0, 2) per entry."""
    return dist.Normal(0.0, 2**0.5).log_prob(x).sum(-1)


class Counted:
    """Counts the calls of a guide (a vectorized pass is one call, K passes of one particle are K)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x):
        self.calls += 1
        return self.fn(x)


def leaky_model(x):
    # the reproduction: the transpose moves a particle plate at dim -3 to dim -2
    with pyro.plate("data", x.shape[0], dim=-1):
        with pyro.plate("comp", 3, dim=-2):
            mu = pyro.sample("mu", dist.Normal(x.new_zeros(()), 1.0))  # [3, N]
        pyro.sample("x", dist.Normal(mu.transpose(-1, -2), 1.0).to_event(1), obs=x)


def plated_model(x):
    # the same model with the extra plate used correctly: the observation lives in both plates
    with pyro.plate("data", x.shape[0], dim=-1):
        with pyro.plate("comp", 3, dim=-2):
            mu = pyro.sample("mu", dist.Normal(x.new_zeros(()), 1.0))  # [3, N]
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x.T)


def guide(x):
    with pyro.plate("data", x.shape[0], dim=-1):
        with pyro.plate("comp", 3, dim=-2):
            pyro.sample("mu", dist.Normal(x.T * 0.5, 0.8))


@pytest.fixture(scope="module")
def x():
    return torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_log_marginal_of_the_leaky_pair_is_exact(x):
    counted = Counted(guide)
    with pytest.warns(UserWarning, match=r"site 'x' .*one particle per pass"):
        r = log_marginal(leaky_model, counted, x, num_samples=1000, seed=0)
    # the vectorized pass gave about -295 against an exact -4.35
    assert ((r.log_px - exact_log_px(x)).abs() < 5 * r.stderr + 1e-3).all()
    assert counted.calls >= 1000  # one particle per pass


def test_log_marginal_of_the_plated_pair_stays_vectorized_and_exact(x):
    counted = Counted(guide)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        r = log_marginal(plated_model, counted, x, num_samples=2000, seed=0)
    assert ((r.log_px - exact_log_px(x)).abs() < 5 * r.stderr + 1e-3).all()
    # two probe runs and one run per block of 1024 particles: vectorized
    assert counted.calls <= 4


@pytest.mark.parametrize("with_guide", [True, False])
def test_ais_of_the_plated_pair_is_exact(x, with_guide):
    o = AnnealingOptions(steps=30, chains=200, leapfrog_steps=3)
    r = ais(plated_model, guide if with_guide else None, x, o, seed=1)
    # measured |error| < 2 stderr over seeds 0-2 (stderr ~0.005 from the guide, ~0.02 from the prior)
    assert ((r.log_px - exact_log_px(x)).abs() < 5 * r.stderr + 0.01).all()


def test_ais_refuses_the_leaky_pair_naming_the_site(x):
    with pytest.raises(ShapeError, match=r"site 'x' .*chains out of their plate") as info:
        ais(leaky_model, guide, x, steps=3, chains=2, seed=0)
    assert "\n" not in str(info.value)


def test_iwae_weights_of_the_leaky_pair(x):
    with pytest.warns(UserWarning, match="site 'x'"):
        particle_dim, uses_params = particles.probe(leaky_model, guide, x)
    assert particle_dim is None and not uses_params
    torch.manual_seed(0)
    log_p, log_q = particles.log_weights(leaky_model, guide, x, 1000, particle_dim)
    assert log_p.shape == log_q.shape == (1000, 4)
    iwae = torch.logsumexp(log_p - log_q, 0) - math.log(1000)
    # the guide is close to the posterior (weights' relative std ~0.3): IWAE-1000 within 0.03 of exact
    torch.testing.assert_close(iwae, exact_log_px(x), atol=0.03, rtol=0)
    # a vectorized pass that leaks is caught on a checked call, which falls back to the loop
    with pytest.warns(UserWarning, match="site 'x'"):
        log_p, log_q = particles.log_weights(leaky_model, guide, x, 500, -3, check=True)
    torch.testing.assert_close(torch.logsumexp(log_p - log_q, 0) - math.log(500), exact_log_px(x), atol=0.03, rtol=0)


def test_iwae_objective_of_the_leaky_pair(x):
    objective = IWAE(leaky_model, guide, num_particles=1000)
    torch.manual_seed(1)
    with pytest.warns(UserWarning, match="site 'x'"):
        _, terms = objective(x)
    _, again = objective(x)  # later (unchecked) calls run one particle per pass too
    exact = exact_log_px(x).mean()
    assert abs(terms["iwae"] - exact) < 0.03 and abs(again["iwae"] - exact) < 0.03


def test_iwae_weights_of_the_plated_pair_stay_vectorized(x):
    particle_dim, _ = particles.probe(plated_model, guide, x)
    assert particle_dim == -3
    counted = Counted(guide)
    torch.manual_seed(0)
    log_p, log_q = particles.log_weights(plated_model, counted, x, 3000, particle_dim)
    assert counted.calls == 1
    torch.testing.assert_close(torch.logsumexp(log_p - log_q, 0) - math.log(3000), exact_log_px(x), atol=0.03, rtol=0)


def subsampled(model_or_guide):
    def fn(x):
        with pyro.plate("data", x.shape[0], subsample_size=2, dim=-1) as idx:
            xi = x[idx]
            loc = xi * 0.5 if model_or_guide == "guide" else torch.zeros_like(xi)
            mu = pyro.sample("mu", dist.Normal(loc, 1.0).to_event(1))
            if model_or_guide == "model":
                pyro.sample("x", dist.Normal(mu, 1.0).to_event(1), obs=xi)

    return fn


def test_subsampling_is_refused(x):
    """The probe's two datapoints are not subsampled by subsample_size=2: the passes themselves are
    checked (cheaply), on the estimator's blocks (8 datapoints for log_marginal) or the full data."""
    model, g = subsampled("model"), subsampled("guide")
    for run in (
        lambda: log_marginal(model, g, x, num_samples=10, seed=0),
        lambda: ais(model, g, x, steps=2, chains=2, seed=0),
        lambda: particles.log_weights(model, g, x, 3),
    ):
        with pytest.raises(ConfigError, match=r"plate 'data' subsamples 2 of its (4|8) elements.*without subsample_size") as info:
            run()
        assert "\n" not in str(info.value)


def test_one_datapoint_against_pyro_importance(x):
    """For one datapoint, summing over the data plate (what Pyro's Importance does) is harmless:
    Pyro's estimate and ours agree within their Monte Carlo errors, and with the exact value."""
    x1 = x[:1]
    torch.manual_seed(0)
    imp = Importance(plated_model, guide, num_samples=1000).run(x1)
    pyro_log_px = imp.get_log_normalizer().item()
    log_w = torch.stack([w.detach() for w in imp.log_weights])  # [K]
    pyro_elbo = log_w.mean().item()
    ours = log_marginal(plated_model, guide, x1, num_samples=1000, seed=0)
    se = math.sqrt(ours.stderr.item() ** 2 + (log_w.exp().std() / log_w.exp().mean()).item() ** 2 / 1000)
    assert abs(ours.log_px.item() - pyro_log_px) < 5 * se + 1e-3
    assert abs(ours.log_px.item() - exact_log_px(x1).item()) < 5 * ours.stderr.item() + 1e-3
    elbo_se = math.sqrt(2 * log_w.var().item() / 1000)
    assert abs(ours.elbo.item() - pyro_elbo) < 5 * elbo_se


def test_a_reshape_with_the_batch_size_falls_back_and_stays_exact():
    """A decoder reshaped with x.shape[0] (against the contract) folds the particles into the event:
    caught from the event shape on the probe pass, and run one particle per pass."""
    from ppca import PPCA

    p = PPCA()

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(p.k), 1.0).to_event(1))
            loc = (z @ p.W.T + p.b).reshape(x.shape[0], -1)  # [N, K * D] under K particles
            pyro.sample("x", dist.Normal(loc, p.sigma).to_event(1), obs=x.reshape(x.shape[0], -1))

    x = p.sample_images(3)
    with pytest.warns(UserWarning, match=r"site 'x' has event shape \(\d+,\) instead of \(6,\)"):
        r = log_marginal(model, p.guide, x, num_samples=500, seed=0)
    assert ((r.log_px - p.log_px(x)).abs() < 5 * r.stderr + 1e-3).all()
    with pytest.raises(ShapeError, match="site 'x' has event shape"):
        ais(model, p.guide, x, steps=2, chains=2, seed=0)


def test_point_mass_guides_are_refused_by_every_estimator():
    """A deterministic encoder (a Delta guide site) is no proposal: log_marginal, AIS and IWAE
    would return log p(x, z*) as if it were log p(x); each refuses in one line instead."""
    from vaezoo.errors import SiteError

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=x.dtype), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Delta(0.5 * x).to_event(1))

    x = torch.randn(3, 2, dtype=torch.float64)
    for run in (
        lambda: log_marginal(model, guide, x, num_samples=10, seed=0),
        lambda: ais(model, guide, x, steps=2, chains=2, seed=0),
        lambda: IWAE(model, guide, num_particles=2)(x),
    ):
        with pytest.raises(SiteError) as err:
            run()
        assert "\n" not in str(err.value) and "point mass" in str(err.value) and "'z'" in str(err.value)


def test_a_point_mass_against_a_flat_prior_is_scored_at_its_value_and_never_annealed():
    """A Delta guide site against a flat (ImproperUniform) model site, as a transformer VAE's pose
    without prior: log_marginal estimates log p(x | u*) of the rest of the model (exact here: the
    linear-Gaussian z given u*); AIS refuses, from the guide and from the (improper) prior."""
    from torch.distributions import constraints

    from vaezoo.errors import SiteError

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            u = pyro.sample("u", dist.ImproperUniform(constraints.real, (x.shape[0],), (2,)))
            z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=x.dtype), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z + u, 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("u", dist.Delta(0.25 * x).to_event(1))
            pyro.sample("z", dist.Normal(0.3 * x, 0.9).to_event(1))

    x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = dist.Normal(0.25 * x, 2**0.5).log_prob(x).sum(-1)  # x - u* ~ N(0, 2 I)
    r = log_marginal(model, guide, x, num_samples=4000, seed=0)
    assert ((r.log_px - exact).abs() < 5 * r.stderr + 1e-3).all(), (r.log_px, exact)
    for g in (guide, None):
        with pytest.raises(SiteError) as err:
            ais(model, g, x, steps=2, chains=2, seed=0)
        assert "\n" not in str(err.value)
