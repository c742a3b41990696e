"""The two-stochastic-layer entries ``vae-2l`` and ``iwae-2l`` (Burda et al. 2016): their sites and
shapes, and their model and guide classes, made linear-Gaussian, against the exact marginal
likelihood through ``evaluation.log_marginal``, IWAE and the ELBO (the per-entry tests of
tests/models/test_zoo_entries.py run them too)."""

import math

import pyro
import pytest
import torch
from torch import nn

from vaezoo import particles, traces, zoo
from vaezoo.errors import ConfigError
from vaezoo.evaluation import log_marginal
from vaezoo.inference import ELBO, IWAE
from vaezoo.models import make_likelihood
from vaezoo.models.vae2l import TwoLayerGuide, TwoLayerVAEModel
from vaezoo.nets import MLPDecoder

MIN_SCALE = 1e-4


def test_sites_shapes_and_defaults():
    m = zoo.create("iwae-2l", data_shape=(1, 28, 28))
    assert m.config.num_particles == 5 and m.config.objective == "iwae"
    assert (m.config.latent1_dim, m.config.latent2_dim, m.config.hidden1, m.config.hidden2) == (100, 50, (200, 200), (100, 100))
    assert isinstance(m.objective(), IWAE) and isinstance(zoo.create("vae-2l").objective(), ELBO)
    x = torch.bernoulli(torch.full((4, 1, 28, 28), 0.3))
    with pyro.plate("particles", 3, dim=-2):
        guide_run = traces.record(m.guide, x)
        model_run = traces.record(m.model, x, replay=guide_run.replay_values())
    assert list(guide_run.sites) == ["z1", "z2"] and list(model_run.sites) == ["z2", "z1", "x"]
    assert guide_run.sites["z1"]["value"].shape == (3, 4, 100) and guide_run.sites["z2"]["value"].shape == (3, 4, 50)
    assert model_run.sites["x"]["fn"].batch_shape == (3, 4)
    # the layers of Burda et al.: 784-200-200-100(x2), 100-100-100-50(x2); mirrored in the model
    widths = [l.out_features for l in m.guide.modules() if isinstance(l, nn.Linear)]
    assert widths == [200, 200, 200, 100, 100, 100]
    widths = [l.out_features for l in m.model.modules() if isinstance(l, nn.Linear)]
    assert widths == [100, 100, 200, 200, 200, 784]
    with pytest.raises(ConfigError, match="latent1_dim=0"):
        zoo.create("vae-2l", latent1_dim=0)
    with pytest.raises(ConfigError, match="estimator='dreg' with objective=elbo"):
        zoo.create("vae-2l", estimator="dreg")


@pytest.mark.parametrize("name, estimator", [("vae-2l", "stl"), ("iwae-2l", "dreg")])
def test_a_float64_step_with_each_estimator(name, estimator):
    pyro.set_rng_seed(0)
    m = zoo.create(name, data_shape=(6,), latent1_dim=4, latent2_dim=2, hidden1=(8,), hidden2=(5,),
                   estimator=estimator).double()
    objective = m.objective()
    x = torch.bernoulli(torch.full((5, 6), 0.5, dtype=torch.float64))
    loss, terms = objective(x)
    assert loss.dtype == torch.float64 and torch.isfinite(loss)
    grads = torch.autograd.grad(loss, list(objective.parameters()))
    assert all(torch.isfinite(g).all() for g in grads) and all(g.abs().sum() > 0 for g in grads)
    log_p, log_q = particles.log_weights(m.model, m.guide, x, num_particles=3)
    assert log_p.shape == (3, 5) and log_p.dtype == torch.float64


class LinearLoc(nn.Module):
    """``[..., n] -> [..., 2m]``: a linear mean and a fixed raw scale (softplus(raw) + MIN_SCALE = ``std``),
    the parameters a diagonal normal of the two-layer classes reads."""

    def __init__(self, weight, bias, std):
        super().__init__()
        self.weight, self.bias = torch.as_tensor(weight).reshape(-1, 1 if torch.as_tensor(weight).dim() < 2 else torch.as_tensor(weight).shape[1]), torch.as_tensor(bias)
        self.raw = torch.log(torch.expm1(torch.as_tensor(std) - MIN_SCALE)).reshape(1)

    def forward(self, h):
        loc = h @ self.weight.T + self.bias
        return torch.cat([loc, self.raw.expand(loc.shape)], -1)


def linear_gaussian(perturb=0.0):
    """The entry's model and guide classes with linear nets: z2 ~ N(0, 1), z1 | z2 ~ N(w z2 + b, s1^2),
    x | z1 ~ N(v z1 + c, s^2 I_3); the guide is the exact posterior p(z1 | x) p(z2 | z1) (moved by
    ``perturb``). Returns ``(model, guide, exact log p(x) as a function)``."""
    w, b, s1, s = 0.8, 0.3, 0.6, 0.5
    v, c = torch.tensor([1.0, -0.7, 0.4]), torch.tensor([0.2, 0.0, -0.1])
    decoder = MLPDecoder(1, (), (3,))
    with torch.no_grad():
        decoder.net[0].weight.copy_(v.reshape(3, 1))
        decoder.net[0].bias.copy_(c)
    model = TwoLayerVAEModel(LinearLoc([[w]], [b], s1), decoder, make_likelihood("normal", 1, s, False), 1, 1, MIN_SCALE)
    tau2 = w**2 + s1**2  # z1's marginal variance
    prec1 = 1 / tau2 + (v @ v) / s**2
    gain, offset = v / (s**2 * prec1), (b / tau2 - (v @ c) / s**2) / prec1
    prec2 = 1 + w**2 / s1**2
    encoder = LinearLoc(gain.reshape(1, 3) * (1 + perturb), offset + perturb, prec1**-0.5 * (1 + perturb))
    upper = LinearLoc([[w / s1**2 / prec2]], [-w * b / s1**2 / prec2 - perturb], prec2**-0.5 * (1 + perturb))
    guide = TwoLayerGuide(encoder, upper, MIN_SCALE)
    cov = tau2 * torch.outer(v, v) + s**2 * torch.eye(3)
    exact = torch.distributions.MultivariateNormal(v * b + c, covariance_matrix=cov)
    return model.double(), guide.double(), lambda x: exact.log_prob(x)


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def test_log_marginal_of_a_linear_gaussian_two_layer_pair_is_exact(float64):
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0)) * 1.5
    model, guide, exact = linear_gaussian()
    truth = exact(x)
    # the exact posterior as the proposal: every weight is p(x), so every estimate is exact
    result = log_marginal(model, guide, x, num_samples=8, seed=0)
    torch.testing.assert_close(result.log_px, truth, rtol=0, atol=1e-9)
    for objective in (ELBO(model, guide, analytic_kl=False), IWAE(model, guide, num_particles=4),
                      IWAE(model, guide, num_particles=4, estimator="dreg")):
        loss, _ = objective(x)
        torch.testing.assert_close(-loss, truth.mean(), rtol=0, atol=1e-9)
    # the closed-form KL of z2 (drawn after z1 in the guide): exact in expectation only
    pyro.set_rng_seed(0)
    with torch.no_grad():
        analytic = -ELBO(model, guide)(x.repeat(200, 1))[0]
    assert abs(analytic - truth.mean()) < 0.05
    # a guide moved away: the estimate still converges, ELBO < IWAE-50 < log p(x)
    model, guide, exact = linear_gaussian(perturb=0.3)
    result = log_marginal(model, guide, x, num_samples=1000, seed=0)
    assert ((result.log_px - truth).abs() < 4 * result.stderr + 0.01).all() and result.stderr.max() < 0.05
    pyro.set_rng_seed(0)
    with torch.no_grad():
        elbo = -ELBO(model, guide)(x.repeat(100, 1))[0]
        iwae = -IWAE(model, guide, num_particles=50)(x.repeat(100, 1))[0]
    assert elbo < iwae - 0.02 and iwae < truth.mean()
    assert math.isfinite(float(elbo))


SMALL = dict(latent1_dim=8, latent2_dim=4, hidden1=(32,), hidden2=(16,))


@pytest.mark.parametrize("name", ["vae-2l", "iwae-2l"])
def test_the_loss_falls_on_digits_and_pyro_svi_trains_it(name):
    from pyro.infer import SVI, Trace_ELBO
    from test_zoo_entries import mean_loss_first_and_last

    from vaezoo import data

    pyro.set_rng_seed(1)
    x = data.load("digits", split="train", binarize="fixed").data[:64].double()
    m = zoo.create(name, data_shape=x.shape[1:], estimator="dreg" if name == "iwae-2l" else "stl", **SMALL).double()
    first, last = mean_loss_first_and_last(m.objective(), x)
    assert last < first - 5.0, (first, last)
    svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    before = [p.detach().clone() for p in m.parameters()]
    svi.step(x)
    assert all(not torch.equal(b, p) for b, p in zip(before, m.parameters()))
