"""The compiled path (``compile=True``): equal to the eager objective where the random numbers are
taken out, reproducible from a seed, exactly resumable, and eager with one warning where it must be.

Each inductor compilation costs seconds: the pairs are tiny, float64, and few shapes are compiled."""

import json
import types
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch import nn

from vaezoo import zoo
from vaezoo.inference import ELBO, IWAE, Trainer, compiled

B = 8


class FixedNoiseNormal(dist.Normal):
    """A Normal whose reparameterized draw is ``loc + scale * eps`` with ``eps`` given (a buffer of
    the guide, broadcast over particles): the draws leave the random stream, so the compiled and the
    eager objective compute on the same draws."""

    def __init__(self, loc, scale, eps, validate_args=None):
        super().__init__(loc, scale, validate_args=validate_args)
        self.eps = eps

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        return FixedNoiseNormal(self.loc.expand(shape), self.scale.expand(shape), self.eps)

    def rsample(self, sample_shape=torch.Size()):
        return self.loc + self.scale * self.eps[: self.loc.shape[-2]]  # the probe runs fewer datapoints


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.dec = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 6))

    def forward(self, x):
        pyro.module("compile_test_dec", self.dec)  # a param site of the objective's own parameters
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)


class Guide(nn.Module):
    def __init__(self, eps):
        super().__init__()
        self.enc = nn.Linear(6, 4)
        self.register_buffer("eps", eps)

    def forward(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, raw = self.enc(x).chunk(2, -1)
            pyro.sample("z", FixedNoiseNormal(loc, nn.functional.softplus(raw) + 1e-3, self.eps).to_event(1))


def _pair():
    torch.manual_seed(0)
    model, guide = Model().double(), Guide(torch.randn(B, 2, dtype=torch.float64))
    x = torch.bernoulli(torch.full((B, 6), 0.4, dtype=torch.float64))
    return model, guide.double(), x


@pytest.mark.parametrize("kind", ["elbo", "iwae"])
def test_compiled_loss_terms_and_gradients_equal_eager_on_the_same_draws(kind):
    pyro.clear_param_store()
    model, guide, x = _pair()
    make = (lambda **kw: ELBO(model, guide, **kw)) if kind == "elbo" else (lambda **kw: IWAE(model, guide, num_particles=3, **kw))
    fast, eager = make(compile=True), make()
    params = list(fast.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback
        for _ in range(2):  # the call that compiles, and a call of the compiled program
            loss, terms = fast(x)
    assert fast.compiles and len(fast._programs) == 1 and fast.compile_seconds > 0
    assert "CompiledFunction" in type(loss.grad_fn).__name__  # inductor's program, not the eager graph
    ref_loss, ref_terms = eager(x)
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(terms, ref_terms)
    assert all(not t.requires_grad for t in terms.values())
    torch.testing.assert_close(torch.autograd.grad(loss, params), torch.autograd.grad(ref_loss, params))


def _train(out=None, epochs=2, resume=False, compile=True):
    """The zoo's vae, tiny, trained on 32 4x4 images in batches of 16 (one compiled shape),
    dynamically binarized (compiled, the program draws the pixels)."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    m = zoo.create("vae", data_shape=(1, 4, 4), hidden=(8,), latent_dim=2)
    x = types.SimpleNamespace(data=torch.rand(32, 1, 4, 4, dtype=torch.float64), binarize="dynamic")
    trainer = Trainer(m.objective(compile=compile), epochs=epochs, batch_size=16, dtype="float64", device="cpu",
                      seed=3, progress=False, out=out)
    history = trainer.fit(x, resume=resume)
    return trainer, history, [p.detach().clone() for p in trainer.params]


@pytest.fixture(scope="module")
def uninterrupted():
    return _train()


@pytest.mark.skipif(not torch._inductor.config.fx_graph_cache, reason="inductor's FX graph cache is turned off")
def test_the_same_seed_gives_the_same_compiled_run_loaded_from_inductors_cache(uninterrupted):
    from torch._dynamo.utils import counters

    trainer, history, params = uninterrupted
    assert trainer.objective.compiles and trainer.optimizer.defaults["fused"]
    assert history[0]["compile_seconds"] > 0 and "compile_seconds" not in history[1]
    hits, bypassed = counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_bypass"]
    _, again, params_again = _train()
    # the same step is not compiled again (compiled._inductor_compile), and the program loaded
    # from the cache takes exactly the compiled steps
    assert counters["inductor"]["fxgraph_cache_hit"] > hits and counters["inductor"]["fxgraph_cache_bypass"] == bypassed
    assert [r["train_loss"] for r in again] == [r["train_loss"] for r in history]
    assert all(torch.equal(a, b) for a, b in zip(params_again, params))
    _, _, eager = _train(compile=False)  # compiled and eager draw differently: documented
    assert not all(torch.equal(a, b) for a, b in zip(eager, params))


def test_an_interrupted_compiled_run_resumes_exactly(uninterrupted, tmp_path):
    _, history, params = uninterrupted
    _train(out=tmp_path, epochs=1)
    trainer, resumed, resumed_params = _train(out=tmp_path, epochs=2, resume=True)
    assert trainer.objective.compiles
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in history]
    assert all(torch.equal(a, b) for a, b in zip(resumed_params, params))


class UnusedGuide(Guide):
    """The fixed-noise guide with a parameter that gets no gradient (Adam leaves it as it is) and a
    batch norm (its running statistics are buffers the step updates in place)."""

    def __init__(self, eps):
        super().__init__(eps)
        self.unused = nn.Parameter(torch.ones(3))
        self.enc = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 4))


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("optimizer, options, clip_norm, device", [
    # the default run keeps the case with the most options (clipping, weight decay, amsgrad); the
    # other two compile for 10 s each and run with the slow tests (CI runs both)
    pytest.param(torch.optim.Adam, {}, None, "cpu", marks=pytest.mark.slow),
    (torch.optim.Adam, {"weight_decay": 0.1, "amsgrad": True}, 0.5, "cpu"),
    pytest.param(torch.optim.AdamW, {"weight_decay": 0.1, "maximize": True}, None, "cpu", marks=pytest.mark.slow),
    pytest.param(torch.optim.Adam, {}, 0.5, "cuda", marks=CUDA),
])
def test_the_one_program_step_is_torch_adams_step(optimizer, options, clip_norm, device):
    """Forward, backward, clipping and the update as one program (compiled.TrainingStep), against
    loss.backward(), clip_grad_norm_ and torch's own (eager, single-tensor) optimizer, on the same
    draws: parameters and the optimizer's state after three steps, float64."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    eps = torch.randn(B, 2, dtype=torch.float64)
    x = torch.bernoulli(torch.full((B, 6), 0.4, dtype=torch.float64)).to(device)
    pairs = []
    for _ in range(2):
        torch.manual_seed(1)
        pairs.append((Model().double().to(device), UnusedGuide(eps).double().to(device)))
    fast, eager = ELBO(*pairs[0], compile=True), ELBO(*pairs[1])
    fast_opt = optimizer(fast.parameters(), lr=0.05, fused=True, **options)
    eager_opt = optimizer(eager.parameters(), lr=0.05, foreach=False, **options)
    with torch.no_grad():  # the checked first call (it updates the batch norm's statistics too)
        fast(x), eager(x)
    buffers = [b.clone() for b in fast.buffers()]
    step = compiled.TrainingStep(fast, fast_opt, clip_norm, x)
    assert all(torch.equal(a, b) for a, b in zip(buffers, fast.buffers()))  # building it moved nothing
    losses = []
    for _ in range(3):
        losses.append(step(x)[0])
        loss, _ = eager(x)
        eager_opt.zero_grad()
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(eager.parameters(), clip_norm)
        eager_opt.step()
        torch.testing.assert_close(losses[-1], loss.detach())
    assert len(set(float(v) for v in losses)) == 3  # the parameters moved
    for p, q in zip(fast.parameters(), eager.parameters()):
        torch.testing.assert_close(p, q)
        assert p.grad is None
    for a, b in zip(fast.buffers(), eager.buffers()):  # the batch norm's statistics, 4 updates each
        torch.testing.assert_close(a, b)
    assert fast.guide.enc[1].num_batches_tracked.item() == 4
    assert torch.equal(fast.guide.unused.cpu(), torch.ones(3, dtype=torch.float64)) and not fast_opt.state[fast.guide.unused]
    for p, q in zip(fast.parameters(), eager.parameters()):
        for kind, value in eager_opt.state[q].items():
            torch.testing.assert_close(fast_opt.state[p][kind], value.to(fast_opt.state[p][kind]), check_dtype=False)


def test_the_trainer_runs_a_compiled_objective_as_one_program_equal_to_eager():
    """The Trainer steps a compiled objective with the one-program step; on the fixed-noise pair
    (no random draws) its run is the eager Trainer's run, to float64 rounding, clipping included.
    The data are dynamically binarized (the program draws the batch's pixels) from probabilities
    0 and 1, so both runs see the same binary batches."""
    runs = []
    for compile in (True, False):
        pyro.clear_param_store()
        model, guide, x = _pair()
        x = types.SimpleNamespace(data=torch.cat([x, 1 - x]), binarize="dynamic")
        trainer = Trainer(ELBO(model, guide, compile=compile), epochs=2, batch_size=B, dtype="float64", device="cpu",
                          progress=False, clip_norm=1.0, lr=0.05)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # no fallback
            history = trainer.fit(x)
        runs.append((trainer, history))
    (fast, fast_history), (eager, eager_history) = runs
    steps = list(fast._steps.values())
    assert [type(s).__name__ for s in steps] == ["TrainingStep"] and steps[0].binarize and not fast.objective._programs
    assert fast_history[0]["compile_seconds"] > 0 and not eager._steps
    for a, b in zip(fast_history, eager_history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-10)
    for p, q in zip(fast.params, eager.params):
        torch.testing.assert_close(p, q)


def test_the_one_program_step_binarizes_a_dynamic_batch_from_the_seed():
    """binarize=True: the program draws Bernoulli(x) pixels itself, from torch's generator (lr 0:
    the parameters stay, so losses differ only by the draws)."""
    pyro.clear_param_store()
    model, guide, _ = _pair()
    objective = ELBO(model, guide, compile=True)
    probs = torch.full((B, 6), 0.5, dtype=torch.float64)
    objective(torch.bernoulli(probs))
    step = compiled.TrainingStep(objective, torch.optim.Adam(objective.parameters(), lr=0.0, fused=True), None, probs,
                                 binarize=True)
    losses = []
    for seed in (0, 1, 0):
        torch.manual_seed(seed)
        losses.append(step(probs)[0].item())
    with pyro.validation_enabled(False):
        unbinarized = ELBO(model, guide, check=False)(probs)[0].item()
    assert losses[0] == losses[2] and losses[0] != losses[1] and unbinarized not in losses


def test_a_training_step_that_cannot_be_built_warns_once_and_runs_the_compiled_objective(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler\nsecond line")

    monkeypatch.setattr(compiled, "_inductor_compile", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, history, _ = _train()
    mine = [str(w.message) for w in caught if "one compiled program" in str(w.message)]
    assert mine == ["the training step does not run as one compiled program: compiling failed (RuntimeError: no C++ "
                    "compiler); it runs as the compiled loss, its backward and the optimizer"]
    assert trainer.objective.compiles and len(trainer.objective._programs) == 1  # the three-program step
    assert history[0]["compile_seconds"] > 0


def test_a_compiler_without_static_shapes_under_a_shape_env_compiles_as_before(monkeypatch):
    """``compile_fx`` without ``ignore_shape_env`` (an older torch): the step is compiled by
    ``torch._inductor.compile`` outside a tracing context, as before the cache was used."""
    import torch._inductor.compile_fx as compile_fx_module

    calls = []
    monkeypatch.setattr(compile_fx_module, "compile_fx", lambda graph, inputs: calls.append("compile_fx"))
    monkeypatch.setattr(compiled.torch._inductor, "compile",
                        lambda graph, inputs: calls.append(torch._guards.TracingContext.try_get()) or "program")
    assert compiled._inductor_compile(None, []) == "program" and calls == [None]


@pytest.mark.parametrize("version, problem", [("2.13.0+cpu", None), ("2.6.0", None), ("2.5.1", "outside"),
                                              ("2.14.0.dev20270101", "outside"), ("3.0.0", "outside")])
def test_private_compiler_apis_are_gated_by_the_torch_release(version, problem):
    found = compiled.private_api_problem(version)
    assert found is None if problem is None else problem in found and version in found


def test_an_untested_torch_trains_through_torch_compile_and_the_optimizer(monkeypatch):
    """On a torch outside the tested releases the one-program step is not built (its private APIs
    and Adam's state layout may have moved): one warning, and the run goes on as the compiled loss,
    its backward and the optimizer's own step."""
    monkeypatch.setattr(compiled.torch, "__version__", "9.1.0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, history, _ = _train()
    mine = [str(w.message) for w in caught if "one compiled program" in str(w.message)]
    assert len(mine) == 1 and "torch 9.1.0 is outside the releases" in mine[0]
    assert trainer.objective.compiles and len(trainer.objective._programs) == 1 and not any(trainer._steps.values())
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in history)


class AnnealedModel(nn.Module):
    """A model whose KL is scaled by a Python number (KL annealing): a compiled program would freeze it."""

    def __init__(self, beta):
        super().__init__()
        self.dec, self.beta = nn.Linear(2, 3), beta

    def forward(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            with poutine.scale(scale=self.beta):
                z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z), 1.0).to_event(1), obs=x)


class AnnealedGuide(nn.Module):
    def __init__(self, beta):
        super().__init__()
        self.enc, self.beta = nn.Linear(3, 4), beta

    def forward(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, raw = self.enc(x).chunk(2, -1)
            with poutine.scale(scale=self.beta):
                pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw)).to_event(1))


def _train_annealed(compile):
    torch.manual_seed(0)
    model, guide = AnnealedModel(0.5).double(), AnnealedGuide(0.5).double()
    x = torch.randn(24, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    trainer = Trainer(ELBO(model, guide, compile=compile), epochs=2, batch_size=8, dtype="float64",
                      device="cpu", progress=False)
    trainer.fit(x)
    return trainer, [p.detach().clone() for p in trainer.params]


def test_a_blocked_pair_warns_once_and_trains_eagerly():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, params = _train_annealed(compile=True)
    mine = [w for w in caught if "compile=True" in str(w.message)]
    assert len(mine) == 1 and "site 'z' has scale 0.5" in str(mine[0].message)
    assert "\n" not in str(mine[0].message)
    assert not trainer.objective.compiles and not trainer.objective._programs
    _, eager = _train_annealed(compile=False)
    assert all(torch.equal(a, b) for a, b in zip(params, eager))  # the eager run, optimizer and all


class PythonTerm(ELBO):
    def loss_and_terms(self, x):
        loss, terms = super().loss_and_terms(x)
        return loss, dict(terms, beta=0.5)


def test_a_python_term_or_a_failed_compilation_falls_back_with_the_eager_draws(monkeypatch):
    pyro.clear_param_store()
    model, guide, x = _pair()
    objective = PythonTerm(model, guide, compile=True)
    with pytest.warns(UserWarning, match="term 'beta' is a Python float"):
        loss, terms = objective(x)
    torch.testing.assert_close(loss, ELBO(model, guide)(x)[0])
    assert terms["beta"] == 0.5 and not objective.compiles

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler\nsecond line")

    monkeypatch.setattr(compiled.torch, "compile", broken)
    m = zoo.create("vae", data_shape=(1, 4, 4), hidden=(8,), latent_dim=2).double()  # draws from the stream
    xm = torch.bernoulli(torch.full((B, 1, 4, 4), 0.3, dtype=torch.float64))
    objective = m.objective(compile=True)
    torch.manual_seed(7)
    with pytest.warns(UserWarning, match=r"compiling failed \(RuntimeError: no C\+\+ compiler\)$"):
        loss = objective(xm)[0]
    after = torch.get_rng_state()
    torch.manual_seed(7)
    ref = m.objective()(xm)[0]
    torch.testing.assert_close(loss, ref)  # the eager step's draws: building the program drew nothing
    assert torch.equal(after, torch.get_rng_state()) and not objective.compiles


@CUDA
def test_compiled_runs_on_cuda_are_reproducible():
    pyro.clear_param_store()
    model, guide, x = _pair()
    model, guide, x = model.cuda(), guide.cuda(), x.cuda()
    objective, eager = ELBO(model, guide, compile=True), ELBO(model, guide)
    for _ in range(2):
        loss, _ = objective(x)
    assert objective.compiles
    torch.testing.assert_close(loss, eager(x)[0])


def test_log_marginal_compiled_equals_eager_and_keeps_its_program():
    """The compiled model pass (full passes after each chunk's checked first pass) on the guide's
    eager draws: the eager estimates to float64 rounding; the program is kept with the model."""
    from vaezoo import evaluation
    from vaezoo.evaluation import importance

    torch.manual_seed(0)
    m = zoo.create("vae", data_shape=(1, 4, 4), hidden=(8,), latent_dim=2).double().eval()
    x = torch.bernoulli(torch.full((8, 1, 4, 4), 0.3, dtype=torch.float64))
    kw = dict(num_samples=64, seed=0, particle_chunk=16, data_chunk=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fast = evaluation.log_marginal(m.model, m.guide, x, compile=True, **kw)
    ref = evaluation.log_marginal(m.model, m.guide, x, **kw)
    torch.testing.assert_close(fast.log_px, ref.log_px)
    torch.testing.assert_close(fast.elbo, ref.elbo)
    assert len(importance._PROGRAMS[m.model]) == 1
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(1.1)  # a trained model: the kept program reads the parameters as they are now
    again = evaluation.log_marginal(m.model, m.guide, x, compile=True, **kw)
    torch.testing.assert_close(again.log_px, evaluation.log_marginal(m.model, m.guide, x, **kw).log_px)
    assert len(importance._PROGRAMS[m.model]) == 1


@pytest.mark.slow  # two processes' worth of compiling a zoo entry (about 15 s quiet); CI runs it with the slow tests
def test_vaezoo_train_compile_is_recorded_and_kept_on_resume(tmp_path, capsys):
    from vaezoo import cli

    run = tmp_path / "run"
    tiny = ["--dataset", "digits", "--n-train", "64", "--batch-size", "32", "--eval-samples", "0", "--quiet",
            "--device", "cpu", "--set", "hidden=8", "--set", "latent_dim=2"]
    assert cli.main(["train", "--compile", "--epochs", "1", "--out", str(run)] + tiny) == 0
    assert json.loads((run / "config.json").read_text())["train"]["compile"] is True
    assert cli.main(["train", "--resume", "--epochs", "2", "--out", str(run), "--quiet", "--device", "cpu",
                     "--eval-samples", "0"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # the resumed process compiled its own program: the run went on compiled
    assert [r["epoch"] for r in records] == [1, 2] and all(r["compile_seconds"] > 0 for r in records)
    assert "compiling" in capsys.readouterr().err
