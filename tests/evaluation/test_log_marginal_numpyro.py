"""The NumPyro estimator on the PPCA pair written in NumPyro: agreement with the closed form and with
the Pyro estimator, chunk independence, scaling and bad inputs."""

import numpy as np
import pytest
import torch
from ppca import PPCA

from vaezoo.errors import ConfigError, ShapeError, SiteError
from vaezoo.evaluation import log_marginal

jax = pytest.importorskip("jax")
numpyro = pytest.importorskip("numpyro")
import jax.numpy as jnp  # noqa: E402
import numpyro.distributions as ndist  # noqa: E402
from numpyro import handlers  # noqa: E402

from vaezoo.evaluation import numpyro_log_marginal  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def x64():
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


class NumPyroPPCA:
    """tests/evaluation/ppca.py's pair, in NumPyro, with the same parameters."""

    def __init__(self, p: PPCA):
        self.p = p
        self.W, self.b, self.A, self.s = (np.asarray(t.numpy()) for t in (p.W, p.b, p.A, p.guide_scale))

    def model(self, x):
        with numpyro.plate("data", x.shape[0], dim=-1):
            z = numpyro.sample("z", ndist.Normal(jnp.zeros(self.p.k), 1.0).to_event(1))
            loc = (z @ self.W.T + self.b).reshape(z.shape[:-1] + self.p.shape)
            numpyro.sample("x", ndist.Normal(loc, self.p.sigma).to_event(3), obs=x)

    def guide(self, x, extra=False, only=False):
        with numpyro.plate("data", x.shape[0], dim=-1):
            loc = (x.reshape(x.shape[0], -1) - self.b) @ self.A.T
            if not only:
                numpyro.sample("z", ndist.Normal(loc, self.s).to_event(1))
            if extra:
                numpyro.sample("pose", ndist.Normal(jnp.zeros(2), 1.0).to_event(1))


@pytest.fixture(scope="module")
def pair():
    p = PPCA()
    return p, NumPyroPPCA(p), p.sample_images(12)


def test_agrees_with_exact_and_with_pyro(pair):
    p, npair, x = pair
    r = numpyro_log_marginal(npair.model, npair.guide, x.numpy(), num_samples=5000, seed=0, iwae_k=(1, 10))
    exact = p.log_px(x)
    assert r.log_px.shape == (12,) and r.log_px.dtype == torch.float64
    assert ((r.log_px - exact).abs() < 5 * r.stderr + 1e-3).all()
    kl = p.kl_guide_posterior(x)
    assert torch.allclose(r.elbo, exact - kl, atol=0.1)
    assert torch.allclose(r.iwae[1], r.elbo)
    assert ((r.ess >= 1) & (r.ess <= 5000)).all() and torch.isfinite(r.khat).all()
    t = log_marginal(p.model, p.guide, x, num_samples=5000, seed=0)
    tol = 5 * torch.sqrt(r.stderr**2 + t.stderr**2) + 1e-3
    assert ((r.log_px - t.log_px).abs() < tol).all()
    assert torch.allclose(r.elbo, t.elbo, atol=0.1)


def test_chunks_and_scales_do_not_change_the_numbers(pair):
    _, npair, x = pair
    a = numpyro_log_marginal(npair.model, npair.guide, x, num_samples=1000, seed=3)
    b = numpyro_log_marginal(npair.model, npair.guide, x, num_samples=1000, seed=3, particle_chunk=300, data_chunk=5)
    assert torch.allclose(a.log_px, b.log_px, rtol=1e-9, atol=1e-9)
    c = numpyro_log_marginal(npair.model, npair.guide, x, num_samples=1000, seed=jax.random.PRNGKey(4))
    assert not torch.allclose(a.log_px, c.log_px) and c.seed is None and a.seed == 3
    # training-time scaling (handlers.scale) never enters a weight
    scaled = numpyro_log_marginal(
        handlers.scale(npair.model, 0.1), handlers.scale(npair.guide, 0.1), x, num_samples=1000, seed=3
    )
    assert torch.allclose(scaled.log_px, a.log_px) and torch.allclose(scaled.elbo, a.elbo)


def test_bad_inputs(pair):
    _, npair, x = pair
    with pytest.raises(SiteError, match="'pose'"):
        numpyro_log_marginal(npair.model, lambda x: npair.guide(x, extra=True), x, num_samples=5)
    with pytest.raises(SiteError, match="'z'"):
        numpyro_log_marginal(npair.model, lambda x: npair.guide(x, only=True), x, num_samples=5)
    # an error raised inside the pair (here a matmul of mismatched shapes) propagates unchanged
    with pytest.raises(ValueError, match="Incompatible shapes for broadcasting"):
        numpyro_log_marginal(npair.model, npair.guide, x.reshape(12, 2, 3)[:, 0], num_samples=5)
    with pytest.raises(ShapeError, match=r"\(0, 1, 2, 3\)"):
        numpyro_log_marginal(npair.model, npair.guide, x[:0], num_samples=5)
    with pytest.raises(ConfigError, match="iwae_k=6"):
        numpyro_log_marginal(npair.model, npair.guide, x, num_samples=5, iwae_k=(6,))


def test_a_global_latent_is_refused_as_the_pyro_estimator_refuses_it():
    # a bias shared by every datapoint, in the model and the guide: numpyro_log_marginal returned numbers
    import pyro
    import pyro.distributions as dist

    def model(x):
        b = numpyro.sample("b", ndist.Normal(0.0, 1.0))
        with numpyro.plate("data", x.shape[0], dim=-1):
            numpyro.sample("x", ndist.Normal(b, 1.0), obs=x)

    def guide(x):
        numpyro.sample("b", ndist.Normal(0.0, 0.5))

    def pyro_model(x):
        b = pyro.sample("b", dist.Normal(x.new_zeros(()), 1.0))
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("x", dist.Normal(b, 1.0), obs=x)

    def pyro_guide(x):
        pyro.sample("b", dist.Normal(x.new_zeros(()), 0.5))

    x = np.linspace(-1.0, 1.0, 4)
    with pytest.raises(SiteError) as pyro_err:
        log_marginal(pyro_model, pyro_guide, torch.from_numpy(x), num_samples=5, seed=0)
    with pytest.raises(SiteError) as err:
        numpyro_log_marginal(model, guide, x, num_samples=5, seed=0)
    assert str(err.value) == str(pyro_err.value) == (
        "site 'b' is outside the 'data' plate; expected every site to live inside pyro.plate('data', B, dim=-1)"
    )
