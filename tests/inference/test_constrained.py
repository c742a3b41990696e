"""The Lagrangian objective: without targets it is Pyro's negative ELBO; its gradient is the
augmented Lagrangian's (max(0, lambda + c g) on each constraint, ascent on lambda); on a small
linear-Gaussian problem the entropy constraint binds (entropy at its target, multiplier > 0)
while a slack KL constraint keeps its multiplier at 0."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO
from pyro.nn import PyroModule
from torch import nn

from vaezoo.errors import ConfigError
from vaezoo.inference import Trainer
from vaezoo.inference.constrained import Constrained
from vaezoo.traces import data_plate

D = 4
STEPS = 500


class Model(PyroModule):
    """z ~ N(0, 1), x | z ~ N(z w, sigma^2 I_D): the observation entropy is D/2 log(2 pi e sigma^2)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.full((D,), 0.5))
        self.log_sigma = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        with data_plate(x):
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), x.new_ones(())).expand([1]).to_event(1))
            pyro.sample("x", dist.Normal(z * self.w, self.log_sigma.exp()).to_event(1), obs=x)


class Guide(PyroModule):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(D, 2)

    def forward(self, x):
        loc, raw = self.a(x).chunk(2, -1)
        with data_plate(x):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))


def data(n=256, noise=0.5):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, 1, generator=g, dtype=torch.float64)
    return z * torch.tensor([1.0, -2.0, 0.5, 1.5], dtype=torch.float64) + noise * torch.randn(n, D, generator=g, dtype=torch.float64)


def pair():
    torch.manual_seed(0)
    return Model().double(), Guide().double()


def test_without_targets_it_is_pyros_negative_elbo_with_its_gradient():
    model, guide = pair()
    x = data(32)
    objective = Constrained(model, guide)
    assert objective.multipliers is None
    pyro.set_rng_seed(3)
    loss, terms = objective(x)
    grads = torch.autograd.grad(loss, list(model.parameters()) + list(guide.parameters()))
    pyro.set_rng_seed(3)
    ref = TraceMeanField_ELBO().differentiable_loss(model, guide, x) / 32
    ref_grads = torch.autograd.grad(ref, list(model.parameters()) + list(guide.parameters()))
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(terms["elbo"], -ref.detach())
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)
    sigma2 = model.log_sigma.exp() ** 2
    torch.testing.assert_close(terms["entropy"], (D / 2 * torch.log(2 * math.pi * math.e * sigma2)).detach())


@pytest.mark.parametrize("lam", [(0.0, 0.0), (2.0, 0.5), (0.3, 7.0)])
def test_gradients_are_the_augmented_lagrangians_and_the_multipliers_ascend(lam):
    model, guide = pair()
    x = data(32)
    kl_target, entropy_target, c, eta = 0.2, 1.0, 3.0, 0.7
    objective = Constrained(model, guide, kl_target=kl_target, entropy_target=entropy_target, damping=c,
                            multiplier_lr=eta).double()
    lam_t = torch.tensor(lam, dtype=torch.float64)
    objective.multipliers.copy_(lam_t)
    params = list(model.parameters()) + list(guide.parameters())
    pyro.set_rng_seed(5)
    loss, terms = objective(x)
    grads = torch.autograd.grad(loss, params)
    # the reference, from the same draws: -log_lik + sum_i max(0, lambda_i + c g_i) * g_i
    pyro.set_rng_seed(5)
    _, parts = objective.loss_and_terms(x)
    g = torch.stack([parts["kl"] - kl_target, parts["entropy"] - entropy_target])
    coef = (lam_t + c * g.detach()).clamp(min=0)
    ref = torch.autograd.grad(-parts["log_lik"] + (coef * g).sum(), params)
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b)
    # the training call moved the multipliers up the Lagrangian: lambda + eta (max(0, lambda + c g) - lambda) / c
    expected = lam_t + eta * (coef - lam_t) / c
    torch.testing.assert_close(objective.multipliers, expected)
    assert torch.all(expected >= 0) and terms["lambda_kl"] == lam[0]
    # evaluation (eval mode or no gradient) leaves them alone
    objective.eval()
    objective(x)
    objective.train()
    with torch.no_grad():
        objective(x)
    torch.testing.assert_close(objective.multipliers, expected)


def test_the_entropy_constraint_binds_and_a_slack_kl_constraint_does_not():
    model, guide = pair()
    x = data(256)
    # unconstrained, sigma -> ~0.5 and the entropy ~ D/2 log(2 pi e 0.25) = 2.9 nats; ask for 0
    objective = Constrained(model, guide, kl_target=50.0, entropy_target=0.0, damping=10.0).double()
    opt = torch.optim.Adam(objective.parameters(), lr=0.05)
    pyro.set_rng_seed(0)
    for _ in range(STEPS):
        loss, terms = objective(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        entropies, kls = [], []
        for _ in range(20):
            _, terms = objective(x)
            entropies.append(terms["entropy"])
            kls.append(terms["kl"])
    entropy = torch.stack(entropies).mean()
    assert abs(float(entropy)) < 0.05, entropy  # at its target
    lam_kl, lam_entropy = objective.multipliers.detach()
    assert lam_entropy > 0.1  # binding: a positive multiplier holds it there
    assert float(torch.stack(kls).mean()) < 50.0 and lam_kl == 0  # slack: no force
    # and the constraint was not vacuous: the unconstrained optimum sits well above the target
    free = Constrained(*pair())
    opt = torch.optim.Adam(free.parameters(), lr=0.05)
    for _ in range(STEPS):
        loss, terms = free(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(terms["entropy"]) > 2.0


@pytest.mark.parametrize("update,batch_sum", [("one-sided", False), ("two-sided", False), ("two-sided", True)])
def test_multipliers_and_targets_are_state_and_a_resumed_run_continues_exactly(tmp_path, update, batch_sum):
    x = data(64).float()

    def run(out, epochs, resume=False):
        model, guide = pair()
        objective = Constrained(model.float(), guide.float(), kl_target=0.5, entropy_target=1.0, update=update,
                                batch_sum=batch_sum)
        Trainer(objective, epochs=epochs, batch_size=16, device="cpu", dtype="float64", progress=False, out=out,
                lr=0.05).fit(x, resume=resume)
        return objective

    whole = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", 4, resume=True)
    assert set(whole.state_dict()) >= {"multipliers", "targets"}
    # two-sided: the KL's multiplier is clipped at 0 once the damping holds the KL below its bound
    assert torch.all(whole.multipliers > 0) if update == "one-sided" else whole.multipliers[1] > 0
    assert torch.equal(whole.multipliers, resumed.multipliers)
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs,message", [
    ({"kl_target": float("nan")}, r"kl_target=nan; expected a finite number, or None"),
    ({"entropy_target": "high"}, r"entropy_target='high'; expected a finite number"),
    ({"damping": 0.0}, r"damping=0\.0; expected a finite number > 0"),
    ({"multiplier_lr": 20.0}, r"multiplier_lr=20\.0; expected a number in \(0, damping=10\]"),
])
def test_bad_arguments_are_one_line_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Constrained(*pair(), **kwargs)
