"""The particle probe on ordinary programs that it used to crash or misread (issue 19): a reshape with
the batch size into a fixed shape, a PyroModule decoder with PyroSample weights, a subsampled data
plate, and pyro.deterministic sites. Each gives Pyro's answer (exact log p(x) of a linear-Gaussian
model, or the numbers of the same pair written without the offending construct) or one line."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, PyroSample
from torch import nn

from vaezoo import particles
from vaezoo.errors import ConfigError, ShapeError, SiteError
from vaezoo.evaluation import ais, log_marginal
from vaezoo.inference.objectives import IWAE

W = torch.tensor([[1.0, 0.5], [0.2, -1.0], [0.3, 0.3], [-0.4, 0.1]], dtype=torch.float64)  # [4, 2]


def exact_log_px(x):
    """x = W z + noise, z ~ N(0, I_2), noise ~ N(0, I_4): x ~ N(0, W W^T + I), per datapoint."""
    cov = W @ W.T + torch.eye(4, dtype=torch.float64)
    return dist.MultivariateNormal(torch.zeros(4, dtype=torch.float64), cov).log_prob(x.reshape(-1, 4))


def flat_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ W.T, 1.0).to_event(1), obs=x.reshape(x.shape[0], 4))


def reshaping_model(x):
    # the usual image decoder's last line: a fixed shape with the batch size, which a particle plate breaks
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
        mean = (z @ W.T).reshape(x.shape[0], 1, 2, 2)
        pyro.sample("x", dist.Normal(mean, 1.0).to_event(3), obs=x)


def guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x.reshape(x.shape[0], 4)[:, :2] * 0.4, 0.9).to_event(1))


@pytest.fixture(scope="module")
def x():
    return torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


# --- (a) a reshape with the batch size -----------------------------------------------------------


def test_log_marginal_of_a_batch_size_reshape_falls_back_and_is_exact(x):
    # the probe used to raise RuntimeError: shape '[2, 1, 2, 2]' is invalid for input of size 24
    with pytest.warns(UserWarning, match=r"the pair raised RuntimeError: shape .* one particle per pass"):
        r = log_marginal(reshaping_model, guide, x, num_samples=100, seed=0)
    assert ((r.log_px - exact_log_px(x)).abs() < 5 * r.stderr + 1e-3).all()
    # one particle per pass draws what the flat pair drawing one particle per pass draws
    flat = log_marginal(flat_model, guide, x, num_samples=100, seed=0)
    assert ((flat.log_px - exact_log_px(x)).abs() < 5 * flat.stderr + 1e-3).all()


def test_iwae_of_a_batch_size_reshape_falls_back_to_the_one_by_one_weights(x):
    objective = IWAE(reshaping_model, guide, num_particles=4)
    with pytest.warns(UserWarning, match=r"the pair raised RuntimeError"):
        objective(x)  # the first call probes
    torch.manual_seed(1)
    loss, _ = objective(x)
    torch.manual_seed(1)  # the same draws, one particle per pass, through the flat pair
    log_p, log_q = particles.log_weights(flat_model, guide, x, 4, None, check=False)
    assert torch.allclose(-loss, ((log_p - log_q).logsumexp(0) - math.log(4)).mean())


def test_ais_refuses_a_batch_size_reshape_in_one_line(x):
    with pytest.raises(ShapeError, match=r"^the pair raised RuntimeError: shape .*cannot run vectorized") as err:
        ais(reshaping_model, guide, x, steps=2, chains=2, seed=0)
    assert "\n" not in str(err.value)


# --- (b) a PyroModule decoder with PyroSample weights ---------------------------------------------


class BayesianDecoder(PyroModule):
    def __init__(self):
        super().__init__()
        self.lin = PyroModule[nn.Linear](2, 4).double()
        self.lin.weight = PyroSample(dist.Normal(0.0, 1.0).expand([4, 2]).to_event(2))

    def forward(self, z):
        return self.lin(z)


def bayesian_model(decoder):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), 1.0).to_event(1), obs=x.reshape(x.shape[0], 4))

    return model


def guide_with_weights(x):
    # the weights as a global latent of the guide, as an AutoNormal would have them
    pyro.sample("lin.weight", dist.Normal(x.new_zeros(4, 2), 1.0).to_event(2))
    guide(x)


def _estimators():
    return [
        lambda m, g, x: log_marginal(m, g, x, num_samples=10, seed=0),
        lambda m, g, x: ais(m, g, x, steps=2, chains=2, seed=0),
        lambda m, g, x: IWAE(m, g, num_particles=3)(x),
    ]


GLOBAL = r"^site 'lin.weight' is outside the 'data' plate; expected"
PER_DATAPOINT = r"^site 'lin.weight' has batch shape \(\) in the guide but \(3,\) in the model"  # the objective's check


@pytest.mark.parametrize("run, message", zip(_estimators(), [GLOBAL, GLOBAL, PER_DATAPOINT]), ids=["log_marginal", "ais", "iwae"])
def test_pyrosample_weights_are_a_global_latent_refused_in_one_line(x, run, message):
    # under the particle plate the guide's weights got a particle dimension and nn.Linear raised
    # RuntimeError: t() expects a tensor with <= 2 dimensions
    model = bayesian_model(BayesianDecoder())
    with pytest.raises(SiteError, match=message) as err:
        run(model, guide_with_weights, x)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("run", _estimators()[:2], ids=["log_marginal", "ais"])
def test_pyrosample_weights_drawn_per_datapoint_are_refused_in_one_line(x, run):
    # called inside the data plate, Pyro draws the weights once per datapoint and the decoder
    # raises on them (under Pyro's Trace_ELBO too); the guide lacks them: refused by name
    model = bayesian_model(BayesianDecoder())
    with pytest.raises(SiteError, match=r"^the guide has no site 'lin.weight', a latent site of the model") as err:
        run(model, guide, x)
    assert "\n" not in str(err.value)


# --- (c) a subsampled data plate -------------------------------------------------------------------


def subsampled_model(x):
    with pyro.plate("data", len(x), subsample_size=3) as idx:
        z = pyro.sample("z", dist.Normal(x.new_zeros(len(idx), 2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ W.T, 1.0).to_event(1), obs=x[idx].reshape(len(idx), 4))


def subsampled_guide(x):
    with pyro.plate("data", len(x), subsample_size=3) as idx:
        pyro.sample("z", dist.Normal(x[idx].reshape(len(idx), 4)[:, :2] * 0.4, 0.9).to_event(1))


@pytest.mark.parametrize("run", _estimators()[:2], ids=["log_marginal", "ais"])
def test_a_subsample_size_above_two_is_refused_in_one_line(run):
    # the probe ran on x[:2], where Pyro raised ValueError: subsample_size does not match len(subsample), 3 vs 2
    x = torch.randn(5, 1, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with pytest.raises(ConfigError, match=r"^plate 'data' subsamples 3 of its 5 elements; expected no subsampling") as err:
        run(subsampled_model, subsampled_guide, x)
    assert "\n" not in str(err.value)


# --- pyro.deterministic -----------------------------------------------------------------------------


def deterministic_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
        mean = pyro.deterministic("mean", z @ W.T)  # event_dim defaults to the value's ndim
        pyro.sample("x", dist.Normal(mean, 1.0).to_event(1), obs=x.reshape(x.shape[0], 4))


def test_log_marginal_with_a_deterministic_site_stays_vectorized_with_the_same_numbers(x):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # it warned of a particle leak at site 'mean'
        r = log_marginal(deterministic_model, guide, x, num_samples=300, seed=2, iwae_k=[5])
    flat = log_marginal(flat_model, guide, x, num_samples=300, seed=2, iwae_k=[5])
    assert torch.equal(r.log_px, flat.log_px) and torch.equal(r.elbo, flat.elbo)


def test_ais_accepts_a_deterministic_site_with_the_same_numbers(x):
    # it refused the pair: site 'mean' has event shape (3, 2, 4) instead of (2, 4)
    r = ais(deterministic_model, guide, x, steps=4, chains=3, seed=2)
    flat = ais(flat_model, guide, x, steps=4, chains=3, seed=2)
    assert torch.allclose(r.log_px, flat.log_px)


def test_iwae_with_a_deterministic_site_stays_vectorized_with_the_same_numbers(x):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.manual_seed(4)
        loss, _ = IWAE(deterministic_model, guide, num_particles=4)(x)
    torch.manual_seed(4)
    flat, _ = IWAE(flat_model, guide, num_particles=4)(x)
    assert torch.allclose(loss, flat)


def test_weights_drawn_per_datapoint_by_the_model_and_once_by_the_guide_are_refused_as_pyro_does(x):
    # the ELBO returned a number with the weights' prior counted once per datapoint; Pyro's Trace_ELBO
    # raises "Model and guide shapes disagree at site 'lin.weight'"
    from pyro.infer import Trace_ELBO

    from vaezoo.inference.objectives import ELBO

    model = bayesian_model(BayesianDecoder())
    with pytest.raises(ValueError, match="shapes disagree at site 'lin.weight'"):
        Trace_ELBO().loss(model, guide_with_weights, x)
    with pytest.raises(SiteError, match=r"^site 'lin.weight' has batch shape \(\) in the guide but \(3,\) in the model"):
        ELBO(model, guide_with_weights)(x)
