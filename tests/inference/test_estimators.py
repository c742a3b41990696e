"""The STL and DReG gradient estimators (``ELBO(estimator="stl")``, ``IWAE(estimator="dreg")``):
unbiased against the exact expected gradient on a linear-Gaussian model, lower variance than the
standard estimators, the same values and model gradients on the same draws, refusals in one line,
and the same under ``compile=True`` and the Trainer's one-program step.

The per-draw gradients come from one vectorized call: every datapoint has its own copy of the
parameters (``[N]`` tensors of equal values), so the gradient of the per-datapoint loss with
respect to copy n is draw n's gradient, divided by N."""

import math
import types
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import config_enumerate
from torch import nn

from vaezoo.errors import ConfigError, SiteError
from vaezoo.inference import ELBO, IWAE, Trainer

from test_compile import B, _pair  # the fixed-noise pair: compiled and eager on the same draws

S = 0.8  # the observation noise of the linear-Gaussian model
X = 1.5  # every datapoint
A, B_ = 1.3, 0.4  # the model's parameters
FAR = dict(c=0.1, d=1.0, e=1.4)  # a guide far from the posterior
NAMES = "abcde"


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


class LinearGaussian(nn.Module):
    """p(z) = N(0, 1), p(x | z) = N(a z + b, S^2); q(z | x) = N(c x + d, e^2), with one copy of
    (a, b, c, d, e) per datapoint."""

    def __init__(self, n, a=A, b=B_, c=0.5, d=-0.2, e=0.7):
        super().__init__()
        for name, value in zip(NAMES, (a, b, c, d, e)):
            setattr(self, name, nn.Parameter(torch.full((n,), float(value))))

    def model(self, x):
        n = x.shape[0]
        with pyro.plate("data", n, dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(()), 1.0))
            pyro.sample("x", dist.Normal(self.a[:n] * z + self.b[:n], S), obs=x)

    def guide(self, x):
        n = x.shape[0]
        with pyro.plate("data", n, dim=-1):
            pyro.sample("z", dist.Normal(self.c[:n] * x + self.d[:n], self.e[:n]))


def per_draw(make, n=20_000, seed=0, **params):
    """``(loss, gradients [5, n])``: the loss and each draw's gradient of it in (a, b, c, d, e)."""
    pair = LinearGaussian(n, **params)
    objective = make(pair.model, pair.guide)
    pyro.set_rng_seed(seed)
    loss, _ = objective(torch.full((n,), X))
    grads = torch.autograd.grad(loss, [getattr(pair, k) for k in NAMES])
    return loss.detach(), torch.stack(grads) * n


def exact_elbo_gradient(a=A, b=B_, c=0.5, d=-0.2, e=0.7):
    """The gradient of the negative ELBO in (a, b, c, d, e), from its closed form."""
    p = [torch.tensor(float(v), requires_grad=True) for v in (a, b, c, d, e)]
    a, b, c, d, e = p
    m, v = c * X + d, e**2
    elbo = (
        -0.5 * math.log(2 * math.pi * S**2) - ((X - a * m - b) ** 2 + a**2 * v) / (2 * S**2)  # E log p(x | z)
        - 0.5 * math.log(2 * math.pi) - (m**2 + v) / 2  # E log p(z)
        + 0.5 * torch.log(2 * math.pi * math.e * v)  # the entropy of q
    )
    return -torch.stack(torch.autograd.grad(elbo, p))


def z_scores(g, reference, reference_g=None):
    """(mean of g - reference) in standard errors (of both means, if the reference is an estimate)."""
    var = g.var(1) / g.shape[1]
    if reference_g is not None:
        var = var + reference_g.var(1) / reference_g.shape[1]
        reference = reference_g.mean(1)
    return (g.mean(1) - reference) / var.sqrt()


def test_stl_is_unbiased_and_has_the_elbos_value():
    exact = exact_elbo_gradient(**FAR)
    loss, g = per_draw(lambda m, q: ELBO(m, q, estimator="stl"), **FAR)
    assert z_scores(g, exact).abs().max() < 4
    assert (g.mean(1) - exact).abs().max() < 0.05 * exact.abs().max()
    ref_loss, ref_g = per_draw(lambda m, q: ELBO(m, q, analytic_kl=False), **FAR)
    assert loss == ref_loss  # the same draws: the same value
    torch.testing.assert_close(g[:2], ref_g[:2])  # and the same model gradient
    assert not torch.allclose(g[2:], ref_g[2:])  # but not the same guide gradient


def test_stl_has_lower_variance_near_the_optimum():
    """At the exact posterior (q = p(z | x)) the STL guide gradient is zero at every draw; the
    standard one (closed-form KL or sampled) is not."""
    c, d, e = A / (A**2 + S**2), -A * B_ / (A**2 + S**2), S / math.sqrt(A**2 + S**2)
    for shift in (0.0, 0.05):
        near = dict(c=c + shift, d=d - shift, e=e + shift)
        _, stl = per_draw(lambda m, q: ELBO(m, q, estimator="stl"), n=2000, **near)
        for analytic_kl in (True, False):
            _, std = per_draw(lambda m, q: ELBO(m, q, analytic_kl=analytic_kl), n=2000, **near)
            assert (stl[2:].var(1) < 0.1 * std[2:].var(1)).all(), (shift, analytic_kl)
        if shift == 0.0:
            assert stl[2:].abs().max() < 1e-10


def test_dreg_is_unbiased_at_k1_against_the_exact_elbo_gradient():
    _, g = per_draw(lambda m, q: IWAE(m, q, num_particles=1, estimator="dreg"), **FAR)
    exact = exact_elbo_gradient(**FAR)
    assert z_scores(g, exact).abs().max() < 4


def test_dreg_agrees_with_the_standard_iwae_gradient_with_lower_variance_at_k10():
    make_dreg = lambda m, q: IWAE(m, q, num_particles=10, estimator="dreg")  # noqa: E731
    make_std = lambda m, q: IWAE(m, q, num_particles=10)  # noqa: E731
    _, dreg = per_draw(make_dreg, n=10_000, seed=1, **FAR)
    _, std = per_draw(make_std, n=10_000, seed=2, **FAR)
    assert z_scores(dreg, None, std).abs().max() < 4
    guide_se = (dreg[2:].var(1) / dreg.shape[1]).sqrt()
    assert (dreg[2:].mean(1).abs() > 10 * guide_se).all()  # a gradient clearly away from zero, found
    assert (dreg[2:].var(1) < std[2:].var(1) / 5).all()  # the guide's variance, far below
    # on the same draws: the same bound and the same model gradient
    loss, same = per_draw(make_dreg, n=500, seed=3, **FAR)
    ref_loss, ref = per_draw(make_std, n=500, seed=3, **FAR)
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(same[:2], ref[:2])


class TwoLayer(nn.Module):
    """A hierarchical guide x -> z1 -> z2 (q(z2 | z1) depends on z1 along the path) against the
    model z2 -> z1 -> x, all linear-Gaussian: the path through z1 must reach the guide's gradient."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.9, -0.6, 0.4]))  # model: z1 | z2, x | z1
        self.v = nn.Parameter(torch.tensor([0.3, 0.2, 0.7, 0.5, -0.4, 0.6]))  # guide

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", dist.Normal(torch.zeros(()), 1.0))
            z1 = pyro.sample("z1", dist.Normal(self.w[0] * z2, 0.8))
            pyro.sample("x", dist.Normal(self.w[1] * z1 + self.w[2], 0.7), obs=x)

    def guide(self, x):
        v = self.v
        with pyro.plate("data", x.shape[0], dim=-1):
            z1 = pyro.sample("z1", dist.Normal(v[0] * x + v[1], nn.functional.softplus(v[2])))
            pyro.sample("z2", dist.Normal(v[3] * z1, nn.functional.softplus(v[4]) + v[5] ** 2))


@pytest.mark.parametrize("kind", ["stl", "dreg"])
def test_the_estimators_follow_a_hierarchical_guides_path(kind):
    pair = TwoLayer()
    x = torch.full((20_000,), 0.8)
    if kind == "stl":
        make = lambda **kw: ELBO(pair.model, pair.guide, **kw)  # noqa: E731
    else:
        make = lambda **kw: IWAE(pair.model, pair.guide, num_particles=4, **kw)  # noqa: E731
    grads = {}
    for estimator, seed in ((kind, 0), ("standard", 1)):
        objective = make(estimator=estimator)
        pyro.set_rng_seed(seed)
        per = []
        for chunk in x.split(5_000):  # per-draw gradients need per-draw parameters: chunks' means
            loss, _ = objective(chunk)
            per.append(torch.cat(torch.autograd.grad(loss, [pair.w, pair.v])))
        grads[estimator] = torch.stack(per, 1)  # [9, 4] chunk means
    est, std = grads[kind], grads["standard"]
    se = ((est.var(1) + std.var(1)) / est.shape[1]).sqrt()
    assert ((est.mean(1) - std.mean(1)).abs() < 4 * se + 2e-3).all()


def test_the_estimators_refuse_what_they_cannot_estimate():
    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def discrete_guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Bernoulli(0.3))

    def normal_model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def delta_guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Delta(x))

    x = torch.randn(4)
    for objective in (ELBO(model, discrete_guide, estimator="stl"), IWAE(model, discrete_guide, num_particles=3, estimator="dreg")):
        with pytest.raises(SiteError, match=r"guide site 'z' has no reparameterized sampler.*estimator='standard'"):
            objective(x)
    with pytest.raises(SiteError, match=r"guide site 'z' is a point mass \(Delta\)"):
        IWAE(normal_model, delta_guide, estimator="dreg")(x)
    with pytest.raises(SiteError, match=r"model site 'z' is marked for enumeration"):
        ELBO(config_enumerate(model), lambda x: None, estimator="stl")(x)
    with pytest.raises(ConfigError, match=r"IWAE estimator='stl'; expected one of standard, dreg"):
        IWAE(model, discrete_guide, estimator="stl")
    with pytest.raises(ConfigError, match=r"ELBO estimator='dreg'; expected one of standard, stl"):
        ELBO(model, discrete_guide, estimator="dreg")


def test_without_gradients_the_estimators_give_the_standard_value():
    pair = LinearGaussian(50)
    x = torch.full((50,), X)
    for make in (lambda **kw: ELBO(pair.model, pair.guide, analytic_kl=False, **kw),
                 lambda **kw: IWAE(pair.model, pair.guide, num_particles=4, **kw)):
        values = []
        for estimator in ("standard", "stl" if "ELBO" in repr(make(estimator="standard")) else "dreg"):
            pyro.set_rng_seed(0)
            with torch.no_grad():
                values.append(make(estimator=estimator)(x))
        torch.testing.assert_close(values[0], values[1])


# --------------------------------------------------------------------------------- compiled


@pytest.mark.parametrize("kind", ["stl", "dreg"])
def test_compiled_estimators_equal_eager_on_the_same_draws(kind):
    pyro.clear_param_store()
    model, guide, x = _pair()
    if kind == "stl":
        make = lambda **kw: ELBO(model, guide, estimator="stl", **kw)  # noqa: E731
    else:
        make = lambda **kw: IWAE(model, guide, num_particles=3, estimator="dreg", **kw)  # noqa: E731
    fast, eager = make(compile=True), make()
    params = list(fast.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback
        for _ in range(2):
            loss, terms = fast(x)
    assert fast.compiles and len(fast._programs) == 1
    ref_loss, ref_terms = eager(x)
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(terms, ref_terms)
    grads, ref_grads = torch.autograd.grad(loss, params), torch.autograd.grad(ref_loss, params)
    torch.testing.assert_close(grads, ref_grads)
    standard = (ELBO(model, guide, analytic_kl=False) if kind == "stl" else IWAE(model, guide, num_particles=3))(x)[0]
    assert not all(torch.allclose(a, b) for a, b in zip(grads, torch.autograd.grad(standard, params)))


def test_the_trainer_steps_dreg_as_one_program_equal_to_eager():
    runs = []
    for compile in (True, False):
        pyro.clear_param_store()
        model, guide, x = _pair()
        data = types.SimpleNamespace(data=torch.cat([x, 1 - x]), binarize="dynamic")
        trainer = Trainer(IWAE(model, guide, num_particles=3, estimator="dreg", compile=compile), epochs=2, batch_size=B,
                          dtype="float64", device="cpu", progress=False, lr=0.05)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            history = trainer.fit(data)
        runs.append((trainer, history))
    (fast, fast_history), (eager, eager_history) = runs
    assert fast.objective.compiles and [type(s).__name__ for s in fast._steps.values()] == ["TrainingStep"]
    for a, b in zip(fast_history, eager_history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-10)
    for p, q in zip(fast.params, eager.params):
        torch.testing.assert_close(p, q)


def test_dreg_one_particle_per_pass_agrees_with_the_vectorized_pass():
    """A pair that cannot take a particle plate runs DReG one particle per pass: the same estimator."""
    from vaezoo.inference import estimators

    grads = []
    for particle_dim, seed in ((-2, 0), (None, 1)):
        pair = LinearGaussian(10_000, **FAR)
        pyro.set_rng_seed(seed)
        log_w, surrogate = estimators.dreg_surrogate(pair.model, pair.guide, torch.full((10_000,), X), 3, particle_dim)
        assert log_w.shape == (3, 10_000) and surrogate.item() == 0
        grads.append(torch.stack(torch.autograd.grad(-surrogate, [getattr(pair, k) for k in NAMES])) * 10_000)
    assert z_scores(grads[1], None, grads[0]).abs().max() < 4


def test_dreg_on_a_batch_of_one():
    pair = LinearGaussian(1, **FAR)
    loss, _ = IWAE(pair.model, pair.guide, num_particles=4, estimator="dreg")(torch.full((1,), X))
    grads = torch.autograd.grad(loss, [getattr(pair, k) for k in NAMES])
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
