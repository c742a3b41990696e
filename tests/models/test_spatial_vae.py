"""The spatial VAEs: latent maps [c, d, d], each guide's analytic KL against Monte Carlo and dense
references, the low-rank mean, the Kronecker covariance of the full variant, log p(x) of a linear
Gaussian spatial model against its exact value, Pyro's own SVI and Importance, colour images."""

import math

import pyro
import pytest
import torch
from pyro.infer import SVI, Importance, Predictive, Trace_ELBO
from torch import nn
from torch.distributions import MultivariateNormal, kl_divergence

from vaezoo import data, evaluation, traces, zoo
from vaezoo.errors import ConfigError
from vaezoo.guides import MatrixNormalGuide, SpatialNormalGuide
from vaezoo.models import SpatialVAEModel, make_likelihood
from vaezoo.nets import DeconvDecoder, MLPEncoder

ENTRIES = ["spatial-vae-naive", "spatial-vae-mvn", "spatial-vae-lowrank", "spatial-vae-mvn-full"]
# small maps on 8x8 images: 3 maps of 4x4, one up-sampling stage
SMALL = dict(maps=3, map_size=4, decoder_width=16, encoder_hidden=32)


def units(name, c, d):
    """The encoder's output units of the paper's table (and d(d+1) for the full covariance)."""
    return {
        "spatial-vae-naive": 2 * c * d * d,
        "spatial-vae-mvn": c * (d * d + 2 * d),
        "spatial-vae-lowrank": 4 * c * d,
        "spatial-vae-mvn-full": c * (d * d + d * (d + 1)),
    }[name]


def images(n=5, shape=(1, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.rand((n,) + shape, generator=g, dtype=torch.float64))


def posterior(m, x):
    """q(z | x) of the created entry ``m`` and the model's prior p(z), as the sites hold them."""
    guide_run = traces.record(m.guide, x)
    model_run = traces.record(m.model, x, replay=guide_run.replay_values())
    return guide_run.sites["z"]["fn"], model_run.sites["z"]["fn"]


def kron(V, U):
    """Batched ``V (x) U`` for ``V [..., n, n]``, ``U [..., m, m]``: the covariance of vec(z) (columns
    stacked) of a matrix normal with row covariance U and column covariance V."""
    n, m = V.shape[-1], U.shape[-1]
    return (V[..., :, None, :, None] * U[..., None, :, None, :]).reshape(V.shape[:-2] + (n * m, n * m))


def shake(module, scale=0.3, seed=0):
    """Random weights, so that posteriors are far from the initial ones (and from each other)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize("name", ENTRIES)
def test_default_maps_and_encoder_units_for_mnist(name):
    m = zoo.create(name, data_shape=(1, 28, 28)).double()
    x = images(2, (1, 28, 28))
    q, p = posterior(m, x)
    assert q.event_shape == p.event_shape == (16, 7, 7)
    assert q.batch_shape == p.batch_shape == (2,)
    assert m.guide.encoder(x).shape == (2, units(name, 16, 7))
    assert m.sample(3).shape == (3, 1, 28, 28)


@pytest.mark.parametrize("name", ENTRIES)
def test_analytic_kl_equals_monte_carlo_kl(name):
    """KL(q || p) in closed form against the mean of log q(z) - log p(z) over 40000 draws z ~ q,
    within 4 standard errors of that mean (exact standard error: the sample standard deviation of
    the iid terms over sqrt(draws))."""
    torch.manual_seed(0)
    m = zoo.create(name, data_shape=(1, 8, 8), **SMALL).double()
    shake(m.guide, 0.2)
    q, p = posterior(m, images(3))
    kl = kl_divergence(q, p)  # [3]
    assert kl.shape == (3,) and (kl > 0).all()
    z = q.sample((40000,))  # [S, 3, c, d, d]
    terms = q.log_prob(z) - p.log_prob(z)  # [S, 3]
    mc, stderr = terms.mean(0), terms.std(0) / math.sqrt(terms.shape[0])
    assert ((kl - mc).abs() < 4 * stderr).all(), (kl, mc, stderr)


@pytest.mark.parametrize("name", ["spatial-vae-mvn", "spatial-vae-lowrank", "spatial-vae-mvn-full"])
def test_analytic_kl_equals_dense_gaussian_kl(name):
    """Each map k is vec(z_k) ~ N(vec(M_k), V_k (x) U_k): torch's dense MultivariateNormal KL to
    N(0, I), summed over the maps, is the reference."""
    m = zoo.create(name, data_shape=(1, 8, 8), **SMALL).double()
    shake(m.guide, 0.1, seed=1)
    q, p = posterior(m, images(3))
    mn = q.base_dist  # batch [3, c], event [d, d]
    # kron(L_c, L_r) is lower triangular with a positive diagonal: the Cholesky factor of V (x) U
    vec_loc = mn.loc.mT.reshape(mn.loc.shape[:-2] + (-1,))  # columns stacked
    dense = MultivariateNormal(vec_loc, scale_tril=kron(mn.scale_tril_column, mn.scale_tril_row))
    eye = torch.eye(vec_loc.shape[-1], dtype=torch.float64)
    ref = kl_divergence(dense, MultivariateNormal(torch.zeros_like(vec_loc), eye)).sum(-1)
    torch.testing.assert_close(kl_divergence(q, p), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ENTRIES)
def test_elbo_uses_the_analytic_kl(name):
    """The objective's KL term is the closed form (a one-sample estimate would differ)."""
    m = zoo.create(name, data_shape=(1, 8, 8), **SMALL).double()
    shake(m.guide, 0.2, seed=2)
    x = images(4)
    _, terms = m.objective()(x)
    q, p = posterior(m, x)
    torch.testing.assert_close(terms["kl"], kl_divergence(q, p).mean(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ENTRIES)
def test_training_step_in_float64_moves_encoder_and_decoder(name):
    pyro.set_rng_seed(0)
    m = zoo.create(name, data_shape=(1, 8, 8), **SMALL).double()
    objective = m.objective()
    opt = torch.optim.Adam(objective.parameters(), lr=1e-3)
    loss, terms = objective(images(6))
    assert loss.dtype == torch.float64 and torch.isfinite(loss)
    nets = {"encoder": m.guide.encoder, "decoder": m.model.decoder}
    before = {k: [p.detach().clone() for p in net.parameters()] for k, net in nets.items()}
    opt.zero_grad()
    loss.backward()
    opt.step()
    for k, net in nets.items():
        assert all(not torch.equal(b, p) for b, p in zip(before[k], net.parameters())), k


def test_lowrank_posterior_means_have_rank_one():
    """Every mean map u_k v_k^T of the low-rank guide has one non-zero singular value; the full
    mean of the mvn guide, from the same kind of encoder, has d."""
    x = images(4)
    for name, rank_one in [("spatial-vae-lowrank", True), ("spatial-vae-mvn", False)]:
        m = zoo.create(name, data_shape=(1, 8, 8), **SMALL).double()
        shake(m.guide, 0.2, seed=3)
        q, _ = posterior(m, x)
        s = torch.linalg.svdvals(q.mean)  # [4, c, d]
        assert (s[..., 0] > 1e-3).all()
        ratio = s[..., 1:] / s[..., :1]
        assert bool((ratio < 1e-12).all()) == rank_one, ratio.max()


def test_full_covariance_is_the_kronecker_product_of_row_and_column_covariances():
    """The mvn-full guide's log q(z) is the density of vec(z_k) ~ N(vec(M_k), V_k (x) U_k) built
    densely, and the covariance of its draws is V_k (x) U_k, with correlations between locations
    (non-zero off-diagonal entries, which the diagonal variants cannot have)."""
    torch.manual_seed(0)
    m = zoo.create("spatial-vae-mvn-full", data_shape=(1, 8, 8), maps=2, map_size=2, decoder_width=16, encoder_hidden=16).double()
    shake(m.guide, 0.15, seed=4)
    q, _ = posterior(m, images(2))
    mn = q.base_dist  # batch [2, c], event [2, 2]
    U = mn.scale_tril_row @ mn.scale_tril_row.mT
    V = mn.scale_tril_column @ mn.scale_tril_column.mT
    cov = kron(V, U)  # [2, c, 4, 4]
    assert (cov - torch.diag_embed(cov.diagonal(dim1=-2, dim2=-1))).abs().amax() > 1e-2
    vec = lambda z: z.mT.reshape(z.shape[:-2] + (-1,))  # noqa: E731  columns stacked
    dense = MultivariateNormal(vec(mn.loc), covariance_matrix=cov)
    z = q.sample((500,))  # [S, 2, c, 2, 2]
    torch.testing.assert_close(q.log_prob(z), dense.log_prob(vec(z)).sum(-1), rtol=1e-10, atol=1e-10)
    # the sampler: the sample covariance of 200000 draws within 5 standard errors of V (x) U
    n = 200000
    d = vec(q.sample((n,))) - vec(mn.loc)  # [n, 2, c, 4]
    sample_cov = torch.einsum("s...i,s...j->...ij", d, d) / n
    var = cov.diagonal(dim1=-2, dim2=-1)
    stderr = ((var.unsqueeze(-1) * var.unsqueeze(-2) + cov.pow(2)) / n).sqrt()
    assert ((sample_cov - cov).abs() < 5 * stderr).all()


class _LinearDecoder(nn.Module):
    """[..., c, d, d] -> [..., 1, H, W] by one linear map: the model is linear Gaussian."""

    def __init__(self, map_shape, out_shape):
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.linear = nn.Linear(math.prod(map_shape), math.prod(out_shape))

    def forward(self, z):
        return self.linear(z.flatten(-3)).reshape(z.shape[:-3] + self.out_shape)


def _linear_gaussian(guide):
    """A linear-Gaussian spatial model, ``guide``'s pair for it (a proposal wider than the posterior),
    4 data points and their exact log p(x)."""
    torch.manual_seed(0)
    maps, data_shape = (1, 2, 2), (1, 4, 4)
    decoder = _LinearDecoder(maps, data_shape)
    shake(decoder, 0.3, seed=5)
    model = SpatialVAEModel(decoder, make_likelihood("normal", 3, scale=0.5), maps).double()
    if guide == "naive":
        q = SpatialNormalGuide(MLPEncoder(data_shape, (8,), SpatialNormalGuide.units(maps)), maps)
    else:
        mean, cov = {"mvn": ("full", "diagonal"), "lowrank": ("outer", "diagonal"), "mvn-full": ("full", "cholesky")}[guide]
        q = MatrixNormalGuide(MLPEncoder(data_shape, (8,), MatrixNormalGuide.units(maps, mean, cov)), maps, mean, cov)
    q = q.double()
    # a proposal wider than the posterior (finite-variance weights): scales softplus(1) and more
    shake(q, 0.05, seed=6)
    with torch.no_grad():
        q.encoder.net[-1].bias.fill_(1.0)
    x = torch.randn((4,) + data_shape, dtype=torch.float64)
    W, b = decoder.linear.weight, decoder.linear.bias
    exact = MultivariateNormal(b, W @ W.mT + 0.25 * torch.eye(16, dtype=torch.float64)).log_prob(x.flatten(1)).detach()
    return model, q, x, exact


@pytest.mark.parametrize("guide", ["naive", "mvn", "lowrank", "mvn-full"])
def test_log_marginal_of_a_linear_gaussian_spatial_model(guide):
    """With a linear decoder and a normal likelihood, x ~ N(b, W W^T + s^2 I) exactly. Importance
    sampling from each spatial guide (unbiased whatever the proposal, so a wrong log q would show)
    recovers it."""
    model, q, x, exact = _linear_gaussian(guide)
    res = evaluation.log_marginal(model, q, x, num_samples=20000, seed=0)
    assert ((res.log_px - exact).abs() < 4 * res.stderr + 1e-3).all(), (res.log_px, exact, res.stderr)


# AIS moves the maps by HMC whatever the guide, which only gives the start: the default run keeps the
# guide with correlated locations, the other three run with the slow tests (CI runs both)
@pytest.mark.parametrize("guide", [pytest.param("naive", marks=pytest.mark.slow), pytest.param("mvn", marks=pytest.mark.slow),
                                   pytest.param("lowrank", marks=pytest.mark.slow), "mvn-full"])
def test_ais_of_a_linear_gaussian_spatial_model(guide):
    """AIS from the guide, with HMC moving the maps, recovers the exact log p(x): 50 steps of 8
    chains, so a loose check."""
    model, q, x, exact = _linear_gaussian(guide)
    ais = evaluation.ais(model, q, x, steps=50, chains=8, seed=0)
    assert ais.log_px.shape == (4,) and ((ais.log_px - exact).abs() < 3.0).all(), (ais.log_px, exact)


@pytest.mark.parametrize("name", ENTRIES)
def test_pyro_importance_and_predictive_on_a_spatial_entry(name):
    """Pyro's Importance weights are vaezoo's per-datapoint log-weights summed over the data;
    Predictive draws maps [num_samples, N, c, d, d]."""
    pyro.set_rng_seed(0)
    m = zoo.create(name, data_shape=(1, 8, 8), **SMALL).double()
    x = images(4)
    imp = Importance(m.model, m.guide, num_samples=3).run(x)
    for trace, log_w in zip(imp.exec_traces, imp.log_weights):
        z = trace.nodes["z"]["value"]
        model_run = traces.record(m.model, x, replay={"z": z})
        guide_run = traces.record(m.guide, x, replay={"z": z})
        log_p = sum(traces.site_log_prob(s) for s in model_run.sites.values())
        log_q = traces.site_log_prob(guide_run.sites["z"])
        torch.testing.assert_close(torch.as_tensor(log_w, dtype=torch.float64), (log_p - log_q).sum(), rtol=1e-10, atol=1e-8)
    out = Predictive(m.model, guide=m.guide, num_samples=7, parallel=True)(x)
    assert out["z"].shape == (7, 4, 3, 4, 4)


def test_pyro_svi_trains_a_spatial_entry_on_digits():
    pyro.set_rng_seed(0)
    x = data.load("digits", split="train", binarize="fixed").data[:64].double()
    m = zoo.create("spatial-vae-lowrank", data_shape=x.shape[1:], **SMALL).double()
    svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(x) for _ in range(40)]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.1 * abs(first), (first, last)


@pytest.mark.parametrize("name", ENTRIES)
def test_colour_images_with_a_normal_likelihood(name):
    pyro.set_rng_seed(0)
    g = torch.Generator().manual_seed(0)
    # smooth colour blobs in [0, 1]: 6 images [3, 8, 8]
    grid = torch.linspace(-1, 1, 8, dtype=torch.float64)
    centres = torch.rand(6, 3, 2, generator=g, dtype=torch.float64) * 2 - 1
    x = torch.exp(-4 * ((grid.view(1, 1, 8, 1) - centres[..., :1, None]) ** 2 + (grid.view(1, 1, 1, 8) - centres[..., 1:, None]) ** 2))
    m = zoo.create(name, data_shape=(3, 8, 8), likelihood="normal", learn_scale=True, **SMALL).double()
    m.check_data(x)
    objective = m.objective()
    opt = torch.optim.Adam(objective.parameters(), lr=1e-3)
    loss, _ = objective(x)
    assert torch.isfinite(loss)
    scale = m.model.likelihood.log_scale.detach().clone()
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert not torch.equal(scale, m.model.likelihood.log_scale)
    assert m.sample(2).shape == (2, 3, 8, 8) and m.reconstruct(x).shape == x.shape
    q, p = posterior(m, x)
    assert q.event_shape == (3, 4, 4)


@pytest.mark.parametrize("map_size", [1, 2, 4, 8])
def test_deconv_decoder_reaches_the_image_from_any_map_size_and_keeps_leading_dims(map_size):
    """8x8 images from maps of 8 (no up-sampling), 4, 2 or 1; particle dimensions pass through:
    each [c, d, d] map set decodes as it does alone."""
    torch.manual_seed(0)
    net = DeconvDecoder((2, map_size, map_size), (3, 8, 8), width=16).double()
    z = torch.randn(5, 4, 2, map_size, map_size, dtype=torch.float64)
    out = net(z)
    assert out.shape == (5, 4, 3, 8, 8)
    torch.testing.assert_close(out[3, 1], net(z[3, 1].unsqueeze(0))[0])
    stages = sum(isinstance(layer, nn.ConvTranspose2d) for layer in net.net)
    assert 2**stages * map_size == 8


@pytest.mark.parametrize("side,maps", [(28, (16, 7, 7)), (32, (32, 4, 4)), (64, (64, 4, 4)), (8, (16, 2, 2))])
def test_default_maps_by_image_size(side, maps):
    m = zoo.create("spatial-vae-lowrank", data_shape=(3, side, side), likelihood="normal")
    assert m.model.map_shape == maps and m.guide.map_shape == maps


@pytest.mark.parametrize(
    "data_shape,overrides,message",
    [
        ((13,), {}, r"need square images, data of shape \(C, H, H\), got shape \(13,\); use vae or rho-vae"),
        ((1, 8, 12), {}, r"need square images, .*got shape \(1, 8, 12\)"),
        ((1, 28, 28), {"map_size": 5}, r"map_size=5 cannot be up-sampled to 28x28 images by doublings; expected a map_size d with 28 = d \* 2\^k"),
        ((1, 30, 30), {"map_size": 15}, r"conv encoder needs an image side divisible by 4, got 30x30 images"),
        ((1, 28, 28), {"decoder_width": 0}, r"decoder_width=0; expected an integer from 1 to 65536"),
        ((1, 28, 28), {"maps": 0}, r"maps=0; expected an integer from 1 to 65536"),
        ((1, 28, 28), {"latent_dim": 4}, r"'spatial-vae-mvn' has no config field 'latent_dim'"),
    ],
)
def test_bad_shapes_and_configs_are_one_line_config_errors(data_shape, overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        zoo.create("spatial-vae-mvn", data_shape=data_shape, **overrides)
    assert "\n" not in str(info.value)
