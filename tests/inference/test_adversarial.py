"""Latent-matching objectives: the IMQ MMD and the WGAN-GP penalty against direct computations,
the critic kept apart from the pair's optimizer, and an exact resume with the critic's state."""

import json
import math

import pyro
import pytest
import torch
from torch import nn

from vaezoo import data, zoo
from vaezoo.evaluation.frechet import data_frechet_distance as frechet_distance, gaussian_frechet
from vaezoo.inference import Trainer
from vaezoo.inference.adversarial import gradient_penalty
from vaezoo.inference.kernels import IMQ_SCALES, mmd_imq


def test_mmd_imq_against_a_direct_double_sum():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(7, 3, generator=g, dtype=torch.float64) + 0.5
    p = torch.randn(7, 3, generator=g, dtype=torch.float64)
    n, d = q.shape
    expected = 0.0
    for s in IMQ_SCALES:
        c = 2 * d * s
        k = lambda a, b: c / (c + float(((a - b) ** 2).sum()))  # noqa: E731
        qq = sum(k(q[i], q[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        pp = sum(k(p[i], p[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        qp = sum(k(q[i], p[j]) for i in range(n) for j in range(n)) / n**2
        expected += qq + pp - 2 * qp
    assert math.isclose(float(mmd_imq(q, p)), expected, rel_tol=1e-12)


def test_gradient_penalty_against_autograd_per_sample():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    u = torch.rand(5, 1, generator=g, dtype=torch.float64)
    expected = 0.0
    for i in range(5):  # one datapoint at a time
        x = (u[i] * real[i] + (1 - u[i]) * fake[i]).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x).sum(), x)
        expected += (grad.norm() - 1) ** 2 / 5
    gp = gradient_penalty(critic, real, fake, u)
    assert torch.allclose(gp, expected, rtol=1e-12)
    gp.backward()  # differentiable in the critic's weights
    # (the output bias does not move the input gradient: its gradient is zero)
    assert critic[0].weight.grad.abs().sum() > 0 and critic[2].weight.grad.abs().sum() > 0


def test_gradient_penalty_of_a_linear_critic_in_closed_form():
    critic = nn.Linear(4, 1).double()
    w = critic.weight.detach()[0]
    x = torch.randn(6, 4, dtype=torch.float64)
    gp = gradient_penalty(critic, x, -x, torch.rand(6, 1, dtype=torch.float64))
    assert torch.allclose(gp, (w.norm() - 1) ** 2)


def pair(name, latent_dim=3, **kw):
    pyro.set_rng_seed(0)
    return zoo.create(name, data_shape=(6,), latent_dim=latent_dim, hidden=(8,), **kw).double()


def batch(n=16):
    return torch.randn(n, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


@pytest.mark.parametrize("name", ["aae", "wae-gan", "mask-aae"])
def test_critic_is_stepped_by_the_objective_only(name):
    m = pair(name, critic_hidden=(8,))
    obj = m.objective()
    critic = obj.critic
    assert not {id(p) for p in critic.parameters()} & {id(p) for p in obj.parameters()}
    before = [p.detach().clone() for p in critic.parameters()]
    loss, terms = obj(batch())
    assert any(not torch.equal(b, p) for b, p in zip(before, critic.parameters()))  # critic steps taken
    loss.backward()
    assert all(p.grad is None for p in critic.parameters())  # the pair's loss leaves the critic alone
    assert all(p.grad is not None for p in obj.parameters())
    # evaluation (no grad, eval mode) takes no critic step
    after = [p.detach().clone() for p in critic.parameters()]
    obj.eval()
    with torch.no_grad():
        obj(batch())
    assert all(torch.equal(a, p) for a, p in zip(after, critic.parameters()))


def test_mask_aae_reports_active_dims_of_the_mask():
    m = pair("mask-aae", latent_dim=4)
    alpha = torch.tensor([0.95, 0.5, 0.099, 0.0], dtype=torch.float64)
    with torch.no_grad():
        m.model.mask.raw.copy_(-torch.log1p(-alpha) / m.model.mask.rate)  # alpha = 1 - exp(-m)
    obj = m.objective()
    _, terms = obj(batch())
    assert terms["active_dims"].item() == 2 and terms["active_dims"].dtype == torch.float64
    assert set(terms) >= {"reconstruction", "wasserstein", "penalty", "active_dims"}


def test_mask_aae_penalty_doubles_on_schedule():
    obj = pair("mask-aae", penalty=0.5, penalty_doubling=2, penalty_max=3.0).objective()
    seen = [obj(batch())[1]["penalty"].item() for _ in range(7)]
    assert seen == [0.5, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]  # after steps 1..7: 0.5 * 2^(t // 2), capped


def train_run(out, epochs, name):
    torch.manual_seed(0)
    m = zoo.create(name, data_shape=(128,), latent_dim=4, hidden=(16,), critic_hidden=(16,))
    return m, Trainer(m.objective(), epochs=epochs, batch_size=32, device="cpu", dtype="float64", seed=1, out=out, progress=False)


@pytest.mark.parametrize("name", ["aae", "mask-aae"])
def test_resume_is_exact_with_the_critic_and_its_optimizer(tmp_path, name):
    train = data.load("synthetic", split="train", true_dim=2, num_samples=96)
    test = data.load("synthetic", split="test", true_dim=2, num_samples=32)
    m_full, t_full = train_run(tmp_path / "full", 3, name)
    t_full.fit(train, test)
    train_run(tmp_path / "cut", 1, name)[1].fit(train, test)
    m_cut, t_cut = train_run(tmp_path / "cut", 3, name)
    t_cut.fit(train, test, resume=True)
    for (k, a), (_, b) in zip(m_full.state_dict().items(), m_cut.state_dict().items()):
        assert torch.equal(a, b), k
    for a, b in zip(t_full.objective.critic.parameters(), t_cut.objective.critic.parameters()):
        assert torch.equal(a, b)
    assert t_full.objective.steps == t_cut.objective.steps
    full = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    cut = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in full] == [r["train_loss"] for r in cut]
    if name == "mask-aae":
        assert all("test_active_dims" in r for r in cut)


def test_gaussian_frechet_closed_forms():
    # diagonal covariances: |mu1 - mu2|^2 + sum (s1 - s2)^2 over the standard deviations
    s1, s2 = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64), torch.tensor([0.3, 2.0, 1.5], dtype=torch.float64)
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    expected = float(((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum())
    assert math.isclose(gaussian_frechet(mu1, torch.diag(s1**2), mu2, torch.diag(s2**2)), expected, rel_tol=1e-10)
    # a rotated pair: the distance is invariant under a common rotation
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    rotated = gaussian_frechet(q @ mu1.double(), q @ torch.diag(s1**2).double() @ q.T, q @ mu2.double(), q @ torch.diag(s2**2).double() @ q.T)
    assert math.isclose(rotated, expected, rel_tol=1e-8)


def test_frechet_distance_of_samples_uses_their_means_and_covariances():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 2, generator=g, dtype=torch.float64)
    y = 2 * torch.randn(4000, 2, generator=g, dtype=torch.float64) + 1
    mx, my = x.mean(0), y.mean(0)
    cx, cy = torch.cov(x.T), torch.cov(y.T)
    assert math.isclose(frechet_distance(x, y), gaussian_frechet(mx, cx, my, cy), rel_tol=1e-12)
    # and near the population value 2 * 1^2 + 2 * (2 - 1)^2 = 4
    assert abs(frechet_distance(x, y) - 4.0) < 0.3


def test_the_old_name_of_the_data_frechet_distance_warns_and_agrees():
    from vaezoo.evaluation import frechet

    x, y = torch.randn(50, 3, dtype=torch.float64), torch.randn(60, 3, dtype=torch.float64) + 1
    with pytest.warns(DeprecationWarning, match="data_frechet_distance"):
        assert frechet.frechet_distance(x, y) == frechet_distance(x, y)


@pytest.mark.parametrize("name", ["vae", "wae-mmd", "mask-aae", "rho-vae", "vae-2l"])
def test_the_prior_draws_from_the_models_sites_are_the_full_runs_draws(name):
    """``traces.prior_codes`` given a replayed run's sites: with one latent site it draws from that
    site's distribution without running the decoder again, and the draws are the full run's, from the
    same random stream; with two (``vae-2l``, a hierarchical prior) it runs the model unconditioned,
    so z1 is drawn from its marginal, not from p(z1 | the guide's z2)."""
    from vaezoo import traces

    pyro.clear_param_store()
    model = zoo.create(name, (1, 28, 28))
    x = torch.bernoulli(torch.full((5, 1, 28, 28), 0.3))
    guide_run = traces.record(model.guide, x)
    sites = traces.record(model.model, x, replay=guide_run.trace).sites
    torch.manual_seed(3)
    full = traces.prior_codes(model.model, x)
    torch.manual_seed(3)
    fast = traces.prior_codes(model.model, x, sites)
    assert torch.equal(full, fast)
    if name == "vae-2l":  # not the replayed sites' conditional draw: their z2 is the guide's
        torch.manual_seed(3)
        latents = [s for s in sites.values() if not s["is_observed"]]
        conditional = torch.cat([s["fn"]().reshape(5, -1) for s in latents], dim=-1)
        assert not torch.equal(conditional, fast)


def _losses(name, full_run, steps=3, **overrides):
    """The training losses of ``steps`` Adam steps of ``name``'s objective on one batch, the critic's
    prior draws taken from the latent site (as the objective does) or from a full model run."""
    from vaezoo import traces
    from vaezoo.inference.adversarial import LatentMatching

    pyro.clear_param_store()
    torch.manual_seed(0)
    objective = zoo.create(name, (1, 12, 12), **overrides).objective()
    objective.train()
    opt = torch.optim.Adam(objective.parameters(), lr=1e-3)
    x = torch.bernoulli(torch.full((16, 1, 12, 12), 0.3))
    losses = []
    with pytest.MonkeyPatch.context() as mp:
        if full_run:
            mp.setattr(LatentMatching, "_prior_like", lambda self, x: traces.prior_codes(self.model, x))
        for _ in range(steps):
            loss, _ = objective(x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("name, overrides", [
    pytest.param("wae-gan", {}, marks=pytest.mark.slow),  # ~10 s: CI runs it with the slow tests
    ("mask-aae", {"mask_warmup": 1}),
    pytest.param("mask-aae", {"training": "paper", "mask_warmup": 1}, marks=pytest.mark.slow)])
def test_the_critics_prior_draws_skip_the_decoder_and_change_nothing(name, overrides):
    """The critic steps draw from the latent site of the step's own model run instead of running the
    model again (five decoder runs a step, 1.4-1.6x a step's time): the losses are the same, bit for bit."""
    fast = _losses(name, False, **overrides)
    assert fast == _losses(name, True, **overrides)
    assert len(set(fast)) == len(fast)  # the steps move the pair: a loss repeated would hide nothing


def test_the_critics_prior_draws_for_another_batch_run_the_model():
    from vaezoo.inference.adversarial import LatentMatching

    pyro.clear_param_store()
    objective = zoo.create("wae-gan", (1, 12, 12)).objective()
    x, y = torch.rand(6, 1, 12, 12), torch.rand(3, 1, 12, 12)
    objective.codes(x)
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        from vaezoo import traces

        real = traces.prior_codes
        mp.setattr(traces, "prior_codes", lambda model, data, sites=None: calls.append(sites) or real(model, data, sites))
        assert LatentMatching._prior_like(objective, y).shape[0] == 3
        assert LatentMatching._prior_like(objective, x).shape[0] == 6
    assert calls[0] is None and calls[1] is not None
