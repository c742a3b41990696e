"""Conformance checks run on every distribution of ``conftest.CASES``: shapes, ``expand``,
log_prob / entropy / moments / KL against a dense MultivariateNormal, Monte-Carlo checks,
gradients, validation, dispatch through Pyro, and NumPyro's MatrixNormal. All in float64."""

import contextlib
import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import kl_divergence

from vaezoo.distributions import AR1Normal, DiagonalMatrixNormal, MatrixNormal
from vaezoo.errors import ShapeError

DTYPE = torch.float64

# Sample-based checks draw NUM_SAMPLES iid samples under a fixed seed and accept an estimate
# within Z standard errors of its exact value. Each check compares up to a few thousand numbers;
# at 5 standard errors a correct implementation fails one with probability ~6e-7 per number,
# while a wrong covariance (e.g. a transposed factor, a missing sqrt(1 - rho^2)) is off by tens.
NUM_SAMPLES = 20000
Z = 5.0


# ----- dense references, built from the parameters alone ---------------------------------------


def flatten(d, value):
    """An event-shaped value ``[..., *event_shape]`` as a vector ``[..., D]``: column-stacking
    ``vec`` for matrices, the convention of ``vec(X) ~ N(vec(M), V (x) U)``."""
    return value.mT.flatten(-2) if isinstance(d, MatrixNormal) else value


def dense(d):
    """``(loc [*batch, D], covariance [*batch, D, D])`` of ``d``, written out explicitly."""
    if isinstance(d, DiagonalMatrixNormal):
        U, V = torch.diag_embed(d.scale_row**2), torch.diag_embed(d.scale_column**2)
    elif isinstance(d, MatrixNormal):
        U = d.scale_tril_row @ d.scale_tril_row.mT
        V = d.scale_tril_column @ d.scale_tril_column.mT
    if isinstance(d, MatrixNormal):
        m, n = d.event_shape
        # kron(V, U)[j*m + i, l*m + k] = V[j, l] U[i, k]
        cov = V[..., :, None, :, None] * U[..., None, :, None, :]
        return flatten(d, d.loc), cov.reshape(d.batch_shape + (m * n, m * n))
    k = torch.arange(d.event_shape[0])
    lag = (k[:, None] - k).abs().to(DTYPE)
    toeplitz = d.rho[..., None, None] ** lag
    return d.loc, d.scale[..., None, None] ** 2 * toeplitz


def dense_mvn(d):
    loc, cov = dense(d)
    return torch.distributions.MultivariateNormal(loc, covariance_matrix=cov)


def _randn(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


def perturbed(case, seed=100):
    """Another distribution of the same class and shapes, with different parameters."""
    params = {}
    for i, (name, value) in enumerate(case.params.items()):
        noise = 0.3 * _randn(value.shape, seed + i)
        if name == "loc":
            params[name] = value + noise
        elif name == "rho":
            params[name] = torch.tanh(torch.atanh(value) + noise)
        elif name.startswith("scale_tril"):
            diag = value.diagonal(dim1=-2, dim2=-1)
            new_diag = diag * noise.diagonal(dim1=-2, dim2=-1).exp()
            params[name] = value + noise.tril(-1) + torch.diag_embed(new_diag - diag)
        else:  # positive scales
            params[name] = value * noise.exp()
    return case.cls(**params)


def diagonal_normal(d, seed=200):
    """A general ``Independent(Normal(loc, scale))`` over ``d``'s event, as a Pyro prior site."""
    shape = d.batch_shape + d.event_shape
    loc, scale = _randn(shape, seed), 0.5 + _randn(shape, seed + 1).exp()
    return dist.Normal(loc, scale).to_event(len(d.event_shape))


def bad_parameters(case):
    """``(name, invalid value)`` pairs; each must make validation raise a ValueError."""
    bad = []
    for name, value in case.params.items():
        if name == "rho":
            bad += [(name, torch.ones_like(value)), (name, torch.full_like(value, -1.5))]
        elif name.startswith("scale_tril"):
            negative = value.clone()
            negative[..., 0, 0] = -1.0
            bad.append((name, negative))
            if value.size(-1) > 1:
                upper = value.clone()
                upper[..., 0, -1] = 0.5
                bad.append((name, upper))
        elif name.startswith("scale"):
            zero = value.clone()
            zero.view(-1)[0] = 0.0
            bad += [(name, zero), (name, -value)]
        elif name == "loc":
            nan = value.clone()
            nan.view(-1)[0] = float("nan")
            bad.append((name, nan))
    return bad


# ----- shapes -----------------------------------------------------------------------------------


def test_shapes(case):
    d = case.make()
    batch, event = d.batch_shape, d.event_shape
    assert d.has_rsample
    assert case.cls.infer_shapes(**{k: v.shape for k, v in case.params.items()}) == (batch, event)
    for sample_shape in [(), (2,), (2, 3)]:
        x = d.rsample(sample_shape)
        assert x.shape == sample_shape + batch + event
        assert x.dtype == DTYPE
        assert d.log_prob(x).shape == sample_shape + batch
        assert d.support.check(x).all()
    assert d.mean.shape == d.variance.shape == batch + event
    assert d.entropy().shape == batch


def test_expand(case):
    d = case.make()
    x = d.sample((2,))
    for new_batch in [(3,) + d.batch_shape, (2, 1) + d.batch_shape]:
        e = d.expand(new_batch)
        assert type(e) is type(d)
        assert e.batch_shape == new_batch and e.event_shape == d.event_shape
        assert e.rsample((4,)).shape == (4,) + new_batch + d.event_shape
        x_e = x.reshape((2,) + (1,) * (len(new_batch) - len(d.batch_shape)) + x.shape[1:])
        assert torch.allclose(e.log_prob(x_e), d.log_prob(x_e).expand((2,) + new_batch))
        assert torch.allclose(e.entropy(), d.entropy().expand(new_batch))
    assert type(d.expand_by((5,))) is type(d)


# ----- against the dense MultivariateNormal -----------------------------------------------------


def test_log_prob_dense(case):
    d = case.make()
    x = d.sample((7,))
    x = torch.cat([x, x + 3 * torch.randn_like(x)])  # also points far from the mean
    expected = dense_mvn(d).log_prob(flatten(d, x))
    assert torch.allclose(d.log_prob(x), expected, rtol=1e-10, atol=1e-8)


def test_entropy_mean_variance_dense(case):
    d = case.make()
    ref = dense_mvn(d)
    assert torch.allclose(d.entropy(), ref.entropy(), rtol=1e-10, atol=1e-10)
    assert torch.allclose(flatten(d, d.mean), ref.mean)
    assert torch.allclose(flatten(d, d.variance), ref.variance)


def test_sample_moments(case):
    torch.manual_seed(1)
    d = case.make()
    loc, cov = dense(d)
    x = flatten(d, d.rsample((NUM_SAMPLES,)))  # [N, *batch, D]
    mean = x.mean(0)
    var = cov.diagonal(dim1=-2, dim2=-1)
    assert ((mean - loc).abs() <= Z * (var / NUM_SAMPLES).sqrt()).all()
    centred = x - loc  # the exact mean, so that Var(centred_i centred_j) = S_ii S_jj + S_ij^2
    sample_cov = torch.einsum("n...i,n...j->...ij", centred, centred) / NUM_SAMPLES
    stderr = ((var[..., :, None] * var[..., None, :] + cov**2) / NUM_SAMPLES).sqrt()
    assert ((sample_cov - cov).abs() <= Z * stderr).all()


def test_kl_to_diagonal_normal_dense(case):
    d = case.make()
    p = diagonal_normal(d)
    p_loc, p_cov = flatten(d, p.base_dist.loc), torch.diag_embed(flatten(d, p.base_dist.scale) ** 2)
    expected = kl_divergence(dense_mvn(d), torch.distributions.MultivariateNormal(p_loc, p_cov))
    assert torch.allclose(kl_divergence(d, p), expected, rtol=1e-9, atol=1e-9)


def test_kl_to_standard_normal_prior_site(case):
    """The prior exactly as a VAE writes it, ``Normal(0, 1).expand(shape).to_event(k)``."""
    d = case.make()
    p = dist.Normal(0.0, 1.0).expand(d.batch_shape + d.event_shape).to_event(len(d.event_shape))
    assert isinstance(p, dist.Independent)
    loc, _ = dense(d)
    standard = torch.distributions.MultivariateNormal(
        torch.zeros_like(loc), torch.eye(loc.size(-1), dtype=DTYPE)
    )
    expected = kl_divergence(dense_mvn(d), standard)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an ambiguous KL dispatch warns
        assert torch.allclose(kl_divergence(d, p), expected, rtol=1e-9, atol=1e-9)
    if isinstance(d, AR1Normal):  # the rho-VAE's closed form, with s = scale^2
        s, dim = d.scale**2, d.event_shape[0]
        log_1_rho2 = torch.log(1 - d.rho**2)
        rho_vae = 0.5 * (d.loc.pow(2).sum(-1) + dim * (s - 1 - s.log()) - (dim - 1) * log_1_rho2)
        assert torch.allclose(kl_divergence(d, p), rho_vae, rtol=1e-9)


def test_kl_same_family_dense(case):
    q, p = case.make(), perturbed(case)
    expected = kl_divergence(dense_mvn(q), dense_mvn(p))
    assert torch.allclose(kl_divergence(q, p), expected, rtol=1e-9, atol=1e-9)
    assert torch.allclose(kl_divergence(q, q), torch.zeros(q.batch_shape, dtype=DTYPE), atol=1e-9)


@pytest.mark.parametrize("prior", ["diagonal_normal", "same_family"])
def test_kl_monte_carlo(case, prior):
    torch.manual_seed(2)
    q = case.make()
    p = diagonal_normal(q) if prior == "diagonal_normal" else perturbed(case)
    z = q.sample((NUM_SAMPLES,))
    log_ratio = q.log_prob(z) - p.log_prob(z)  # [N, *batch]
    stderr = log_ratio.std(0) / math.sqrt(NUM_SAMPLES)
    assert ((log_ratio.mean(0) - kl_divergence(q, p)).abs() <= Z * stderr + 1e-12).all()


# ----- through Pyro -----------------------------------------------------------------------------


def test_kl_dispatch_through_pyro_wrappers(case):
    """``q.to_event(1)`` against a prior with one more event dim goes through Pyro's
    (Independent, Independent) rule down to ours; other priors fall back or fail clearly."""
    q = case.make()
    shape, rank = q.batch_shape + q.event_shape, len(q.event_shape)
    if q.batch_shape:
        p = dist.Normal(0.0, 1.0).expand(shape).to_event(rank + 1)
        p_base = dist.Normal(0.0, 1.0).expand(shape).to_event(rank)
        assert torch.allclose(kl_divergence(q.to_event(1), p), kl_divergence(q, p_base).sum(-1))
        with pytest.raises(ValueError, match="event_shape"):
            kl_divergence(q, p)
    laplace = dist.Laplace(0.0, 1.0).expand(shape).to_event(rank)
    with pytest.raises(NotImplementedError):
        kl_divergence(q, laplace)


def test_trace_mean_field_elbo_uses_closed_form_kl(case):
    """In a Pyro model/guide pair the ELBO's KL term is the registered closed form (the
    Monte-Carlo fallback would not match to 1e-10), also when a plate expands the guide's
    distribution (a batch-less one is broadcast by ``pyro.plate`` through ``expand``)."""
    q = case.make()
    rank = len(q.event_shape)
    prior = dist.Normal(0.0, 1.0).expand(q.batch_shape + q.event_shape).to_event(rank)

    def model():
        with pyro.plate("data", 3, dim=-len(q.batch_shape) - 1):
            pyro.sample("z", prior.expand((3,) + q.batch_shape))

    def guide():
        with pyro.plate("data", 3, dim=-len(q.batch_shape) - 1):
            pyro.sample("z", q)  # batch_shape -> (3, *batch_shape) by the plate

    guide_fn = pyro.poutine.trace(guide).get_trace().nodes["z"]["fn"]
    assert type(guide_fn) is type(q) and guide_fn.batch_shape == (3,) + q.batch_shape  # our expand
    loss = pyro.infer.TraceMeanField_ELBO().loss(model, guide)
    assert loss == pytest.approx(3 * kl_divergence(q, prior).sum().item(), rel=1e-10)


# ----- gradients and validation -----------------------------------------------------------------


def test_rsample_gradients(case):
    params = {k: v.clone().requires_grad_() for k, v in case.params.items()}
    d = case.cls(**params)
    x = d.rsample((3,))
    (x.pow(2).sum() + d.log_prob(x.detach()).sum() + d.entropy().sum()).backward()
    for name, value in params.items():
        assert value.grad is not None and torch.isfinite(value.grad).all(), name
        if not (name == "rho" and d.event_shape == (1,)):  # a 1-d AR(1) does not depend on rho
            assert value.grad.abs().sum() > 0, name


def test_gradcheck(case):
    """Analytic gradients of rsample (with fixed noise) and log_prob agree with finite
    differences, including at rho = 0 and near |rho| = 1."""
    names = list(case.params)
    x = case.make().sample((2,))

    def f(*values):
        torch.manual_seed(3)
        d = case.cls(**dict(zip(names, values)), validate_args=False)
        return d.rsample((2,)), d.log_prob(x)

    inputs = tuple(v.clone().requires_grad_() for v in case.params.values())
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_bad_parameters_raise(case):
    for name, value in bad_parameters(case):
        with pytest.raises(ValueError, match=name):
            case.make(validate_args=True, **{name: value})


def test_rho_constraint_has_a_bijection():
    """``pyro.param(..., constraint=AR1Normal.arg_constraints["rho"])`` needs ``biject_to``."""
    constraint = AR1Normal.arg_constraints["rho"]
    u = torch.tensor([-30.0, -1.0, 0.0, 2.0, 30.0], dtype=DTYPE)
    rho = torch.distributions.biject_to(constraint)(u)
    assert constraint.check(rho[1:-1]).all() and (rho.abs() <= 1).all()
    assert torch.allclose(torch.distributions.biject_to(constraint).inv(rho[1:-1]), u[1:-1])


def test_wrong_shapes_raise(case):
    loc = case.params["loc"]
    bad_loc = torch.zeros(()) if case.cls is AR1Normal else loc[..., 0, :].reshape(-1)
    with pytest.raises(ValueError, match="loc"):
        case.make(loc=bad_loc)
    if case.cls is not AR1Normal:
        with pytest.raises(ValueError, match="scale"):
            case.make(loc=torch.cat([loc, loc], -1))


# ----- against NumPyro --------------------------------------------------------------------------


def test_numpyro_matrix_normal_log_prob(case):
    if not issubclass(case.cls, MatrixNormal):
        pytest.skip("numpyro has MatrixNormal only")
    jax = pytest.importorskip("jax")
    numpyro_dist = pytest.importorskip("numpyro.distributions")
    import numpy as np

    if hasattr(jax, "enable_x64"):  # scoped to this test (jax >= 0.7)
        x64 = jax.enable_x64(True)
    else:
        jax.config.update("jax_enable_x64", True)
        x64 = contextlib.nullcontext()
    d = case.make()
    x = d.sample((3,))
    # one compiled function per shape: faster than numpyro's op-by-op dispatch
    log_prob = jax.jit(lambda *args: numpyro_dist.MatrixNormal(*args[:3]).log_prob(args[3]))
    with x64:
        args = (d.loc, d.scale_tril_row, d.scale_tril_column, x)
        reference = log_prob(*(t.numpy() for t in args))
        assert reference.dtype == np.float64
    assert np.allclose(np.asarray(reference), d.log_prob(x).numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("diag, k", [(0, 6), (-1, 3), (0, 1), (-2, 1)])
def test_vec_to_tril_is_torchs_in_values_and_gradients(diag, k):
    from torch.distributions.utils import vec_to_tril_matrix

    from vaezoo.distributions.tril import vec_to_tril

    vec = torch.randn(2, 5, k, dtype=torch.float64, requires_grad=True)
    ours, theirs = vec_to_tril(vec, diag), vec_to_tril_matrix(vec, diag)
    assert torch.equal(ours, theirs)
    weights = torch.randn_like(ours)
    torch.testing.assert_close(torch.autograd.grad((ours * weights).sum(), vec)[0],
                               torch.autograd.grad((theirs * weights).sum(), vec)[0])
    with pytest.raises(ShapeError, match="not the lower triangle"):
        vec_to_tril(vec[..., :-1] if k > 1 else torch.zeros(2, 2), diag)
