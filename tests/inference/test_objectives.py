"""The objectives against Pyro's own inference: the same value as ``Trace_ELBO`` /
``TraceMeanField_ELBO`` / ``TraceEnum_ELBO`` on the same draws, expected gradients against exact
ones, closed-form KL only where it is exact, and one-line refusals for what they cannot do."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO, config_enumerate
from torch import nn

from vaezoo.errors import SiteError
from vaezoo.inference import ELBO, IWAE, compiled



@pytest.fixture(autouse=True)
def float64():
    """Every test here runs in float64 (and leaves the default dtype as it found it)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _params(*values):
    return [nn.Parameter(torch.tensor(v, dtype=torch.float64)) for v in values]


class Gaussian(nn.Module):
    """x_n in R^3, two latent components per datapoint in a plate of their own; ``scale_model`` /
    ``scale_guide`` wrap z in ``poutine.scale``; ``mask`` masks the observation; ``subsample``
    makes the data plate subsample."""

    def __init__(self, scale_model=1.0, scale_guide=1.0, mask=False, subsample=None):
        super().__init__()
        self.a, self.b, self.w = _params(0.3, -0.5, 0.7)
        self.scale_model, self.scale_guide, self.mask, self.subsample = scale_model, scale_guide, mask, subsample

    def _plate(self, x):
        return pyro.plate("data", x.shape[0], subsample_size=self.subsample, dim=-1)

    def model(self, x):
        with self._plate(x) as idx:
            xb = x[idx]
            with pyro.plate("comp", 2, dim=-2), poutine.scale(scale=self.scale_model):
                z = pyro.sample("z", dist.Normal(self.w * torch.ones(()), 1.0))  # [2, B]
            keep = xb[:, 0] > 0 if self.mask else True
            with poutine.mask(mask=keep):
                pyro.sample("x", dist.Normal(z.sum(-2).unsqueeze(-1).expand(xb.shape), 1.0).to_event(1), obs=xb)

    def guide(self, x):
        with self._plate(x) as idx:
            xb = x[idx]
            loc = self.a * xb[:, :2].T  # [2, B]
            with pyro.plate("comp", 2, dim=-2), poutine.scale(scale=self.scale_guide):
                pyro.sample("z", dist.Normal(loc, nn.functional.softplus(self.b)))


class Mixture(nn.Module):
    """c ~ Bernoulli(1/2), x ~ N(mu_c, 1): the guide's c has no reparameterized sampler."""

    def __init__(self, logit=0.0):
        super().__init__()
        (self.theta,) = _params(logit)
        self.mu = torch.tensor([-2.0, 2.0])

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            c = pyro.sample("c", dist.Bernoulli(torch.tensor(0.5)))
            pyro.sample("x", dist.Normal(self.mu[c.long()], 1.0), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("c", dist.Bernoulli(logits=self.theta.expand(x.shape)))

    def exact_elbo(self, x):
        """sum_c q(c) [log p(c) + log p(x | c) - log q(c)] for one datapoint x (a float)."""
        q1 = torch.sigmoid(self.theta)
        total = 0.0
        for c, qc in ((0, 1 - q1), (1, q1)):
            total = total + qc * (math.log(0.5) + dist.Normal(self.mu[c], 1.0).log_prob(torch.tensor(x)) - qc.log())
        return total


def _same_draws(objective_loss, pyro_loss, seed=0):
    pyro.set_rng_seed(seed)
    ours = objective_loss()
    pyro.set_rng_seed(seed)
    theirs = pyro_loss()
    return ours, theirs


def _grads(loss, params):
    return torch.autograd.grad(loss, params, allow_unused=True)


@pytest.mark.parametrize(
    "kind",
    ["plain", "annealed", "scale-on-one-side", "masked", "subsampled"],
)
@pytest.mark.parametrize("analytic_kl", [False, True])
def test_value_and_gradient_equal_trace_elbo(kind, analytic_kl):
    """The loss times the data plate's size is Pyro's Trace_ELBO loss on the same draws, and so is
    its gradient: scales, masks and subsampling are honoured as Pyro honours them. With
    analytic_kl=True the pairs here get the sampled term wherever the closed form is not exact (a
    scale on one side); where it is exact, the value is TraceMeanField_ELBO's."""
    opts = {
        "plain": {},
        "annealed": dict(scale_model=0.3, scale_guide=0.3),
        "scale-on-one-side": dict(scale_model=0.5),
        "masked": dict(mask=True),
        "subsampled": dict(subsample=4),
    }[kind]
    pair = Gaussian(**opts)
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(1))
    objective = ELBO(pair.model, pair.guide, analytic_kl=analytic_kl)
    reference = TraceMeanField_ELBO if analytic_kl and kind != "scale-on-one-side" else Trace_ELBO
    ours, theirs = _same_draws(
        lambda: objective(x)[0] * 10,
        lambda: reference(max_plate_nesting=2).differentiable_loss(pair.model, pair.guide, x),
    )
    assert objective._analytic == ({"z"} if analytic_kl and kind != "scale-on-one-side" else set())
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    params = list(pair.parameters())
    for g1, g2 in zip(_grads(ours, params), _grads(theirs, params)):
        torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)


def _hierarchical(c=0.8, s1=0.5, s2=0.4, sp=0.3, a=0.2):
    """Model z2 ~ N(0, 1), z1 | z2 ~ N(z2, sp^2), x | z1 ~ N(z1, 1); guide x -> z1 -> z2:
    z1 ~ N(a, s1^2), z2 | z1 ~ N(c z1, s2^2). Returns the pair and its exact ELBO at x."""

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", dist.Normal(torch.tensor(0.0), 1.0))
            z1 = pyro.sample("z1", dist.Normal(z2, sp))
            pyro.sample("x", dist.Normal(z1, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z1 = pyro.sample("z1", dist.Normal(torch.full_like(x, a), s1))
            pyro.sample("z2", dist.Normal(c * z1, s2))

    def exact(x):
        m2 = a**2 + s1**2  # E[z1^2]
        log2pi = math.log(2 * math.pi)
        lik = -0.5 * log2pi - 0.5 * ((x - a) ** 2 + s1**2)
        p1 = -0.5 * log2pi - math.log(sp) - ((1 - c) ** 2 * m2 + s2**2) / (2 * sp**2)
        p2 = -0.5 * log2pi - 0.5 * (c**2 * m2 + s2**2)
        h = log2pi + math.log(s1) + math.log(s2) + 1.0  # entropies of q(z1) and q(z2 | z1)
        return lik + p1 + p2 + h

    # what the closed-form KL of z1 given the sampled z2 would add: c s1^2 / sp^2 nats
    bias = c * s1**2 / sp**2
    return model, guide, exact, bias


def test_closed_form_kl_only_where_exact():
    """A guide x -> z1 -> z2 against a model z2 -> z1: KL(q(z1) || p(z1 | z2)) given the sampled z2
    would be biased by c s1^2 / sp^2 = 2.2 nats; the objective takes the closed form for z2 only,
    and its mean over many draws is the exact ELBO."""
    model, guide, exact, bias = _hierarchical()
    assert bias > 2.0
    x = torch.full((40000,), 0.7)
    objective = ELBO(model, guide, analytic_kl=True)
    pyro.set_rng_seed(0)
    _, terms = objective(x)
    assert objective._analytic == {"z2"}
    # the per-datapoint ELBO has a standard deviation below 3 here: 40000 draws give se < 0.015
    assert abs(terms["elbo"].item() - exact(0.7)) < 0.08


def _expected_gradient(objective, x, param, rounds=8):
    """Mean and standard error of d(ELBO)/d(param) over ``rounds`` calls on the batch ``x``."""
    grads = []
    for r in range(rounds):
        pyro.set_rng_seed(100 + r)
        loss, _ = objective(x)
        (g,) = torch.autograd.grad(-loss, [param])
        grads.append(g)
    g = torch.stack(grads)
    return g.mean().item(), (g.std() / math.sqrt(rounds)).item()


def test_score_function_gradient_of_a_discrete_guide_site():
    """A two-component mixture: the objective's expected gradient in the guide's logit
    (score-function term with its baseline) and Pyro's Trace_ELBO agree with the exact gradient
    (+1.5 at x = 1.5 and logit 0) within Monte Carlo error. Without the score term the expected
    gradient is that of the entropy alone, 0 here."""
    pair = Mixture()
    x0 = 1.5
    (exact,) = torch.autograd.grad(pair.exact_elbo(x0), [pair.theta])
    assert exact.item() > 1.0
    x = torch.full((4000,), x0)
    objective = ELBO(pair.model, pair.guide)
    ours, ours_se = _expected_gradient(objective, x, pair.theta)
    assert "c" in objective._baselines  # the later rounds ran with a baseline
    assert abs(ours - exact.item()) < 4 * ours_se + 0.01

    def pyro_loss(x):
        return Trace_ELBO(max_plate_nesting=1).differentiable_loss(pair.model, pair.guide, x) / x.shape[0], {}

    theirs, theirs_se = _expected_gradient(pyro_loss, x, pair.theta)
    assert abs(theirs - exact.item()) < 4 * theirs_se + 0.01
    assert ours_se < 0.05


def test_score_function_first_call_equals_trace_elbo_and_baselines_are_state():
    """With no baseline yet (the first call), the surrogate is Trace_ELBO's: same value and same
    gradient on the same draws. The baseline then lives in state_dict and loads back."""
    pair = Mixture(logit=0.4)
    x = torch.tensor([1.5, -0.3, 2.2, 0.1])
    objective = ELBO(pair.model, pair.guide)
    ours, theirs = _same_draws(
        lambda: objective(x)[0] * 4,
        lambda: Trace_ELBO(max_plate_nesting=1).differentiable_loss(pair.model, pair.guide, x),
    )
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(_grads(ours, [pair.theta])[0], _grads(theirs, [pair.theta])[0])
    state = objective.state_dict()
    assert set(state) == {"baseline.c"}
    fresh = ELBO(pair.model, pair.guide)
    fresh.load_state_dict(state)
    assert fresh._baselines == objective._baselines


class M2(nn.Module):
    """A small semi-supervised VAE (Kingma et al. 2014, Pyro's ss-vae): y ~ Cat(1/2, 1/2),
    z ~ N(0, I_2), x ~ N(W_y z + b_y, 0.5^2 I); the guide's classifier q(y | x) is enumerated."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.classifier = nn.Linear(2, 2)
        self.encoder = nn.Linear(4, 4)
        self.W = torch.randn(2, 2, 2, generator=g)
        self.b = torch.tensor([[-3.0, 0.0], [3.0, 0.0]])

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            y = pyro.sample("y", dist.Categorical(logits=x.new_zeros(2)))
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            loc = (self.W[y] @ z.unsqueeze(-1)).squeeze(-1) + self.b[y]
            pyro.sample("x", dist.Normal(loc, 0.5).to_event(1), obs=x)

    @config_enumerate
    def guide(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            y = pyro.sample("y", dist.Categorical(logits=self.classifier(x)))  # [B] or [2, 1] enumerated
            xs, onehot = torch.broadcast_tensors(x, nn.functional.one_hot(y, 2).to(x))
            h = self.encoder(torch.cat([xs, onehot], -1))
            loc, raw = h.chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))


def test_enumerated_sites_are_summed_out_as_trace_enum_elbo_does():
    """Pyro's M2 with config_enumerate: the loss is TraceEnum_ELBO's on the same draws, and so is
    its gradient in the classifier (sampling y instead leaves q(y | x) untrained)."""
    pair = M2().double()
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(2)) + torch.tensor([3.0, 0.0])
    objective = ELBO(pair.model, pair.guide)
    objective(x)  # the first call finds the sites to enumerate (one plain run of the pair)
    ours, theirs = _same_draws(
        lambda: objective(x)[0] * 6,
        lambda: TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(pair.model, pair.guide, x),
    )
    torch.testing.assert_close(ours, theirs)
    params = list(pair.classifier.parameters())
    for g1, g2 in zip(_grads(ours, params), _grads(theirs, params)):
        torch.testing.assert_close(g1, g2)
        assert g1.abs().max() > 1e-3


def test_enumeration_trains_the_classifier():
    """Two clusters, unlabelled: trained by the ELBO with y enumerated, q(y | x) separates them."""
    pyro.set_rng_seed(0)
    pair = M2().double()
    g = torch.Generator().manual_seed(3)
    labels = torch.arange(64) % 2
    x = torch.randn(64, 2, generator=g) * 0.5 + pair.b[labels]
    objective = ELBO(pair.model, pair.guide)
    opt = torch.optim.Adam(pair.parameters(), lr=0.05)
    for _ in range(25):
        loss, _ = objective(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    pred = pair.classifier(x).argmax(-1)
    accuracy = max((pred == labels).double().mean().item(), (pred != labels).double().mean().item())
    assert accuracy > 0.95


class Annealed(nn.Module):
    """A module pair whose KL term is scaled by a Python number read at every call (KL annealing)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(3, 4)
        self.dec = nn.Linear(2, 3)
        self.beta = 1.0

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            with poutine.scale(scale=self.beta):
                z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z), 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, raw = self.enc(x).chunk(2, -1)
            with poutine.scale(scale=self.beta):
                pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw)).to_event(1))


def test_compile_does_not_freeze_an_annealing_factor():
    pair = Annealed()
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    compiled, eager = ELBO(pair.model, pair.guide, compile=True), ELBO(pair.model, pair.guide)
    pair.beta = 0.1
    with pytest.warns(UserWarning, match="scale"):
        compiled(x)
    for beta in (0.1, 0.5, 0.9):
        pair.beta = beta
        ours, ref = _same_draws(lambda: compiled(x)[1]["kl"], lambda: eager(x)[1]["kl"])
        torch.testing.assert_close(ours, ref)
    _, kl_low = _same_draws(lambda: None, lambda: (setattr(pair, "beta", 0.1), compiled(x)[1]["kl"])[1])
    _, kl_high = _same_draws(lambda: None, lambda: (setattr(pair, "beta", 0.9), compiled(x)[1]["kl"])[1])
    torch.testing.assert_close(kl_high, 9 * kl_low)


class Decoder(nn.Module):
    """A model whose network is registered with pyro.module inside the program, as a PyroModule's
    is: the parameters are the objective's own (the model is its submodule), so compiling stays on."""

    def __init__(self):
        super().__init__()
        self.dec = nn.Linear(2, 3)

    def forward(self, x):
        pyro.module("dec", self.dec)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z), 1.0).to_event(1), obs=x)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(3, 4)

    def forward(self, x):
        pyro.module("enc", self.enc)
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, raw = self.enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw)).to_event(1))


def test_compile_captures_a_pair_whose_params_are_its_own(recwarn):
    """No warning, and the captured aten graph replayed op by op (the eager draws) gives the eager
    loss and gradients: nothing of the pair is frozen (the inductor-compiled program draws its own
    random numbers: tests/inference/test_compile.py)."""
    pyro.clear_param_store()
    model, guide = Decoder(), Encoder()
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    objective = ELBO(model, guide, compile=True)
    with torch.no_grad():
        objective(x)  # the checked first call (eager without gradients)
    assert objective._blocker is None
    captured = compiled.Captured(objective, x)
    params = list(objective.parameters())
    for _ in range(3):
        ours, ref = _same_draws(lambda: captured(x)[0], lambda: objective.loss_and_terms(x)[0])
        torch.testing.assert_close(ours, ref)
        torch.testing.assert_close(_grads(ours, params), _grads(ref, params))
    assert not [w for w in recwarn if "compile" in str(w.message)]


def test_compile_refuses_parameters_it_does_not_own():
    """Bound methods of a module: a captured objective would hold their parameters as
    constants."""
    pyro.clear_param_store()
    pair = Annealed()
    with pytest.warns(UserWarning, match="param site"):
        ELBO(lambda x: (pyro.module("dec", pair.dec), pair.model(x)), pair.guide, compile=True)(torch.zeros(2, 3))


def test_compile_refuses_a_param_store_parameter():
    pyro.clear_param_store()

    def model(x):
        w = pyro.param("w", torch.tensor(0.5))
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(w, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(x, 1.0))

    objective = ELBO(model, guide, compile=True)
    with pytest.warns(UserWarning, match="param site 'w'"):
        objective(torch.zeros(3))
    assert objective._blocker is not None and not objective._programs


def _one_line(err):
    text = str(err.value)
    assert "\n" not in text
    return text


def test_iwae_vimco_gradient_of_a_discrete_guide_site():
    """IWAE-3 on the mixture: its exact gradient in the guide's logit, by enumerating the 2^3
    particle tuples, against the VIMCO estimator's mean (score terms with leave-one-out
    baselines), within Monte Carlo error."""
    pair = Mixture(logit=0.3)
    x0, K = 1.5, 3
    q1 = torch.sigmoid(pair.theta)
    log_w = []  # log p(x, c) - log q(c), c = 0, 1
    for c, qc in ((0, 1 - q1), (1, q1)):
        log_w.append(math.log(0.5) + dist.Normal(pair.mu[c], 1.0).log_prob(torch.tensor(x0)) - qc.log())
    exact = 0.0
    for tup in torch.cartesian_prod(*[torch.tensor([0, 1])] * K):
        prob = torch.stack([q1 if c else 1 - q1 for c in tup]).prod()
        exact = exact + prob * (torch.stack([log_w[c] for c in tup]).logsumexp(0) - math.log(K))
    (exact_grad,) = torch.autograd.grad(exact, [pair.theta])
    objective = IWAE(pair.model, pair.guide, num_particles=K)
    ours, se = _expected_gradient(objective, torch.full((4000,), x0), pair.theta)
    assert abs(exact_grad.item()) > 0.3
    assert abs(ours - exact_grad.item()) < 4 * se + 0.01, (ours, se, exact_grad)


def test_iwae_refuses_what_its_gradient_cannot_do():
    pair = Mixture()
    with pytest.raises(SiteError) as err:
        IWAE(pair.model, pair.guide, num_particles=1)(torch.zeros(4))
    assert "'c'" in _one_line(err) and "num_particles >= 2" in str(err.value)

    m2 = M2().double()
    with pytest.raises(SiteError) as err:
        IWAE(m2.model, m2.guide, num_particles=3)(torch.zeros(4, 2))
    assert "enumerat" in _one_line(err)

    sub = Gaussian(subsample=4)
    with pytest.raises(SiteError) as err:
        IWAE(sub.model, sub.guide, num_particles=3)(torch.zeros(10, 3))
    assert "subsample" in _one_line(err)


def test_autoguide_auxiliary_sites_and_obs_mask_are_refused_in_one_line():
    pyro.clear_param_store()

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.tensor(0.0), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    guide = pyro.infer.autoguide.AutoMultivariateNormal(model)
    with pytest.raises(SiteError) as err:
        ELBO(model, guide)(torch.zeros(3))
    assert "auxiliary" in _one_line(err) and "AutoGuide" in str(err.value)

    def masked(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.tensor(0.0), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x, obs_mask=x > 0)

    def guide_z(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(x, 1.0))

    with pytest.raises(SiteError) as err:
        ELBO(masked, guide_z)(torch.tensor([1.0, -1.0]))
    assert "obs_mask" in _one_line(err) and "poutine.mask" in str(err.value)
