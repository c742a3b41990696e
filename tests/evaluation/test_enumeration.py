"""log_marginal and ais on model-side enumeration (issue 19): a discrete site the model marks for
enumeration and the guide does not draw is summed out exactly, log p(x, z) = log sum_y p(x, y, z), as
TraceEnum_ELBO does. Checked against Gaussian mixtures whose log p(x) is exact, and against
TraceEnum_ELBO itself on the same draws."""

import itertools
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate

from vaezoo.errors import SiteError
from vaezoo.evaluation import AnnealingOptions, ais, log_marginal
from vaezoo.evaluation.seeding import block_seed
from vaezoo.inference.objectives import IWAE

PI = torch.tensor([0.3, 0.7], dtype=torch.float64)
MU = torch.tensor([-2.0, 1.5], dtype=torch.float64)
S = 0.5


def mixture(x):
    """y ~ Cat(PI), z ~ N(0, 1), x | y, z ~ N(MU[y] + z, S^2), y enumerated in the model."""
    with pyro.plate("data", x.shape[0]):
        y = pyro.sample("y", dist.Categorical(PI), infer={"enumerate": "parallel"})
        z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
        pyro.sample("x", dist.Normal(MU[y] + z, S), obs=x)


@config_enumerate(default="sequential")  # summed in parallel all the same
def mixture_of_latents(x):
    """y ~ Cat(PI), z | y ~ N(MU[y], 1), x | z ~ N(z, S^2): z's own density depends on y."""
    with pyro.plate("data", x.shape[0]):
        y = pyro.sample("y", dist.Categorical(PI))
        z = pyro.sample("z", dist.Normal(MU[y], 1.0))
        pyro.sample("x", dist.Normal(z, S), obs=x)


def guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(0.3 * x, 1.0))


def exact_log_px(x):
    """Both models: x ~ sum_y PI[y] N(MU[y], 1 + S^2), z integrated out analytically."""
    return torch.logsumexp(PI.log() + dist.Normal(MU, (1 + S**2) ** 0.5).log_prob(x[:, None]), -1)


@pytest.fixture(scope="module")
def x():
    return torch.tensor([-2.5, -1.0, 0.0, 1.2, 2.0, 3.0], dtype=torch.float64)


@pytest.mark.parametrize("model", [mixture, mixture_of_latents], ids=["observation", "latent"])
def test_log_marginal_sums_a_model_side_component_out_exactly(x, model):
    # refused before: "the guide has no site 'y', a latent site of the model"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # vectorized: no particle-leak warning
        r = log_marginal(model, guide, x, num_samples=2000, seed=0)
    assert ((r.log_px - exact_log_px(x)).abs() < 5 * r.stderr + 1e-3).all()


def test_log_marginal_elbo_is_trace_enum_elbo_on_the_same_draws():
    x8 = torch.linspace(-3.0, 3.0, 8, dtype=torch.float64)  # one block of 8 datapoints x 64 particles
    r = log_marginal(mixture, guide, x8, num_samples=64, seed=5)
    torch.manual_seed(block_seed(5, 0, 0))  # the block's seed: the guide draws the same particles
    loss = TraceEnum_ELBO(num_particles=64, vectorize_particles=True, max_plate_nesting=1).loss(mixture, guide, x8)
    assert abs(r.elbo.sum().item() + loss) < 1e-9 * abs(loss)


J = 3


@config_enumerate
def pixel_mixture(x):
    """One component per pixel, in a plate inside the data plate, and one shift z per datapoint."""
    with pyro.plate("data", x.shape[0], dim=-1):
        z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
        with pyro.plate("pixels", J, dim=-2):
            y = pyro.sample("y", dist.Categorical(PI))
            pyro.sample("x", dist.Normal(MU[y] + z, S), obs=x.T)


def pixel_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(0.3 * x.mean(-1), 0.8))


def test_log_marginal_sums_out_components_in_a_nested_plate():
    x = 2 * torch.randn(4, J, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cov = torch.ones(J, J, dtype=torch.float64) + S**2 * torch.eye(J, dtype=torch.float64)
    exact = torch.stack([
        torch.logsumexp(torch.stack([
            PI[list(c)].log().sum() + dist.MultivariateNormal(MU[list(c)], cov).log_prob(xn)
            for c in itertools.product(range(2), repeat=J)
        ]), 0)
        for xn in x
    ])  # 2^J components per datapoint, z integrated out
    r = log_marginal(pixel_mixture, pixel_guide, x, num_samples=500, seed=0)
    assert ((r.log_px - exact).abs() < 5 * r.stderr + 1e-3).all()


def test_log_marginal_of_an_enumerated_model_does_not_compile(x):
    with pytest.warns(UserWarning, match=r"compile=True\) runs eagerly: model site 'y' is enumerated"):
        compiled = log_marginal(mixture, guide, x, num_samples=300, seed=1, compile=True)
    assert torch.equal(compiled.log_px, log_marginal(mixture, guide, x, num_samples=300, seed=1).log_px)


def test_a_site_the_guide_draws_is_importance_sampled_not_summed(x):
    # a guard (this held before): enum runs inside the replay, which must still override the guide's y
    def guide_with_y(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Categorical(torch.stack([torch.sigmoid(-x), torch.sigmoid(x)], -1)))
            pyro.sample("z", dist.Normal(0.3 * x, 1.0))

    r = log_marginal(mixture, guide_with_y, x, num_samples=2000, seed=0)
    assert ((r.log_px - exact_log_px(x)).abs() < 5 * r.stderr + 1e-3).all()


@pytest.mark.parametrize("proposal", ["guide", "prior"])
def test_ais_sums_a_model_side_component_out(x, proposal):
    # refused before; HMC moves z, y is summed out of log p(x, z) (and of the prior's log p(z))
    options = AnnealingOptions(steps=10, chains=256, leapfrog_steps=2, adapt="none", step_size=0.4)
    r = ais(mixture_of_latents, guide if proposal == "guide" else None, x, options, seed=0)
    assert ((r.log_px - exact_log_px(x)).abs() < 5 * r.stderr + 1e-3).all()
    assert set(r.latents) == {"z"}


def global_mixture(x):
    y = pyro.sample("y", dist.Categorical(PI), infer={"enumerate": "parallel"})  # one component for all
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
        pyro.sample("x", dist.Normal(MU[y] + z, S), obs=x)


@pytest.mark.parametrize(
    "run",
    [lambda x: log_marginal(global_mixture, guide, x, num_samples=5, seed=0),
     lambda x: ais(global_mixture, guide, x, steps=2, chains=2, seed=0)],
    ids=["log_marginal", "ais"],
)
def test_an_enumerated_site_outside_the_data_plate_is_refused_in_one_line(x, run):
    with pytest.raises(SiteError, match=r"^model site 'y' is marked for enumeration outside the 'data' plate") as err:
        run(x)
    assert "\n" not in str(err.value)


def test_iwae_refuses_enumeration_naming_what_sums_it_out(x):
    # the hint said "only the ELBO objective sums such sites out"
    with pytest.raises(SiteError, match=r"^the guide has no site 'y'.*the ELBO objective, log_marginal and ais sum such sites out"):
        IWAE(mixture, guide, num_particles=3)(x)
