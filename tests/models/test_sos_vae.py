"""The SOS-VAE's observation model against dense references: the low-rank normal over an image
equals a dense MultivariateNormal over its flattened pixels; the model's "x" site scores the
data's own values; the warm-up freezes the variance heads and nothing else."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from vaezoo import traces, zoo
from vaezoo.inference import Trainer, compiled
from vaezoo.models.low_rank_likelihood import LowRankNormal

SHAPE = (2, 3, 4)  # a small two-channel image: n = 24
N, R = 24, 3


def lowrank_args(batch=(5,), seed=0):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(batch + SHAPE, generator=g, dtype=torch.float64)
    factor = torch.randn(batch + (N, R), generator=g, dtype=torch.float64)
    diag = torch.rand(batch + (N,), generator=g, dtype=torch.float64) + 0.1
    return loc, factor, diag


def dense(loc, factor, diag):
    cov = factor @ factor.mT + torch.diag_embed(diag)  # [..., n, n]
    return torch.distributions.MultivariateNormal(loc.reshape(loc.shape[:-3] + (N,)), covariance_matrix=cov)


def test_log_prob_and_entropy_equal_a_dense_multivariate_normal():
    loc, factor, diag = lowrank_args()
    d = LowRankNormal(loc, factor, diag, event_dim=3)
    assert d.batch_shape == (5,) and d.event_shape == SHAPE
    x = torch.randn((5,) + SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = dense(loc, factor, diag)
    torch.testing.assert_close(d.log_prob(x), ref.log_prob(x.reshape(5, N)), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(d.entropy(), ref.entropy(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(d.variance.reshape(5, N), ref.variance)
    assert torch.equal(d.mean, loc)


def test_a_tiny_diagonal_in_float32_scores_through_float64():
    """With the paper's diagonal (1e-5) and a nearly collinear factor, float32's capacitance
    I + P^T D^-1 P (~1e7) loses its identity and its Cholesky fails; the entry's likelihood does
    that algebra in float64 and returns float32 values equal to the float64 reference."""
    g = torch.Generator().manual_seed(0)
    n, r = 784, 25
    loc = torch.randn(4, 1, 28, 28, generator=g)
    factor = torch.randn(4, n, 1, generator=g).expand(4, n, r) * 3 + 1e-3 * torch.randn(4, n, r, generator=g)
    diag = torch.full((4, n), 1e-5)
    x = loc + 0.01 * torch.randn(4, 1, 28, 28, generator=g)
    reference = LowRankNormal(loc.double(), factor.double(), diag.double(), 3).log_prob(x.double())
    with pytest.raises(torch.linalg.LinAlgError):
        LowRankNormal(loc, factor, diag, 3).log_prob(x)
    likelihood = zoo.create("sos-vae-paper", data_shape=(1, 28, 28)).model.likelihood
    assert likelihood.upcast and not zoo.create("sos-vae", data_shape=(1, 28, 28)).model.likelihood.upcast
    got = likelihood((loc, factor, diag))
    assert got.log_prob(x).dtype == torch.float32 and got.rsample().dtype == torch.float32
    torch.testing.assert_close(got.log_prob(x).double(), reference, rtol=1e-6, atol=0)


def test_log_prob_broadcasts_over_particles_and_sampling_has_the_covariance():
    loc, factor, diag = lowrank_args(batch=(3, 5))  # [K, B, ...]: particles of a vectorized pass
    d = LowRankNormal(loc, factor, diag, event_dim=3)
    x = torch.randn((5,) + SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(2))  # the data lack K
    torch.testing.assert_close(d.log_prob(x), dense(loc, factor, diag).log_prob(x.reshape(5, N)), rtol=1e-10, atol=1e-10)
    assert d.expand((4, 3, 5)).log_prob(x).shape == (4, 3, 5)
    one = LowRankNormal(*(a[0, 0] for a in (loc, factor, diag)), event_dim=3)
    torch.manual_seed(0)
    s = one.rsample((40000,)).reshape(40000, N)
    cov = torch.cov(s.T)
    ref = dense(loc[0, 0], factor[0, 0], diag[0, 0]).covariance_matrix
    assert (cov - ref).abs().max() < 0.08 * ref.diagonal().max()


@pytest.mark.parametrize("shape", [(1, 8, 8), (13,)], ids=["image", "vector"])
def test_the_observation_site_scores_the_data_with_the_decoders_low_rank_normal(shape):
    pyro.set_rng_seed(0)
    m = zoo.create("sos-vae", data_shape=shape, rank=4, hidden=(16,), latent_dim=3).double()
    x = torch.rand((6,) + shape, dtype=torch.float64)
    guide = traces.record(m.guide, x)
    run = traces.record(m.model, x, replay=guide.trace)
    site = run.sites["x"]
    assert site["value"] is x and site["fn"].event_shape == shape
    loc, factor, diag = m.model.decoder(guide.sites["z"]["value"])
    n = x[0].numel()
    assert factor.shape == (6, n, 4) and diag.shape == (6, n)
    cov = factor @ factor.mT + torch.diag_embed(diag)
    ref = torch.distributions.MultivariateNormal(loc.reshape(6, n), covariance_matrix=cov).log_prob(x.reshape(6, n))
    torch.testing.assert_close(site["fn"].log_prob(x), ref, rtol=1e-9, atol=1e-9)
    # the fixed diagonal of the config, and samples from the observation distribution itself
    assert torch.all(diag == m.config.cov_diag)
    assert m.sample(3).shape == (3,) + shape


def test_the_baseline_is_a_pixelwise_normal_with_a_learned_variance():
    m = zoo.create("beta-vae-gaussian", data_shape=(1, 8, 8), hidden=(16,), latent_dim=3).double()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    guide = traces.record(m.guide, x)
    site = traces.record(m.model, x, replay=guide.trace).sites["x"]
    loc, factor, var = m.model.decoder(guide.sites["z"]["value"])
    assert factor is None and var.shape == x.shape and torch.all(var > m.config.cov_diag)
    ref = dist.Normal(loc, var.sqrt()).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(site["fn"].log_prob(x), ref)


def _grads(objective, x, step=None):
    objective.zero_grad(set_to_none=True)
    (step or objective)(x)[0].backward()
    heads = objective.model.decoder
    return heads.factor_head.weight.grad, heads.loc_head.weight.grad


@pytest.mark.parametrize("captured", [False, True])
def test_warmup_freezes_the_variance_heads_only_while_the_epoch_says_so(captured):
    """Eagerly, and through the graph that compile=True captures (before any epoch is announced:
    the switch stays live in it; inductor adds nothing here and costs ~30 s to compile)."""
    pyro.set_rng_seed(0)
    m = zoo.create("sos-vae", data_shape=(1, 8, 8), rank=3, hidden=(16,), latent_dim=3, warmup_epochs=2,
                   entropy_target=None).double()
    objective = m.objective()
    x = torch.rand(5, 1, 8, 8, dtype=torch.float64)
    factor, loc = _grads(objective, x)  # never told an epoch: everything trains
    step = compiled.Captured(objective, x) if captured else None
    assert factor.abs().sum() > 0 and loc.abs().sum() > 0
    for epoch, frozen in [(1, True), (2, True), (3, False)]:
        m.model.decoder.set_epoch(epoch)
        for _ in range(2):
            factor, loc = _grads(objective, x, step)
            assert bool(factor.abs().sum() == 0) is frozen and loc.abs().sum() > 0


def test_the_trainer_announces_epochs_so_the_warmup_leaves_the_factor_head_untouched(tmp_path):
    pyro.set_rng_seed(0)
    m = zoo.create("sos-vae", data_shape=(1, 8, 8), rank=3, hidden=(16,), latent_dim=3, warmup_epochs=1,
                   entropy_target=None)
    x = torch.rand(32, 1, 8, 8, dtype=torch.float64)
    seen = []
    head = m.model.decoder.factor_head.weight

    def record(trainer, _):
        seen.append(head.detach().clone())

    start = head.detach().clone()
    Trainer(m.objective(), epochs=2, batch_size=16, device="cpu", dtype="float64", progress=False,
            on_epoch_end=record).fit(x)
    assert torch.equal(seen[0], start) and not torch.equal(seen[1], start)
