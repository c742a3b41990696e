"""The two-sided multiplier update of the SOS-VAE reference code (``update="two-sided"``): on a pair
whose KL and entropy are closed-form functions of one scalar each, the loss, the networks'
gradient and the multipliers' step equal a hand computation (per datapoint and with
``batch_sum``); the damping pulls a constrained value to its target from below as well as from
above, where the one-sided update leaves a slack constraint alone; bad settings are one-line
ConfigErrors."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule
from torch import nn

from vaezoo import zoo
from vaezoo.errors import ConfigError
from vaezoo.inference.constrained import Constrained, multiplier_step, penalty
from vaezoo.traces import data_plate

D = 3
LOG_2PIE = math.log(2 * math.pi * math.e)


class Model(PyroModule):
    """z ~ N(0, 1); x ~ N(0, sigma^2 I_D), sigma = exp(s), independent of z: the entropy of
    p(x | z) is D (s + log(2 pi e) / 2) and -log p(x | z) does not depend on z."""

    def __init__(self, s=0.0):
        super().__init__()
        self.s = nn.Parameter(torch.tensor(s, dtype=torch.float64))

    def forward(self, x):
        with data_plate(x):
            pyro.sample("z", dist.Normal(x.new_zeros(1), x.new_ones(1)).to_event(1))
            pyro.sample("x", dist.Normal(x.new_zeros(D), self.s.exp()).to_event(1), obs=x)


class Guide(PyroModule):
    """q(z | x) = N(m, 1): KL(q || p) = m^2 / 2 for every datapoint."""

    def __init__(self, m=1.0):
        super().__init__()
        self.m = nn.Parameter(torch.tensor(m, dtype=torch.float64))

    def forward(self, x):
        with data_plate(x):
            pyro.sample("z", dist.Normal(self.m.expand(x.shape[0], 1), x.new_ones(1)).to_event(1))


def data(n=4):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_the_pure_term_and_step_by_hand_on_a_scalar():
    """C = theta^2, target 1, lambda = 0.5, c = 10: the term is (lambda + c sg(g)) g, its
    gradient (lambda + c g) dC/dtheta, and lambda <- max(0, lambda + eta g)."""
    theta = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    g = (theta ** 2 - 1.0).reshape(1)  # 3
    lam = torch.tensor([0.5], dtype=torch.float64)
    term = penalty(g, lam, 10.0, "two-sided")
    assert float(term.detach()) == pytest.approx((0.5 + 30.0) * 3.0)  # lambda g + c g^2, not c g^2 / 2
    (grad,) = torch.autograd.grad(term, theta)
    assert float(grad) == pytest.approx((0.5 + 10.0 * 3.0) * 2 * 2.0)  # (lambda + c g) * 2 theta
    step = multiplier_step(lam.clone(), g.detach(), 10.0, 1.0, "two-sided")
    assert float(step) == pytest.approx(3.5)
    # below the target: the damping's gradient has the other sign, and lambda is clipped at 0
    g = (theta ** 2 - 6.0).reshape(1)  # -2
    (grad,) = torch.autograd.grad(penalty(g, lam, 10.0, "two-sided"), theta)
    assert float(grad) == pytest.approx((0.5 - 20.0) * 4.0)
    assert float(multiplier_step(lam.clone(), g.detach(), 10.0, 1.0, "two-sided")) == 0.0
    # where the one-sided term has no gradient at all (lambda + c g < 0)
    g = (theta ** 2 - 6.0).reshape(1)
    (grad,) = torch.autograd.grad(penalty(g, lam, 10.0, "one-sided"), theta)
    assert float(grad) == 0.0


@pytest.mark.parametrize("batch_sum", [False, True], ids=["per-datapoint", "batch-sum"])
def test_loss_gradient_and_multiplier_step_equal_a_hand_computation(batch_sum):
    x = data(4)
    B = 4 if batch_sum else 1
    m0, s0 = 1.5, -0.2
    t_kl, t_h, c, eta = 0.5, -1.0, 10.0, 1.0
    lam0 = torch.tensor([0.3, 2.0], dtype=torch.float64)
    model, guide = Model(s0), Guide(m0)
    objective = Constrained(model, guide, kl_target=t_kl, entropy_target=t_h, damping=c, multiplier_lr=eta,
                            update="two-sided", batch_sum=batch_sum)
    objective.multipliers.copy_(lam0)
    loss, terms = objective(x)
    loss.backward()
    # by hand
    kl = m0 ** 2 / 2  # 1.125 > 0.5: above its target
    entropy = D * (s0 + LOG_2PIE / 2)  # 3.657 > -1
    sigma2 = math.exp(2 * s0)
    neg_log_lik = float((x ** 2 / (2 * sigma2) + s0 + math.log(2 * math.pi) / 2).sum(1).mean())
    g = torch.tensor([kl - t_kl, entropy - t_h], dtype=torch.float64) * B
    coef = lam0 + c * g
    assert float(terms["kl"]) == pytest.approx(kl) and float(terms["entropy"]) == pytest.approx(entropy)
    assert float(loss.detach()) == pytest.approx(neg_log_lik + float((coef * g).sum()) / B)
    # d/dm: (lambda_kl + c g_kl) * d(B kl)/dm / B = coef_kl * m; d/ds: d(-log lik)/ds + coef_h * D
    assert float(guide.m.grad) == pytest.approx(float(coef[0]) * m0)
    d_neg_log_lik = float((-x ** 2 / sigma2 + 1).sum(1).mean())
    assert float(model.s.grad) == pytest.approx(d_neg_log_lik + float(coef[1]) * D)
    torch.testing.assert_close(objective.multipliers, (lam0 + eta * g).clamp(min=0))
    assert terms["lambda_kl"] == 0.3  # the terms report the multipliers the loss used
    # a constraint below its target: its multiplier is clipped at 0 and the damping pushes it up
    objective.multipliers.copy_(torch.tensor([0.3, 0.0], dtype=torch.float64))
    guide.m.data.fill_(0.4)  # kl = 0.08 < 0.5
    guide.m.grad = None
    loss, _ = objective(x)
    loss.backward()
    g_kl = (0.08 - t_kl) * B
    assert float(guide.m.grad) == pytest.approx((0.3 + c * g_kl) * 0.4) and float(guide.m.grad) < 0
    assert float(objective.multipliers[0]) == max(0.0, 0.3 + eta * g_kl) == 0.0


def _train_kl(update, m0, steps=400):
    """Only a KL constraint (target 0.5) on the pair, whose reconstruction does not depend on m:
    the KL m^2 / 2 moves by the constraint's force alone."""
    model, guide = Model(), Guide(m0)
    objective = Constrained(model, guide, kl_target=0.5, update=update)
    opt = torch.optim.SGD(guide.parameters(), lr=0.02)
    x = data(4)
    for _ in range(steps):
        loss, terms = objective(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(guide.m.detach()) ** 2 / 2, objective.multipliers


@pytest.mark.parametrize("m0", [0.2, 3.0], ids=["from-below", "from-above"])
def test_two_sided_pulls_the_kl_to_its_target_from_either_side(m0):
    kl, lam = _train_kl("two-sided", m0)
    assert kl == pytest.approx(0.5, abs=0.01)
    assert lam[0] == pytest.approx(0.0, abs=1e-9)  # at the target the two-sided update lets the multiplier go


def test_one_sided_leaves_a_slack_constraint_where_it_is():
    kl, lam = _train_kl("one-sided", 0.2)
    assert kl == pytest.approx(0.02) and lam[0] == 0  # 0.02 < 0.5: no force at all
    # from above it brings the KL (4.5) down to its bound, and past it: the multiplier grown on
    # the way down overshoots, and below the target nothing pulls the KL back up (two-sided: 0.5)
    kl, _ = _train_kl("one-sided", 3.0)
    assert 0.05 < kl < 0.45


@pytest.mark.parametrize("kwargs,message", [
    ({"update": "both"}, r"^update='both'; expected one of one-sided, two-sided$"),
    ({"update": "two-sided", "multiplier_lr": -1.0}, r"^multiplier_lr=-1\.0; expected a finite number > 0$"),
    ({"update": "two-sided", "multiplier_lr": float("inf")}, r"^multiplier_lr=inf; expected a finite number > 0$"),
    ({"multiplier_lr": 20.0}, r"^multiplier_lr=20\.0; expected a number in \(0, damping=10\] for the one-sided update$"),
    ({"batch_sum": "yes"}, r"^batch_sum='yes'; expected True or False$"),
])
def test_bad_arguments_are_one_line_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Constrained(Model(), Guide(), kl_target=1.0, **kwargs)


def test_two_sided_takes_a_step_above_the_damping():
    objective = Constrained(Model(), Guide(), kl_target=1.0, update="two-sided", multiplier_lr=20.0)
    assert objective.multiplier_lr == 20.0


@pytest.mark.parametrize("name", ["sos-vae", "beta-vae-gaussian"])
def test_the_entries_take_the_update_and_the_units_from_their_config(name):
    m = zoo.create(name, data_shape=(1, 8, 8), hidden=(8,), latent_dim=2, multiplier_update="two-sided",
                   batch_sum=True, multiplier_lr=25.0)
    objective = m.objective()
    assert (objective.update, objective.batch_sum, objective.multiplier_lr) == ("two-sided", True, 25.0)
    with pytest.raises(ConfigError, match=r"^multiplier_update='both'; expected one of one-sided, two-sided$"):
        zoo.create(name, data_shape=(1, 8, 8), multiplier_update="both")
    with pytest.raises(ConfigError, match=r"^multiplier_lr=25\.0; expected a number in \(0, damping=10\] for "
                                          r"multiplier_update=one-sided$"):
        zoo.create(name, data_shape=(1, 8, 8), multiplier_lr=25.0)


def test_the_paper_preset():
    m = zoo.create("sos-vae-paper", data_shape=(1, 8, 8))
    c = m.config
    assert (c.latent_dim, c.rank, c.cov_diag, c.learn_diag, c.kl_target, c.damping, c.multiplier_lr) == \
        (128, 25, 1e-5, False, 45.0, 10.0, 1.0)
    objective = m.objective()
    assert (objective.update, objective.batch_sum) == ("two-sided", True)
