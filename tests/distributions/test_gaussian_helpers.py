"""``vaezoo.distributions.gaussian`` against the dense textbook formulas, in float64."""

import pytest
import torch
from pyro.distributions import LowRankMultivariateNormal

from vaezoo.distributions import conditional, principal_directions

DTYPE = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def low_rank_mvn(batch=(2,), n=9, r=3, isotropic=False, seed=0):
    g = _gen(seed)
    loc = torch.randn(batch + (n,), generator=g, dtype=DTYPE)
    W = torch.randn(batch + (n, r), generator=g, dtype=DTYPE)
    if isotropic:
        D = torch.full(batch + (n,), 0.3, dtype=DTYPE)
    else:
        D = 0.1 + torch.rand(batch + (n,), generator=g, dtype=DTYPE)
    return LowRankMultivariateNormal(loc, W, D)


def dense_conditional(mvn, o, u, x_o):
    """mu_u + S_uo S_oo^{-1} (x_o - mu_o) and S_uu - S_uo S_oo^{-1} S_ou with the n x n matrix."""
    S = mvn.covariance_matrix
    S_oo, S_uo, S_uu = S[..., o, :][..., :, o], S[..., u, :][..., :, o], S[..., u, :][..., :, u]
    gain = torch.linalg.solve(S_oo, S_uo.mT).mT  # S_uo S_oo^{-1}
    mean = mvn.loc[..., u] + (gain @ (x_o - mvn.loc[..., o]).unsqueeze(-1)).squeeze(-1)
    return mean, S_uu - gain @ S_uo.mT


@pytest.mark.parametrize("how", ["indices", "unsorted_indices", "mask"])
@pytest.mark.parametrize("values_batch", [(), (4, 1)])
def test_conditional_against_dense(how, values_batch):
    mvn = low_rank_mvn()
    n = mvn.event_shape[0]
    o = torch.tensor([6, 1, 4, 0]) if how == "unsorted_indices" else torch.tensor([0, 1, 4, 6])
    u = torch.tensor([i for i in range(n) if i not in o.tolist()])
    observed = torch.zeros(n, dtype=torch.bool).index_fill(0, o, True) if how == "mask" else o
    x_o = torch.randn(values_batch + (2, o.numel()), generator=_gen(1), dtype=DTYPE)
    mean, cov_factor, cov_diag = conditional(mvn, observed, x_o, return_cov=True)
    ref_mean, ref_cov = dense_conditional(mvn, o, u, x_o)
    assert mean.shape == values_batch + (2, u.numel())
    assert torch.allclose(mean, ref_mean, atol=1e-10)
    assert torch.allclose(conditional(mvn, observed, x_o), mean)
    cov = cov_factor @ cov_factor.mT + torch.diag_embed(cov_diag)
    assert torch.allclose(cov, ref_cov.expand_as(cov), atol=1e-10)
    # the triple is ready to build the conditional distribution
    cond = LowRankMultivariateNormal(mean, cov_factor, cov_diag)
    assert cond.event_shape == (u.numel(),)


def test_conditional_of_a_float32_distribution_with_the_sos_vae_diagonal():
    """A float32 distribution with the SOS-VAE paper's diagonal 1e-5 and a factor of MNIST's size
    whose columns are collinear on a patch (a trained factor's nearly are): K = I + W_o^T D_o^{-1}
    W_o = I + c 1 1^T with c about 1e8, whose identity part float32 rounds away, so its float32
    Cholesky factor fails; the solve runs in float64 and returns float32 values equal to the float64
    computation's."""
    g = _gen(3)
    n, r = 784, 25
    loc = torch.rand(n, generator=g, dtype=DTYPE)
    observed = torch.zeros(n, dtype=torch.bool)
    observed[300:420] = True
    W = 0.3 * torch.randn(n, r, generator=g, dtype=DTYPE)
    W[observed] = 3.0  # the distribution itself (all 784 pixels) is well conditioned; the patch is not
    D = torch.full((n,), 1e-5, dtype=DTYPE)
    x_o = torch.rand(int(observed.sum()), generator=g, dtype=DTYPE)
    W_o, D_o = W[observed].float(), D[observed, None].float()
    K = torch.eye(r) + W_o.mT @ (W_o / D_o)  # formed in float32, as before the fix
    assert torch.linalg.cholesky_ex(K).info != 0
    mvn32 = LowRankMultivariateNormal(loc.float(), W.float(), D.float())
    mean, cov_factor, cov_diag = conditional(mvn32, observed, x_o.float(), return_cov=True)
    assert mean.dtype == cov_factor.dtype == cov_diag.dtype == torch.float32
    ref = conditional(LowRankMultivariateNormal(loc.float().double(), W.float().double(), D.float().double()),
                      observed, x_o.float().double())
    assert torch.allclose(mean.double(), ref, rtol=0, atol=1e-5)


def test_conditional_where_the_factor_dwarfs_the_diagonal():
    """A factor as a trained SOS-VAE's at a prior draw (singular values from 1e8 down to 1 over a
    diagonal of 1e-5: K = I + W_o^T D_o^{-1} W_o would span 1e21 to 1e5, past a float64 Cholesky
    factor). An observation the factor explains, x_o = mu_o + W_o e, is completed by the factor:
    the conditional mean is mu_u + W_u (I - K^{-1}) e = mu_u + W_u e up to K^{-1} <= 1e-5, and the
    conditional covariance's factor W_u K^{-1/2} is as small."""
    g = _gen(4)
    n, r = 100, 6
    observed = torch.zeros(n, dtype=torch.bool)
    observed[:40] = True
    Q = torch.linalg.qr(torch.randn(40, r, generator=g, dtype=DTYPE)).Q
    R = torch.linalg.qr(torch.randn(r, r, generator=g, dtype=DTYPE)).Q
    W = torch.randn(n, r, generator=g, dtype=DTYPE)
    W[observed] = Q @ torch.diag(torch.logspace(8, 0, r, dtype=DTYPE)) @ R
    loc, D = torch.randn(n, generator=g, dtype=DTYPE), torch.full((n,), 1e-5, dtype=DTYPE)
    e = torch.randn(r, generator=g, dtype=DTYPE)
    mvn = LowRankMultivariateNormal(loc, W, D)
    mean, cov_factor, _ = conditional(mvn, observed, loc[observed] + W[observed] @ e, return_cov=True)
    assert torch.allclose(mean, loc[~observed] + W[~observed] @ e, rtol=0, atol=1e-4)
    assert cov_factor.abs().max() < 1e-2


def test_conditional_edge_cases():
    mvn = low_rank_mvn()
    n = mvn.event_shape[0]
    nothing = torch.zeros(n, dtype=torch.bool)
    no_values = torch.zeros(2, 0, dtype=DTYPE)
    mean, cov_factor, cov_diag = conditional(mvn, nothing, no_values, return_cov=True)
    assert torch.allclose(mean, mvn.loc)
    cov = cov_factor @ cov_factor.mT + torch.diag_embed(cov_diag)
    assert torch.allclose(cov, mvn.covariance_matrix)
    everything = torch.arange(n)
    assert conditional(mvn, everything, mvn.loc).shape == (2, 0)


def test_conditional_bad_arguments():
    mvn = low_rank_mvn()
    n = mvn.event_shape[0]
    with pytest.raises(ValueError, match="distinct"):
        conditional(mvn, torch.tensor([1, 1]), torch.zeros(2, dtype=DTYPE))
    with pytest.raises(ValueError, match="lie in"):
        conditional(mvn, torch.tensor([n]), torch.zeros(1, dtype=DTYPE))
    with pytest.raises(ValueError, match="mask"):
        conditional(mvn, torch.ones(n + 1, dtype=torch.bool), torch.zeros(n + 1, dtype=DTYPE))
    with pytest.raises(ValueError, match="1-D"):
        conditional(mvn, torch.ones(2, n, dtype=torch.bool), torch.zeros(n, dtype=DTYPE))
    with pytest.raises(ValueError, match="observed_values"):
        conditional(mvn, torch.tensor([0, 1]), torch.zeros(3, dtype=DTYPE))


def test_principal_directions_of_low_rank_part():
    mvn = low_rank_mvn(batch=(3,), n=8, r=4)
    U, var = principal_directions(mvn)
    assert U.shape == (3, 8, 4) and var.shape == (3, 4)
    assert torch.allclose(U.mT @ U, torch.eye(4, dtype=DTYPE).expand(3, 4, 4), atol=1e-12)
    assert (var[..., :-1] >= var[..., 1:]).all()
    low_rank = mvn.cov_factor @ mvn.cov_factor.mT
    eigenvalues = torch.linalg.eigvalsh(low_rank).flip(-1)[..., :4]
    assert torch.allclose(var, eigenvalues, atol=1e-10)
    assert torch.allclose(low_rank @ U, U * var.unsqueeze(-2), atol=1e-10)  # eigenvectors
    # sign convention: the entry of largest magnitude of each direction is positive
    assert (U.gather(-2, U.abs().argmax(-2, keepdim=True)) > 0).all()
    U2, var2 = principal_directions(mvn, k=2)
    assert torch.allclose(U2, U[..., :2]) and torch.allclose(var2, var[..., :2])
    _, var_full = principal_directions(mvn, include_diag=True)
    expected = torch.einsum("...ik,...ij,...jk->...k", U, mvn.covariance_matrix, U)  # u^T S u
    assert torch.allclose(var_full, expected, atol=1e-10)


def test_principal_directions_isotropic_diagonal_are_eigenvectors():
    mvn = low_rank_mvn(n=6, r=2, isotropic=True)
    U, var = principal_directions(mvn, include_diag=True)
    S = mvn.covariance_matrix
    assert torch.allclose(S @ U, U * var.unsqueeze(-2), atol=1e-10)
    assert torch.allclose(var, torch.linalg.eigvalsh(S).flip(-1)[..., :2], atol=1e-10)


def test_principal_directions_bad_k():
    mvn = low_rank_mvn(n=6, r=2)
    for k in [0, 3]:
        with pytest.raises(ValueError, match="k must"):
            principal_directions(mvn, k=k)
