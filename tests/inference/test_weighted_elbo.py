"""The ELBO's training weights: ``beta`` (beta-VAE) against Pyro's ``Trace_ELBO`` with the latent
site scaled by beta on the same draws; ``mmd_weight`` (InfoVAE) against the MMD^2 of the codes
and the prior draws, which is near 0 when q(z) is the prior and not when it is not; the compiled
program against the eager one; the config's checks."""

import dataclasses
import warnings

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from vaezoo import zoo
from vaezoo.errors import ConfigError
from vaezoo.inference import ELBO

from test_compile import B, Guide, Model, _pair


@pytest.mark.parametrize("beta", [0.0, 0.5, 4.0])
def test_beta_is_trace_elbo_with_the_latent_site_scaled_by_beta(beta):
    pyro.clear_param_store()
    model, guide, x = _pair()  # the guide's draw is loc + scale * (a fixed eps): both see the same z
    ours = ELBO(model, guide, analytic_kl=False, beta=beta)
    loss, terms = ours(x)
    ref = Trace_ELBO().differentiable_loss(_scale_site(model, "z", beta), _scale_site(guide, "z", beta), x)
    torch.testing.assert_close(loss * B, ref)
    params = list(ours.parameters())
    torch.testing.assert_close(torch.autograd.grad(loss * B, params), torch.autograd.grad(ref, params))
    # the reported bound is the unweighted one, whatever beta is
    torch.testing.assert_close(terms["elbo"], terms["log_lik"] - terms["kl"])
    torch.testing.assert_close(loss, -(terms["log_lik"] - beta * terms["kl"]))


class _ScaleSite(poutine.messenger.Messenger):
    """Pyro's ``poutine.scale`` for one sample site (``name``) instead of every site."""

    def __init__(self, name, scale):
        super().__init__()
        self.name, self.scale = name, scale

    def _process_message(self, msg):
        if msg["type"] == "sample" and msg["name"] == self.name:
            msg["scale"] = msg["scale"] * self.scale


def _scale_site(fn, name, scale):
    """``fn`` with the sample site ``name`` scaled by ``scale``."""
    return _ScaleSite(name, scale)(fn)


def test_beta_with_the_closed_form_kl_weights_the_kl_term():
    pyro.clear_param_store()
    model, guide, x = _pair()
    plain, weighted = ELBO(model, guide), ELBO(model, guide, beta=3.0)
    loss, terms = weighted(x)
    ref_loss, ref_terms = plain(x)
    torch.testing.assert_close(terms, ref_terms)
    torch.testing.assert_close(loss, ref_loss + 2.0 * ref_terms["kl"])


def test_the_mmd_term_is_the_mmd_of_the_codes_and_near_zero_at_the_prior():
    pyro.clear_param_store()
    model = Model().double()

    def draws(loc):
        """The MMD term over 60 calls for a guide q(z | x) = N(loc, 1): its mean and standard error."""
        torch.manual_seed(1)
        guide = Guide(torch.randn(128, 2, dtype=torch.float64)).double()
        with torch.no_grad():
            guide.enc.weight.zero_()
            guide.enc.bias.copy_(torch.tensor([loc, loc, 0.5413, 0.5413], dtype=torch.float64))  # softplus -> 1
        objective = ELBO(model, guide, mmd_weight=10.0)
        x = torch.bernoulli(torch.full((128, 6), 0.4, dtype=torch.float64))
        values = []
        for _ in range(60):
            guide.eps.normal_()
            loss, terms = objective(x)
            torch.testing.assert_close(loss, -(terms["log_lik"] - terms["kl"]) + 10.0 * terms["mmd"])
            values.append(terms["mmd"])
        v = torch.stack(values)
        return v.mean(), v.std() / len(v) ** 0.5

    at_prior, se = draws(0.0)
    shifted, _ = draws(1.0)
    assert abs(at_prior) < 4 * se  # the unbiased estimate: mean 0 when q(z) is the prior
    assert shifted > 20 * se and shifted > 0.05


def test_the_mmd_term_trains_the_encoder():
    pyro.clear_param_store()
    model, guide, x = _pair()
    loss, _ = ELBO(model, guide, mmd_weight=100.0)(x)
    plain, _ = ELBO(model, guide)(x)
    g = torch.autograd.grad(loss, guide.enc.weight)[0]
    g0 = torch.autograd.grad(plain, guide.enc.weight)[0]
    assert (g - g0).abs().max() > 1e-6


@pytest.mark.slow  # compiles a program (~10 s): CI runs it with the slow tests
def test_compiled_weighted_elbo_equals_eager():
    pyro.clear_param_store()
    model, guide, x = _pair()
    fast, eager = (ELBO(model, guide, compile=c, beta=4.0, mmd_weight=2.0) for c in (True, False))
    params = list(fast.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        mmds = [fast(x)[1]["mmd"] for _ in range(2)]
        assert mmds[0] != mmds[1]  # the prior draws are fresh in every call of the program, not frozen
        torch.manual_seed(5)
        loss, terms = fast(x)
    assert fast.compiles and len(fast._programs) == 1
    torch.manual_seed(5)  # the program draws from torch's generator as the eager run does
    ref_loss, ref_terms = eager(x)
    torch.testing.assert_close(terms, ref_terms)
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(torch.autograd.grad(loss, params), torch.autograd.grad(ref_loss, params))
    # beta changed after compiling is read by the program (an input), never frozen at 4
    fast.beta.fill_(2.0)
    eager.beta.fill_(2.0)
    torch.manual_seed(6)
    loss, _ = fast(x)
    torch.manual_seed(6)
    torch.testing.assert_close(loss, eager(x)[0])
    assert fast.compiles and len(fast._programs) == 1
    with pytest.raises(TypeError):
        fast.beta = 3.0  # a plain float would leave the program's input behind: refused
    with pytest.raises(AttributeError):
        fast.mmd_weight = 0.0  # it decides the program's structure: fixed at construction


def test_config_checks_and_the_entries_that_take_the_weights():
    m = zoo.create("rho-vae", data_shape=(1, 28, 28), latent_dim=4, beta=2.0, mmd_weight=5.0)
    objective = m.objective()
    assert objective.beta == 2.0 and objective.mmd_weight == 5.0
    with pytest.raises(ConfigError, match=r"beta=-1.0; expected a number >= 0"):
        zoo.create("vae", data_shape=(1, 28, 28), beta=-1.0)
    with pytest.raises(ConfigError, match=r"beta=2.0, mmd_weight=0.0 with objective=iwae; expected beta=1 and mmd_weight=0"):
        zoo.create("vae", data_shape=(1, 28, 28), objective="iwae", beta=2.0)
    with pytest.raises(ConfigError, match="'wae-mmd' has no config field 'beta'"):
        zoo.create("wae-mmd", data_shape=(1, 28, 28), beta=2.0)


def test_an_entry_with_its_own_objective_refuses_the_weights(monkeypatch):
    # a user's entry whose config has the fields but whose objective is its own
    vae = zoo.entry("vae")
    monkeypatch.setitem(zoo._REGISTRY, "own-objective-test", dataclasses.replace(vae, name="own-objective-test", objective=print))
    m = zoo.create("own-objective-test", data_shape=(1, 28, 28), beta=2.0)
    with pytest.raises(ConfigError, match="'own-objective-test' trains with its own objective, which takes no beta=2.0 or mmd_weight=0.0"):
        m.objective()
