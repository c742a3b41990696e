"""A compiled pair never computes with a stale value: Python values it reads from objects, globals
and closures are guarded (a change turns compiling off, with one warning, and the step is the eager
one), a value read from a tensor into Python cannot be captured, building a program steps no batch
norm, and a ``Delta`` guide site keeps its ``log_density``.

Inductor is replaced by the captured graph itself (``_no_inductor``): what is under test is what the
capture freezes, and the graph replays exactly what inductor would compile, in milliseconds."""

import types
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch import nn

from vaezoo import evaluation
from vaezoo.guards import Guard
from vaezoo.inference import ELBO, IWAE, Trainer, compiled

D, L, B = 6, 2, 8
ANNEAL = 1.0  # a global the model reads: the guard must see it change


@pytest.fixture
def _no_inductor(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda graph, **kwargs: graph)
    monkeypatch.setattr(compiled, "_inductor_compile", lambda graph, inputs: graph)


class Guide(nn.Module):
    def __init__(self, batch_norm=False):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(D, 2 * L), *( [nn.BatchNorm1d(2 * L)] if batch_norm else []))

    def forward(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, raw = self.enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 0.1).to_event(1))


class Model(nn.Module):
    """``factor`` says where the annealing factor of the latent's term comes from."""

    def __init__(self, factor="attribute"):
        super().__init__()
        self.dec = nn.Linear(L, D)
        self.schedule = types.SimpleNamespace(factor=1.0)  # a plain object the module holds
        self.source = factor
        closure = {"factor": 1.0}
        self.set_closure = lambda v: closure.__setitem__("factor", v)

        def read():
            return closure["factor"]

        self.read_closure = read

    def factor(self):
        if self.source == "attribute":
            return self.schedule.factor
        if self.source == "global":
            return ANNEAL
        return self.read_closure()

    def forward(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            with poutine.scale(scale=self.factor()):
                z = pyro.sample("z", dist.Normal(x.new_zeros(L), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)


def _data(seed=0, n=B, p=0.5):
    return torch.bernoulli(torch.full((n, D), p, dtype=torch.float64), generator=torch.Generator().manual_seed(seed))


def _set(model, source, value):
    global ANNEAL
    if source == "attribute":
        model.schedule.factor = value
    elif source == "global":
        ANNEAL = value
    else:
        model.set_closure(value)


@pytest.mark.parametrize("source", ["attribute", "global", "closure"])
def test_an_annealing_factor_changed_between_compiled_calls_is_not_frozen(source, _no_inductor):
    pyro.clear_param_store()
    torch.manual_seed(0)
    model, guide = Model(source).double(), Guide().double()
    fast = ELBO(model, guide, compile=True)
    eager = ELBO(model, guide)
    x = _data()
    try:
        fast(x)  # captured with factor 1.0 (no scale: nothing for the capture to refuse)
        assert fast.compiles and fast._programs
        _set(model, source, 0.01)
        with pytest.warns(UserWarning, match=r"changed from (1\.0|\{'factor': 1\.0\}) to (0\.01|\{'factor': 0\.01\})"):
            torch.manual_seed(1)
            loss, terms = fast(x)
        torch.manual_seed(1)
        expected, expected_terms = eager(x)
        assert torch.equal(loss, expected) and torch.equal(terms["kl"], expected_terms["kl"])
        assert not fast.compiles
    finally:
        _set(model, source, 1.0)


def test_the_trainers_one_program_step_sees_a_changed_factor(_no_inductor):
    """The factor changes after the first epoch: the Trainer's next step must not be the compiled one."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    model, guide = Model("attribute").double(), Guide().double()
    objective = ELBO(model, guide, compile=True)
    seen = []

    def anneal(trainer, record):
        seen.append(objective.compiles)
        model.schedule.factor = 0.5

    trainer = Trainer(objective, epochs=2, batch_size=B, device="cpu", dtype=torch.float64, progress=False, on_epoch_end=anneal)
    with pytest.warns(UserWarning, match=r"schedule\.factor changed from 1\.0 to 0\.5"):
        trainer.fit(_data(n=2 * B))
    assert seen == [True, False] and not objective.compiles


class NumpyBranch(Model):
    """Takes a branch on a value of the data read through NumPy."""

    def forward(self, x):
        shift = 3.0 if x.detach().cpu().numpy().mean() > 0.5 else 0.0
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(L), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z) + shift).to_event(1), obs=x)


def test_a_branch_on_a_numpy_read_is_not_captured(_no_inductor):
    pyro.clear_param_store()
    torch.manual_seed(0)
    model, guide = NumpyBranch().double(), Guide().double()
    fast, eager = ELBO(model, guide, compile=True), ELBO(model, guide)
    low, high = _data(p=0.1), _data(p=0.9)
    with pytest.warns(UserWarning, match="reads a tensor's value into Python"):
        fast(low)
    torch.manual_seed(3)
    loss, _ = fast(high)
    torch.manual_seed(3)
    assert torch.equal(loss, eager(high)[0])


def test_log_marginal_compiled_across_chunks_taking_different_branches(_no_inductor):
    pyro.clear_param_store()
    torch.manual_seed(0)
    model, guide = NumpyBranch().double(), Guide().double()
    x = torch.cat([_data(p=0.1), _data(1, p=0.9)])
    eager = evaluation.log_marginal(model, guide, x, num_samples=8, particle_chunk=4, data_chunk=B, seed=0)
    with pytest.warns(UserWarning, match="reads a tensor's value into Python"):
        fast = evaluation.log_marginal(model, guide, x, num_samples=8, particle_chunk=4, data_chunk=B, seed=0, compile=True)
    torch.testing.assert_close(fast.log_px, eager.log_px)


class Scaled(Model):
    """The model's logits scaled by a Python number it holds."""

    def __init__(self):
        super().__init__()
        self.temperature = 1.0

    def forward(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(L), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z) * self.temperature).to_event(1), obs=x)


def test_log_marginal_compiled_sees_a_value_changed_between_calls(_no_inductor):
    pyro.clear_param_store()
    torch.manual_seed(0)
    model, guide = Scaled().double(), Guide().double()
    x = _data()
    kwargs = dict(num_samples=8, particle_chunk=4, seed=0)
    evaluation.log_marginal(model, guide, x, compile=True, **kwargs)
    model.temperature = 3.0
    fast = evaluation.log_marginal(model, guide, x, compile=True, **kwargs)
    eager = evaluation.log_marginal(model, guide, x, **kwargs)
    torch.testing.assert_close(fast.log_px, eager.log_px)


@pytest.mark.parametrize("kind", ["elbo", "iwae"])
def test_a_users_loop_steps_a_batch_norm_once_per_compiled_call(kind, _no_inductor):
    pyro.clear_param_store()
    torch.manual_seed(0)
    x = _data()
    runs = []
    for compile in (True, False):
        torch.manual_seed(0)
        model, guide = Model().double(), Guide(batch_norm=True).double()
        objective = ELBO(model, guide, compile=compile) if kind == "elbo" else IWAE(model, guide, num_particles=3, compile=compile)
        for _ in range(3):
            loss, _ = objective(x)
            loss.backward()
        runs.append(objective)
    fast, eager = runs
    assert fast.compiles
    assert fast.guide.enc[1].num_batches_tracked.item() == 3 == eager.guide.enc[1].num_batches_tracked.item()
    # the statistics are means of the encoder's outputs, which depend on the batch only
    torch.testing.assert_close(fast.guide.enc[1].running_mean, eager.guide.enc[1].running_mean)
    torch.testing.assert_close(fast.guide.enc[1].running_var, eager.guide.enc[1].running_var)


class DeltaGuide(nn.Module):
    """A draw with a known density, as Pyro's AutoGuides hand it to each site."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(D, 2 * L)

    def forward(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, raw = self.enc(x).chunk(2, -1)
            q = dist.Normal(loc, nn.functional.softplus(raw) + 0.1).to_event(1)
            v = q.rsample()
            pyro.sample("z", dist.Delta(v, log_density=q.log_prob(v), event_dim=1))


def test_a_delta_guide_site_keeps_its_log_density_in_the_elbo():
    pyro.clear_param_store()
    torch.manual_seed(0)
    model, guide = Model().double(), DeltaGuide().double()
    x = _data()
    objective = ELBO(model, guide)  # analytic_kl=True: must not take Pyro's KL(Delta || p)
    torch.manual_seed(5)
    loss, _ = objective(x)
    grads = torch.autograd.grad(loss, list(guide.parameters()))
    torch.manual_seed(5)
    reference = Trace_ELBO().differentiable_loss(model, guide, x) / B
    expected = torch.autograd.grad(reference, list(guide.parameters()))
    torch.testing.assert_close(loss, reference)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e)


def test_the_guard_reads_what_a_pair_can_reach_and_nothing_of_the_libraries():
    model = Model("global")
    guard = Guard(model, Guide())
    assert guard.changed() is None and len(guard) < 40  # a check per call: it must stay small
    model.dec.training = False
    assert "training changed from True to False" in guard.changed()
    model.dec.training = True
    model.extra = 2.0  # added after the snapshot: not read by the program either
    assert guard.changed() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Guard(torch.nn.functional.linear, pyro.sample)  # library code: nothing to guard, no error


def test_a_layer_shared_by_model_and_guide_keeps_its_parameters_through_a_capture(_no_inductor):
    """The double transformer VAE's pose map is one nn.Linear in the model and the guide: building a
    program (which swaps tensors through functional_call) must leave the trained parameters in it."""
    from vaezoo import zoo
    from vaezoo.inference import compiled

    pyro.set_rng_seed(0)
    m = zoo.create("dtvae-affine", data_shape=(1, 8, 8), pose_prior="full-rank", pose_rank=3).double()
    objective = m.objective(compile=True)
    x = torch.bernoulli(torch.rand(6, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        objective(x)
    before = {name: p for name, p in objective.named_parameters(remove_duplicate=False)}
    assert objective.model.pose_prior.pose_map is objective.guide.pose_map
    compiled.Captured(objective, x)
    opt = torch.optim.Adam(objective.parameters(), lr=1e-3)
    compiled.TrainingStep(objective, opt, None, x)
    after = {name: p for name, p in objective.named_parameters(remove_duplicate=False)}
    assert before.keys() == after.keys() and all(after[n] is p for n, p in before.items())
