"""Transformer VAEs: the full-rank pose prior's KL against the dense Gaussian N(b, W W^T), the flat
prior's zero KL and what log p(x) then means, the DTVAE's un-warping, the localization head's
identity start, one-line config errors, and a briefly trained model whose pose (not its content)
follows a shifted digit."""

import warnings

import pyro
import pyro.poutine as poutine
import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from vaezoo import data, evaluation, traces, zoo
from vaezoo.errors import ConfigError
from vaezoo.inference import compiled
from vaezoo.inference.objectives import ELBO
from vaezoo.nets.transformers import Affine5Transformer

F64 = torch.float64
ENTRIES = ["tvae-affine", "tvae-affine5", "tvae-tps", "dtvae-affine", "dtvae-tps"]
SMALL = dict(hidden=(32,), latent_dim=4, loc_hidden=(16,))


def digits(n=16):
    return data.load("digits", split="train", binarize="fixed").data[:n].double()


def test_every_entry_is_registered():
    assert set(ENTRIES) <= set(zoo.names())


def dense_pose(model, loc_v, cov_v):
    """The Gaussian of u = b + W v for v ~ N(loc_v, cov_v), with dense covariance W cov_v W^T."""
    w, b = model.pose_prior.pose_map.weight, model.pose_prior.pose_map.bias
    return MultivariateNormal(b + loc_v @ w.T, covariance_matrix=w @ cov_v @ w.T)


def randomize_pose_map(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = m.model.pose_prior.pose_map.weight.shape[0]
    with torch.no_grad():
        m.model.pose_prior.pose_map.weight.copy_(torch.eye(k, dtype=F64) + 0.3 * torch.randn(k, k, generator=g, dtype=F64))
        m.model.pose_prior.pose_map.bias.add_(0.2 * torch.randn(k, generator=g, dtype=F64))


def test_full_rank_pose_prior_kl_equals_the_dense_gaussian_kl():
    """With r = dim u and W invertible, KL(q(v) || N(0, I)) is the KL between the pose's Gaussians
    N(b + W m, W S W^T) and N(b, W W^T) (an invertible affine map keeps KL): the ELBO's KL term is
    that plus the content's KL."""
    pyro.set_rng_seed(0)
    x = digits(8)
    m = zoo.create("tvae-affine5", data_shape=(1, 8, 8), pose_prior="full-rank", **SMALL).double()
    randomize_pose_map(m)
    guide_run = traces.record(m.guide, x)
    q_v, q_z = guide_run.sites["v"]["fn"], guide_run.sites["z"]["fn"]
    cov_v = torch.diag_embed(q_v.base_dist.scale**2)
    prior_u = dense_pose(m.model, torch.zeros(5, dtype=F64), torch.eye(5, dtype=F64))
    kl_u = kl_divergence(dense_pose(m.model, q_v.mean, cov_v), prior_u)  # [8]
    model_run = traces.record(m.model, x, replay=guide_run.trace)
    torch.testing.assert_close(kl_divergence(q_v, model_run.sites["v"]["fn"]), kl_u)
    objective = ELBO(m.model, m.guide)
    _, terms = objective(x)
    assert objective._analytic == {"v", "z"}
    kl_z = kl_divergence(q_z, model_run.sites["z"]["fn"])
    torch.testing.assert_close(terms["kl"], (kl_u + kl_z).mean())


def test_full_rank_pose_guide_log_densities_against_dense_gaussians():
    """log q(v) - log p(v) = log q_u(u) - log p_u(u) at u = b + W v (the Jacobians cancel), for
    a full-rank q(v | x) = N(m, L L^T), with q_u = N(b + W m, W L L^T W^T), p_u = N(b, W W^T)."""
    pyro.set_rng_seed(1)
    x = digits(6)
    m = zoo.create("tvae-affine", data_shape=(1, 8, 8), pose_prior="full-rank", pose_guide="full-rank", **SMALL).double()
    randomize_pose_map(m, seed=1)
    last = m.guide.localizer.net[-1]
    with torch.no_grad():  # a guide with correlations: random off-diagonal Cholesky entries
        last.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
    guide_run = traces.record(m.guide, x)
    model_run = traces.record(m.model, x, replay=guide_run.trace)
    q_v = guide_run.sites["v"]["fn"]
    assert isinstance(q_v, MultivariateNormal) and (q_v.scale_tril.tril(-1).abs() > 0).any()
    v = guide_run.sites["v"]["value"]
    u = m.model.pose_prior.pose_map(v)
    q_u = dense_pose(m.model, q_v.mean, q_v.covariance_matrix)
    p_u = dense_pose(m.model, torch.zeros(6, dtype=F64), torch.eye(6, dtype=F64))
    lhs = q_v.log_prob(v) - model_run.sites["v"]["fn"].log_prob(v)
    torch.testing.assert_close(lhs, q_u.log_prob(u) - p_u.log_prob(u))


def test_flat_pose_prior_has_zero_kl_and_log_px_is_the_content_models_at_the_inferred_pose():
    pyro.set_rng_seed(0)
    x = digits(5)
    m = zoo.create("tvae-tps", data_shape=(1, 8, 8), **SMALL).double()
    with torch.no_grad():
        m.guide.localizer.net[-1].weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
    guide_run = traces.record(m.guide, x)
    model_run = traces.record(m.model, x, replay=guide_run.trace)
    u_star = guide_run.sites["u"]["value"]
    assert guide_run.sites["u"]["fn"].has_rsample and not torch.equal(u_star, torch.zeros_like(u_star))
    lp = model_run.sites["u"]["fn"].log_prob(u_star)
    assert lp.dtype == F64 and lp.shape == (5,) and torch.equal(lp, torch.zeros(5, dtype=F64))
    _, terms = ELBO(m.model, m.guide)(x)
    kl_z = kl_divergence(guide_run.sites["z"]["fn"], model_run.sites["z"]["fn"]).mean()
    torch.testing.assert_close(terms["kl"], kl_z)
    # log p(x) is importance sampling of the content model with the pose fixed at the guide's u*
    def content_model_at_inferred_pose(x):
        return poutine.condition(m.model, data={"u": m.guide.pose_posterior(x).mean})(x)

    full = evaluation.log_marginal(m.model, m.guide, x, num_samples=64, seed=3)
    fixed = evaluation.log_marginal(content_model_at_inferred_pose, poutine.block(m.guide, hide=["u"]), x, num_samples=64, seed=3)
    torch.testing.assert_close(full.log_px, fixed.log_px)
    # generating without a guide renders in the reference pose
    assert torch.equal(traces.record(m.model, x).sites["u"]["value"], torch.zeros(5, 18, dtype=F64))


@pytest.mark.parametrize("name", ENTRIES)
@pytest.mark.parametrize(
    "pose_prior,pose_guide", [("none", None), ("normal", None), ("normal", "full-rank"), ("full-rank", None), ("full-rank", "full-rank")]
)
def test_log_marginal_and_compile(name, pose_prior, pose_guide):
    """Each entry, prior and pose guide: log_marginal's importance weights estimate the ELBO that
    Pyro's Trace_ELBO estimates on the same pair (8 independent estimates of each, the batch's ELBO,
    within 5 standard errors of their difference, 1-4 nats here: a pose site left out of a weight
    moves it by 6-34 nats, the content z by about 3), and the objective compiles (compile=True, no
    warning): its captured graph, replayed op by op, equals the eager objective on the same draws
    (inductor itself is tested in tests/inference/test_compile.py). A full-rank pose guide starts
    with off-diagonal factors of 0, so they are drawn at random first: a diagonal guide would pass too."""
    pyro.set_rng_seed(0)
    x = digits(6)
    rank = 3 if pose_prior == "full-rank" else None
    m = zoo.create(name, data_shape=(1, 8, 8), pose_prior=pose_prior, pose_guide=pose_guide, pose_rank=rank, **SMALL).double()
    if pose_guide == "full-rank":
        last = [mod for mod in m.guide.localizer.modules() if isinstance(mod, torch.nn.Linear)][-1]
        d, g = m.guide.pose_dim, torch.Generator().manual_seed(1)
        with torch.no_grad():
            last.bias[2 * d:] += 0.05 * torch.randn(last.bias[2 * d:].shape, generator=g, dtype=F64)
    with torch.no_grad():
        ours = torch.stack([evaluation.log_marginal(m.model, m.guide, x, num_samples=10, seed=s).elbo.sum()
                            for s in range(8)])
        assert torch.isfinite(ours).all()
        pyro.set_rng_seed(1)
        theirs = torch.tensor([-pyro.infer.Trace_ELBO(num_particles=10).loss(m.model, m.guide, x) for _ in range(8)],
                              dtype=ours.dtype)
    se = (ours.var() / 8 + theirs.var() / 8).sqrt()
    assert abs(ours.mean() - theirs.mean()) < 5 * se, (ours.mean(), theirs.mean(), se)
    objective = m.objective(compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            objective(x)  # the checked first call, eager: decides whether the pair compiles
        assert objective._blocker is None
        captured = compiled.Captured(objective, x)
    torch.manual_seed(5)
    loss_captured, terms_captured = captured(x)
    torch.manual_seed(5)
    loss_eager, terms_eager = objective.loss_and_terms(x)
    torch.testing.assert_close(loss_captured, loss_eager)
    torch.testing.assert_close(terms_captured, terms_eager)


@pytest.mark.parametrize("name", ENTRIES)
def test_localization_head_starts_at_the_identity_warp(name):
    m = zoo.create(name, data_shape=(1, 8, 8), pose_prior="normal", **SMALL).double()
    x = digits(4)
    q_u = m.guide.pose_posterior(x)
    identity = m.model.transformer.identity(x)
    torch.testing.assert_close(q_u.mean, identity.expand(4, -1))
    torch.testing.assert_close(m.model.pose_prior.mean_pose(x), identity)


def test_dtvae_encodes_the_image_unwarped_by_the_sampled_pose():
    m = zoo.create("dtvae-affine", data_shape=(1, 8, 8), **SMALL).double()
    u = torch.tensor([0.9, 0.2, 0.1, -0.1, 1.1, 0.05], dtype=F64)
    with torch.no_grad():
        m.guide.localizer.net[-1].bias.copy_(u)
    x = digits(3)
    run = traces.record(m.guide, x)
    torch.testing.assert_close(run.sites["u"]["value"], u.expand(3, 6))
    unwarped = m.model.transformer(x, u, inverse=True)
    torch.testing.assert_close(run.sites["z"]["fn"].mean, m.guide.content_encoder(unwarped).chunk(2, -1)[0])
    # the TVAE's content encoder sees x itself
    t = zoo.create("tvae-affine", data_shape=(1, 8, 8), **SMALL).double()
    torch.testing.assert_close(traces.record(t.guide, x).sites["z"]["fn"].mean, t.guide.content_encoder(x).chunk(2, -1)[0])


BAD = [
    ({"pose_prior": "uniform"}, r"pose_prior='uniform'; expected one of none, normal, full-rank"),
    ({"pose_guide": "lowrank"}, r"pose_guide='lowrank'; expected diagonal, full-rank or none"),
    ({"pose_guide": "diagonal"}, r"pose_guide='diagonal' needs a pose prior \(pose_prior=normal or full-rank\); with pose_prior=none"),
    ({"pose_rank": 0}, r"pose_rank=0; expected an integer from 1 to 5 \(the pose's dimension\), or none"),
    ({"pose_rank": 6}, r"pose_rank=6; expected an integer from 1 to 5"),
    ({"pose_rank": 2.5}, r"pose_rank=2\.5 .*expected an integer, or None"),
    ({"pose_scale": 0.0}, r"pose_scale=0\.0; expected a number > 0"),
    ({"loc_hidden": (0,)}, r"loc_hidden=\(0,\); expected layer sizes >= 1"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[next(iter(o)) for o, _ in BAD])
def test_bad_config_is_one_line_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        zoo.create("tvae-affine5", data_shape=(1, 8, 8), **overrides)
    assert "\n" not in str(info.value)


def test_tps_grid_and_data_shape_errors():
    with pytest.raises(ConfigError, match=r"^grid_size=1; expected an integer >= 2$"):
        zoo.create("tvae-tps", grid_size=1)
    with pytest.raises(ConfigError, match=r"pose_rank=19; expected an integer from 1 to 18"):
        zoo.create("dtvae-tps", pose_rank=19)
    assert zoo.create("tvae-tps", data_shape=(1, 8, 8), grid_size=4, **SMALL).model.transformer.num_params == 32
    for name in ENTRIES:
        for shape in [(13,), (28, 28), (1, 2, 8, 8)]:
            with pytest.raises(ConfigError, match=r"^the transformer VAEs need image data of shape \(C, H, W\), got shape .*; use vae"):
                zoo.create(name, data_shape=shape)


def test_a_shifted_digit_moves_the_pose_much_more_than_the_content():
    """A tvae-affine5 trained briefly (200 steps, 3 s) on MNIST digits shifted at random by up to
    4 pixels: shifting test digits 3 pixels to the left moves the posterior mean of the pose by
    several of its spreads over the data, about 3 times as far as that of z (in its spreads), and
    the translation T_x by about the shift, 6 / 28 (the sampling map reads from the right)."""
    pyro.set_rng_seed(0)
    x = data.load("mnist-small", split="train", binarize="fixed").data[:2000].double()
    m = zoo.create("tvae-affine5", data_shape=(1, 28, 28), hidden=(64,), latent_dim=8, loc_hidden=(32,)).double()
    objective = m.objective()
    opt = torch.optim.Adam(objective.parameters(), lr=5e-3)
    shifter, g = Affine5Transformer(), torch.Generator().manual_seed(0)
    for _ in range(200):
        u = torch.zeros(100, 5, dtype=F64)
        u[:, 3:] = torch.randint(-4, 5, (100, 2), generator=g) * (2 / 28)  # whole pixels: exact shifts
        batch = shifter(x[torch.randint(0, 2000, (100,), generator=g)], u).round()
        loss, _ = objective(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = x[:200]
    shift = torch.tensor([0.0, 0.0, 0.0, 6 / 28, 0.0], dtype=F64)
    with torch.no_grad():
        before, after = traces.record(m.guide, test), traces.record(m.guide, shifter(test, shift).round())
    moved = {}
    for site in ("u", "z"):
        a, b = before.sites[site]["fn"].mean, after.sites[site]["fn"].mean
        moved[site] = ((b - a) / a.std(0)).pow(2).mean(-1).sqrt().mean()  # RMS over coordinates, in spreads
    assert moved["u"] > 1.5 * moved["z"], moved
    d_tx = (after.sites["u"]["fn"].mean - before.sites["u"]["fn"].mean)[:, 3].mean()
    assert 0.1 < d_tx < 0.3, d_tx
