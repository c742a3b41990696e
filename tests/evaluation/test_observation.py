"""Observation-space tools against dense formulas: the covariance column, eq. 5 by a dense SVD,
editing by the textbook conditional mean, slerp's closed form and its identical endpoints, the
networkless low-rank normal against scikit-learn's PCA covariance."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from vaezoo import zoo
from vaezoo.errors import ConfigError, ShapeError
from vaezoo.evaluation import observation as obs
from vaezoo.models.low_rank_likelihood import LowRankNormal

SHAPE = (1, 4, 5)
N, R = 20, 3


def lowrank(batch=(2,), seed=0):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(batch + SHAPE, generator=g, dtype=torch.float64)
    factor = torch.randn(batch + (N, R), generator=g, dtype=torch.float64)
    diag = torch.rand(batch + (N,), generator=g, dtype=torch.float64) + 0.05
    return LowRankNormal(loc, factor, diag, event_dim=3)


def dense_cov(d):
    return d.flat.cov_factor @ d.flat.cov_factor.mT + torch.diag_embed(d.flat.cov_diag)


def test_covariance_to_a_pixel_is_the_dense_column():
    d = lowrank()
    for pixel in (0, 7, 19):
        torch.testing.assert_close(obs.covariance_to(d, pixel).reshape(2, N), dense_cov(d)[..., pixel])
    with pytest.raises(ConfigError, match=r"pixel=20; expected an index in \[0, 20\)"):
        obs.covariance_to(d, 20)


def test_scaling_a_principal_component_is_eq5_with_a_dense_svd():
    d = lowrank()
    eps = torch.randn(2, R, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    U, S, Vh = torch.linalg.svd(d.flat.cov_factor, full_matrices=False)
    for component, scale in [(0, 3.0), (2, -1.5), (1, 1.0)]:
        lam = torch.ones(R, dtype=torch.float64)
        lam[component] = scale
        ref = d.flat.loc + (U @ torch.diag_embed(S * lam) @ Vh @ eps.unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(obs.scale_component(d, eps, component, scale).reshape(2, N), ref)
    with pytest.raises(ConfigError, match=r"component=3; expected an index in \[0, 3\)"):
        obs.scale_component(d, eps, 3, 2.0)


def test_editing_is_the_textbook_conditional_mean_and_keeps_the_edited_pixels():
    d = lowrank()
    mask = torch.zeros(SHAPE, dtype=torch.bool)
    mask[0, 1, 1:4] = True
    mask[0, 3, 0] = True
    values = torch.rand((2,) + SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = obs.edit(d, mask, values)
    o, u = mask.reshape(N), ~mask.reshape(N)
    cov, mu, x = dense_cov(d), d.flat.loc, values.reshape(2, N)
    s_uo, s_oo = cov[:, u][:, :, o], cov[:, o][:, :, o]
    ref = mu[:, u] + (s_uo @ torch.linalg.solve(s_oo, (x[:, o] - mu[:, o]).unsqueeze(-1))).squeeze(-1)
    flat = out.reshape(2, N)
    torch.testing.assert_close(flat[:, u], ref)
    assert torch.equal(flat[:, o], x[:, o])
    with pytest.raises(ShapeError, match=r"mask of shape \(20,\)"):
        obs.edit(d, mask.reshape(N), values)


def test_slerp_is_eq8_and_handles_identical_and_opposite_endpoints():
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    e1, e2 = torch.eye(3, dtype=torch.float64)[:2]
    ref = torch.cos(t * math.pi / 2)[:, None] * e1 + torch.sin(t * math.pi / 2)[:, None] * e2
    torch.testing.assert_close(obs.slerp(2 * e1, 2 * e2, t), 2 * ref)
    a = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    same = obs.slerp(a, a.clone(), t)
    assert torch.isfinite(same).all() and torch.allclose(same, a.expand(5, 3))
    assert torch.isfinite(obs.slerp(a, -a, t)).all()
    d = lowrank()
    eps0, eps1 = torch.randn(2, 2, R, dtype=torch.float64)
    eta = torch.randn(2, N, dtype=torch.float64)
    path = obs.interpolate(d, eps0, eps1, t, noise=eta)
    assert path.shape == (5, 2) + SHAPE
    start = d.flat.loc + (d.flat.cov_factor @ eps0.unsqueeze(-1)).squeeze(-1) + d.flat.cov_diag.sqrt() * eta
    torch.testing.assert_close(path[0].reshape(2, N), start)


def test_the_networkless_low_rank_normal_reaches_pcas_probabilistic_pca():
    from sklearn.decomposition import PCA

    g = torch.Generator().manual_seed(0)
    basis = torch.randn(6, 2, generator=g, dtype=torch.float64)
    x = (torch.randn(400, 2, generator=g, dtype=torch.float64) @ basis.T + 0.3 * torch.randn(400, 6, generator=g, dtype=torch.float64)).reshape(400, 1, 2, 3)
    ref = torch.as_tensor(PCA(n_components=2, svd_solver="full").fit(x.reshape(400, 6).numpy()).get_covariance())
    torch.testing.assert_close(dense_cov(obs.pca_normal(x, 2)), ref)
    learned = obs.fit_low_rank_normal(x, 2, steps=500, lr=0.05)
    # PCA's covariance uses the unbiased (N - 1) sample covariance, maximum likelihood the biased one
    torch.testing.assert_close(dense_cov(learned) * 400 / 399, ref, rtol=0.02, atol=0.01)


@pytest.mark.parametrize("name", ["sos-vae", "beta-vae-gaussian"])
def test_figure2_is_one_png_with_five_rows(name, tmp_path):
    m = zoo.create(name, data_shape=(1, 8, 8), hidden=(16,), latent_dim=3).double()
    path = obs.figure(m, tmp_path / "fig.png", n=4)
    img = np.asarray(Image.open(path))
    assert img.shape == (2 * (5 * 10 + 2), 2 * (4 * 10 + 2))  # 5 rows of 8x8 images, padding 2, scale 2
    d = obs.prior_observation(m, 3)
    assert d.batch_shape == (3,) and d.event_shape == (1, 8, 8)


def test_tools_refuse_a_model_without_a_low_rank_observation_in_one_line():
    m = zoo.create("vae", data_shape=(1, 8, 8), hidden=(16,), latent_dim=3)
    d = obs.prior_observation(m, 2)
    with pytest.raises(ConfigError, match=r"observation distribution is a Independent; expected a low-rank normal"):
        obs.scale_component(d, torch.zeros(2, 3), 0, 2.0)


def test_editing_from_png_mask_and_values(tmp_path):
    m = zoo.create("sos-vae", data_shape=(1, 8, 8), hidden=(16,), latent_dim=3, rank=4).double()
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2:4, 3:6] = 255
    values = np.full((8, 8), 204, dtype=np.uint8)  # 0.8
    Image.fromarray(mask).save(tmp_path / "mask.png")
    Image.fromarray(values).save(tmp_path / "values.png")
    out = obs.edit_from_png(m, tmp_path / "mask.png", tmp_path / "values.png", n=3, seed=1)
    assert out.shape == (6, 1, 8, 8)
    torch.manual_seed(1)
    d = obs.prior_observation(m, 3)
    torch.testing.assert_close(out[:3], d.mean)
    where = torch.as_tensor(mask > 0)[None]
    torch.testing.assert_close(out[3:], obs.edit(d, where, torch.full((3, 1, 8, 8), 0.8, dtype=torch.float64)))
    Image.fromarray(np.zeros((9, 8), dtype=np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(ShapeError, match=r"small.png' is 8x9 pixels; expected 8x8"):
        obs.edit_from_png(m, tmp_path / "small.png", tmp_path / "values.png")


def test_observational_figure_puts_learned_and_pca_samples_side_by_side(tmp_path):
    x = torch.rand(64, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    path = obs.observational_figure(x, 3, tmp_path / "pca.png", n=5, steps=50)
    assert np.asarray(Image.open(path)).shape == (2 * (2 * 8 + 2), 2 * (5 * 8 + 2))  # two rows of five
