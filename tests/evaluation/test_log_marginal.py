"""The importance-sampling estimator against closed forms: PPCA, and a linear-Gaussian model with two
latent sites of different event shapes; reproducibility, chunking, scaling and bad inputs."""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from ppca import PPCA
from pyro import poutine

from vaezoo.errors import ConfigError, ShapeError, SiteError, SupportError, VaezooError
from vaezoo.evaluation import LogMarginalResult, log_marginal


@pytest.fixture(scope="module")
def ppca():
    return PPCA()


@pytest.fixture(scope="module")
def data(ppca):
    return ppca.sample_images(24)


@pytest.fixture(scope="module")
def big(ppca, data):
    return log_marginal(ppca.model, ppca.guide, data, num_samples=20000, iwae_k=(1, 5, 50, 20000), seed=0)


class TwoSites:
    """x = W z + V vec(u) + b + noise with z ~ N(0, I_2), u ~ N(0, I_{2x3}) (event shape [2, 3]),
    x held as [N, 1, 3, 4]; the guide is a pair of diagonal normals off the exact posterior."""

    def __init__(self, seed=0, sigma=1.0, dtype=torch.float64):
        g = torch.Generator().manual_seed(seed)
        self.D, self.sigma = 12, sigma
        self.W = torch.randn(12, 2, generator=g, dtype=dtype)
        self.V = torch.randn(12, 6, generator=g, dtype=dtype) * 0.5
        self.b = torch.randn(12, generator=g, dtype=dtype) * 0.3
        L = torch.cat([self.W, self.V], 1)  # [D, 8]: x = L w + b + noise, w = [z, vec(u)]
        self.post_cov = torch.linalg.inv(torch.eye(8, dtype=dtype) + L.T @ L / sigma**2)
        self.post_gain = self.post_cov @ L.T / sigma**2
        self.A = self.post_gain * 0.95
        self.s = torch.linalg.inv(self.post_cov).diagonal().rsqrt() * 1.2  # conditional stds, widened
        self.L = L

    def model(self, x):
        W, V, b = self.W.to(x), self.V.to(x), self.b.to(x)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            u = pyro.sample("u", dist.Normal(x.new_zeros(2, 3), 1.0).to_event(2))
            loc = z @ W.T + u.reshape(u.shape[:-2] + (6,)) @ V.T + b
            pyro.sample("x", dist.Normal(loc.reshape(loc.shape[:-1] + (1, 3, 4)), self.sigma).to_event(3), obs=x)

    def guide(self, x, only_z=False, extra=False):
        A, b, s = self.A.to(x), self.b.to(x), self.s.to(x)
        with pyro.plate("data", x.shape[0], dim=-1):
            loc = (x.reshape(x.shape[0], -1) - b) @ A.T  # [N, 8]
            pyro.sample("z", dist.Normal(loc[:, :2], s[:2]).to_event(1))
            if not only_z:
                pyro.sample("u", dist.Normal(loc[:, 2:].reshape(-1, 2, 3), s[2:].reshape(2, 3)).to_event(2))
            if extra:
                pyro.sample("pose", dist.Normal(x.new_zeros(3), 1.0).to_event(1))

    def log_px(self, x):
        cov = self.L @ self.L.T + self.sigma**2 * torch.eye(self.D, dtype=self.L.dtype)
        return dist.MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x.reshape(x.shape[0], -1))

    def kl(self, x):
        xf = x.reshape(x.shape[0], -1) - self.b
        q = dist.MultivariateNormal(xf @ self.A.T, scale_tril=torch.diag(self.s))
        p = dist.MultivariateNormal(xf @ self.post_gain.T, covariance_matrix=self.post_cov)
        return torch.distributions.kl_divergence(q, p)

    def sample_images(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(n, 8, generator=g, dtype=self.L.dtype)
        x = w @ self.L.T + self.b + self.sigma * torch.randn(n, self.D, generator=g, dtype=self.L.dtype)
        return x.reshape(n, 1, 3, 4)


def test_converges_to_exact_log_px(ppca, data, big):
    exact = ppca.log_px(data)
    small = log_marginal(ppca.model, ppca.guide, data, num_samples=3, seed=0)
    err_small = (small.log_px - exact).abs().mean()
    err_big = (big.log_px - exact).abs().mean()
    assert err_big < err_small / 5
    assert ((big.log_px - exact).abs() < 5 * big.stderr + 1e-3).all()
    # log p̂ is biased low at small K (Jensen), by about KL at K = 1
    assert (small.log_px - exact).mean() < 0


def test_elbo_and_gap_match_closed_forms(ppca, data, big):
    kl = ppca.kl_guide_posterior(data)
    exact_elbo = ppca.log_px(data) - kl
    diff = big.elbo - exact_elbo
    assert diff.mean().abs() < 4 * diff.std() / math.sqrt(len(diff)) + 1e-3
    assert diff.abs().max() < 0.05
    assert torch.allclose(big.gap, kl, atol=0.05)
    assert kl.mean() > 0.1  # the guide is imperfect: the gap is not trivially zero
    est = big.mean_gap
    assert abs(est.mean - kl.mean().item()) < 0.05 and est.stderr > 0


def test_iwae_k_against_an_independent_computation(ppca, data, big):
    """The IWAE-k bounds against log-weights drawn and scored here with torch's closed-form
    densities (no Pyro), and ordered between the exact ELBO and the exact log p(x)."""
    n, K = len(data), 20000
    q = ppca.guide_dist(data)
    torch.manual_seed(0)
    z = q.sample(torch.Size([K]))  # [K, N, 2]
    flat = data.reshape(n, -1)
    log_w = (
        dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        + dist.Normal(z @ ppca.W.T + ppca.b, ppca.sigma).log_prob(flat).sum(-1)
        - q.log_prob(z)
    )  # [K, N]
    exact_elbo = ppca.log_px(data) - ppca.kl_guide_posterior(data)
    torch.testing.assert_close(big.iwae[1], big.elbo)  # k = 1 is the ELBO
    means = []
    for k in (5, 50):
        groups = torch.logsumexp(log_w.reshape(K // k, k, n), 1) - math.log(k)  # [G, N]
        ref, ref_se = groups.mean(0), groups.std(0) / math.sqrt(K // k)
        # both estimates carry about the same Monte Carlo error
        assert ((big.iwae[k] - ref).abs() < 5 * math.sqrt(2) * ref_se + 1e-3).all(), k
        means.append(big.iwae[k].mean().item())
    assert exact_elbo.mean() < means[0] < means[1] < ppca.log_px(data).mean()


def test_diagnostics_in_range(big, data):
    assert big.log_px.shape == big.elbo.shape == big.ess.shape == big.khat.shape == (len(data),)
    assert big.log_px.dtype == torch.float64
    assert ((big.ess >= 1) & (big.ess <= big.num_samples)).all()
    assert torch.isfinite(big.khat).all() and (big.khat < 0.7).all()  # the guide is wider: light tails
    assert big.frac_khat_above(0.7) == 0.0
    assert (big.stderr > 0).all() and (big.stderr < 0.05).all()
    summary = big.to_dict()
    json.dumps(summary, allow_nan=False)
    assert summary["num_samples"] == 20000 and summary["num_datapoints"] == len(data)


def test_stderr_matches_spread_across_seeds(ppca, data):
    x = data[:4]
    runs = torch.stack([log_marginal(ppca.model, ppca.guide, x, num_samples=200, seed=s).log_px for s in range(30)])
    predicted = log_marginal(ppca.model, ppca.guide, x, num_samples=200, seed=99).stderr
    ratio = runs.std(0) / predicted
    assert ((ratio > 0.5) & (ratio < 2.0)).all()


def test_same_seed_same_numbers_whatever_the_chunks(ppca, data):
    run = lambda **kw: log_marginal(ppca.model, ppca.guide, data[:17], num_samples=1100, seed=7, iwae_k=(10,), **kw)
    ref = run()
    for pc, dc in [(1100, 17), (100, 3), (70, 13), (1100, 1), (513, 8)]:
        other = run(particle_chunk=pc, data_chunk=dc)
        for name in ("log_px", "elbo", "ess", "stderr", "khat"):
            assert torch.allclose(getattr(other, name), getattr(ref, name), rtol=1e-10, atol=1e-10), (pc, dc, name)
        assert torch.allclose(other.iwae[10], ref.iwae[10], rtol=1e-10, atol=1e-10)
    # a datapoint's particles depend on its index, not on how many datapoints follow it
    head = log_marginal(ppca.model, ppca.guide, data[:5], num_samples=1100, seed=7)
    assert torch.allclose(head.log_px, ref.log_px[:5], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("processes, data_chunk", [(2, 8), (3, 3), (4, 16)])
def test_shards_joined_equal_one_run_bit_for_bit(ppca, data, processes, data_chunk):
    """The shards of S processes (run here one after the other), joined in any order, are the whole
    run to the last bit: every datapoint once, with the particles and the passes of the whole run,
    including an empty shard when there are more processes than chunks (17 points in 16s: 2 chunks)."""
    run = lambda **kw: log_marginal(ppca.model, ppca.guide, data[:17], num_samples=300, seed=3, iwae_k=(10,),  # noqa: E731
                                    data_chunk=data_chunk, **kw)
    ref = run()
    shards = [run(shard=(r, processes)) for r in range(processes)]
    assert sum(s.num_datapoints for s in shards) == 17
    joined = LogMarginalResult.concatenate(reversed(shards))
    for name in ("log_px", "elbo", "ess", "stderr", "khat"):
        assert torch.equal(getattr(joined, name).nan_to_num(-1.0), getattr(ref, name).nan_to_num(-1.0)), name
    assert torch.equal(joined.iwae[10], ref.iwae[10])
    assert joined.to_dict()["log_px"] == ref.to_dict()["log_px"] and "first_index" not in joined.to_dict()


def test_seeds_and_global_rng(ppca, data):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = log_marginal(ppca.model, ppca.guide, data, num_samples=50, seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # a seeded run leaves the caller's stream alone
    b = log_marginal(ppca.model, ppca.guide, data, num_samples=50, seed=2)
    assert not torch.allclose(a.log_px, b.log_px)
    assert a.seed == 1
    torch.manual_seed(5)
    c = log_marginal(ppca.model, ppca.guide, data, num_samples=50)
    torch.manual_seed(5)
    d = log_marginal(ppca.model, ppca.guide, data, num_samples=50)
    assert torch.equal(c.log_px, d.log_px) and c.seed == d.seed


def test_float32_agrees_with_float64(ppca, data):
    x32 = data.float()
    r32 = log_marginal(ppca.model, ppca.guide, x32, num_samples=4000, seed=3)
    r64 = log_marginal(ppca.model, ppca.guide, x32, num_samples=4000, seed=3, dtype=torch.float64)
    assert r32.log_px.dtype == torch.float64  # weights are accumulated in float64 regardless
    tol = 5 * torch.sqrt(r32.stderr**2 + r64.stderr**2) + 1e-4
    assert ((r32.log_px - r64.log_px).abs() < tol).all()
    assert ((r32.log_px - ppca.log_px(x32.double())).abs() < 5 * r32.stderr + 1e-3).all()


def test_two_latent_sites_of_different_event_shapes():
    m = TwoSites()
    x = m.sample_images(8)
    r = log_marginal(m.model, m.guide, x, num_samples=10000, seed=0)
    exact = m.log_px(x)
    assert ((r.log_px - exact).abs() < 5 * r.stderr + 1e-3).all()
    kl = m.kl(x)
    assert kl.mean() > 0.1
    assert torch.allclose(r.gap, kl, atol=0.1)


def test_training_scale_does_not_leak(ppca, data):
    ref = log_marginal(ppca.model, ppca.guide, data, num_samples=300, seed=4)
    scaled = log_marginal(
        poutine.scale(ppca.model, scale=0.1), poutine.scale(ppca.guide, scale=0.1), data, num_samples=300, seed=4
    )
    assert torch.allclose(scaled.log_px, ref.log_px) and torch.allclose(scaled.elbo, ref.elbo)


def test_guide_missing_a_site():
    m = TwoSites()
    with pytest.raises(SiteError, match="'u'"):
        log_marginal(m.model, lambda x: m.guide(x, only_z=True), m.sample_images(3), num_samples=10)


def test_guide_with_a_site_the_model_lacks():
    m = TwoSites()
    with pytest.raises(SiteError, match="'pose'"):
        log_marginal(m.model, lambda x: m.guide(x, extra=True), m.sample_images(3), num_samples=10)


def test_data_of_the_wrong_shape(ppca, data):
    flat = data.reshape(len(data), -1)
    with pytest.raises(ShapeError, match=r"site 'x' has a value of shape \(2, 6\).*event shape \(1, 2, 3\)") as info:
        log_marginal(ppca.model, ppca.guide, flat, num_samples=10)
    assert "\n" not in str(info.value)


def test_errors_inside_the_pair_propagate_unchanged():
    """An error raised by the user's own code is a bug to debug, not an input mistake: it keeps its
    type and traceback, whatever its message says (no classification by words)."""
    net = torch.nn.Conv2d(1, 2, 3).double()

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            h = net(x).mean((-1, -2))  # wants [N, 1, H, W]
            pyro.sample("x", dist.Normal(h + z, 1.0).to_event(1), obs=x.new_zeros(x.shape[0], 2))

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))

    with pytest.raises(RuntimeError, match="conv2d") as info:
        log_marginal(model, guide, torch.zeros(4, 784, dtype=torch.float64), num_samples=10)
    assert not isinstance(info.value, VaezooError)

    def picky_model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            raise ValueError("the value is outside the support of my own check, and the dtype is Double")

    with pytest.raises(ValueError, match="my own check") as info:
        log_marginal(picky_model, guide, torch.zeros(4, 2, dtype=torch.float64), num_samples=10)
    assert not isinstance(info.value, VaezooError)
    assert info.traceback[-1].name == "picky_model"


class _LinearPair(torch.nn.Module):
    """A pair as an nn.Module whose parameters are in float32."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(6, 2)

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.net(x) + z, 1.0).to_event(1), obs=x.new_zeros(x.shape[0], 2))

    def guide(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))


def test_dtype_the_pair_cannot_run_in():
    pair = _LinearPair()  # float32 parameters, found on the module the bound methods belong to
    with pytest.raises(ConfigError, match=r"parameter 'net.weight' has dtype torch.float32 but x has dtype torch.float64"):
        log_marginal(pair.model, pair.guide, torch.zeros(3, 6), num_samples=4, dtype=torch.float64)
    # parameters registered with Pyro (param sites) are checked before they are used
    pyro.clear_param_store()

    def model(x):
        w = pyro.param("w", torch.ones(6, 2))  # float32
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(x @ w + z, 1.0).to_event(1), obs=x.new_zeros(x.shape[0], 2))

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))

    with pytest.raises(ConfigError, match=r"param site 'w' has dtype torch.float32"):
        log_marginal(model, guide, torch.zeros(3, 6, dtype=torch.float64), num_samples=4)
    pyro.clear_param_store()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_samples": 0}, "num_samples=0"),
        ({"num_samples": 2.5}, "num_samples=2.5"),
        ({"num_samples": 10, "iwae_k": (20,)}, "iwae_k=20"),
        ({"num_samples": 10, "iwae_k": (0,)}, "iwae_k=0"),
        ({"num_samples": 10, "particle_chunk": 0}, "particle_chunk=0"),
        ({"num_samples": 10, "data_chunk": -1}, "data_chunk=-1"),
        ({"num_samples": 10, "dtype": torch.int64}, "dtype"),
        ({"num_samples": 10, "shard": (2, 2)}, r"shard=\(2, 2\)"),
        ({"num_samples": 10, "shard": (0,)}, "shard="),
    ],
)
def test_bad_arguments(ppca, data, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        log_marginal(ppca.model, ppca.guide, data, **kwargs)


def test_empty_or_non_tensor_data(ppca, data):
    with pytest.raises(ShapeError):
        log_marginal(ppca.model, ppca.guide, data[:0], num_samples=10)
    with pytest.raises(ShapeError):
        log_marginal(ppca.model, ppca.guide, data.tolist(), num_samples=10)


def test_small_k_and_result_from_weights(ppca, data):
    r = log_marginal(ppca.model, ppca.guide, data, num_samples=1, seed=0)
    assert torch.equal(r.log_px, r.elbo) and torch.isnan(r.stderr).all() and torch.isnan(r.khat).all()
    assert (r.ess == 1).all()
    log_w = torch.tensor([[0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)  # [K=2, N=2]
    w = LogMarginalResult.from_log_weights(log_w, iwae_k=(1,))
    assert torch.allclose(w.log_px, torch.tensor([0.0, math.log(math.cosh(1.0))], dtype=torch.float64))
    assert torch.allclose(w.elbo, torch.zeros(2, dtype=torch.float64))
    ess = (math.e + 1 / math.e) ** 2 / (math.e**2 + math.e**-2)
    assert torch.allclose(w.ess, torch.tensor([2.0, ess], dtype=torch.float64))
    # stderr = sd(w) / (sqrt(K) mean(w)) with the unbiased sd
    ww = torch.tensor([math.e, 1 / math.e], dtype=torch.float64)
    assert torch.allclose(w.stderr[1], ww.std() / (math.sqrt(2) * ww.mean()))
    assert w.stderr[0] == 0


def test_progress_bar(ppca, data, capsys):
    r = log_marginal(ppca.model, ppca.guide, data[:3], num_samples=10, seed=0, progress=True)
    assert r.log_px.shape == (3,)
    assert "datapoint" in capsys.readouterr().err


def test_numpyro_estimator_without_jax(monkeypatch, ppca, data):
    import vaezoo.evaluation as evaluation

    monkeypatch.setitem(__import__("sys").modules, "jax", None)
    with pytest.raises(ImportError, match=r"pip install vaezoo\[jax\]"):
        evaluation.numpyro_log_marginal(ppca.model, ppca.guide, data, num_samples=3)


@pytest.mark.parametrize("mask", [False, "tensor"])
def test_masked_sites_are_left_out(ppca, data, mask):
    """A masked-out site contributes 0, even where its log-density is -inf."""
    keep = torch.arange(len(data)) % 2 == 0 if mask == "tensor" else False

    def model(x):  # ppca.model with one more site, in the same data plate (Pyro refuses a plate opened twice)
        W, b = ppca.W.to(x), ppca.b.to(x)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(ppca.k), 1.0).to_event(1))
            loc = (z @ W.T + b).reshape(z.shape[:-1] + ppca.shape)
            pyro.sample("x", dist.Normal(loc, ppca.sigma).to_event(3), obs=x)
            # the mask of the batch at hand (the estimator runs the pair on a probe batch first)
            m = torch.arange(x.shape[0]) % 2 == 0 if mask == "tensor" else False
            with poutine.mask(mask=m):
                pyro.sample("aux", dist.Normal(x.new_zeros(()), 1.0), obs=x.new_full((x.shape[0],), math.inf))

    ref = log_marginal(ppca.model, ppca.guide, data, num_samples=50, seed=0)
    r = log_marginal(model, ppca.guide, data, num_samples=50, seed=0)
    if mask is False:
        assert torch.equal(r.log_px, ref.log_px)
    else:
        assert (r.log_px[keep] == -math.inf).all() and torch.equal(r.log_px[~keep], ref.log_px[~keep])


def test_data_outside_the_support_beyond_the_first_datapoint():
    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=z.expand(z.shape[:-1] + (3,))).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(x.new_zeros(1), 1.0).to_event(1))

    x = torch.ones(20, 3, dtype=torch.float64)
    x[13, 1] = 0.5
    with pytest.raises(SupportError, match=r"site 'x' has the value 0.5 at datapoint 13 \(index \(5, 1\)\)") as info:
        log_marginal(model, guide, x, num_samples=10, data_chunk=8)
    assert "\n" not in str(info.value)
    x[13, 1] = 1.0
    x[1, 0] = 2.0  # found by the probe, before any weight
    with pytest.raises(SupportError, match=r"value 2.0 at datapoint 1 "):
        log_marginal(model, guide, x, num_samples=10)
    # the check does not depend on Pyro's validation being on
    with pyro.validation_enabled(False), pytest.raises(SupportError):
        log_marginal(model, guide, x, num_samples=10)
