"""Closed-form KL divergences of MatrixNormal and AR1Normal, registered with
``torch.distributions.kl.register_kl`` so that ``kl_divergence(q, p)`` (and Pyro's
``TraceMeanField_ELBO``) finds them. Imported by ``vaezoo.distributions``."""

import torch
from torch.distributions import Independent, Normal, register_kl

from vaezoo.errors import ShapeError

from .ar1_normal import AR1Normal
from .matrix_normal import MatrixNormal


def _diagonal_normal(p, event_shape):
    """``(loc, scale)`` of ``p`` if ``p`` is ``Normal(loc, scale)`` made ``Independent`` over
    exactly ``event_shape`` (e.g. ``pyro.distributions.Normal(0, 1).expand(shape).to_event(2)``),
    each of shape ``p.batch_shape + event_shape``.

    Raises ``NotImplementedError`` for any other base distribution, so that callers such as
    ``TraceMeanField_ELBO`` fall back to a Monte-Carlo estimate, and ``ValueError`` when the
    event shapes differ (a model/guide mismatch, not a missing formula).
    """
    base = p
    while isinstance(base, Independent):
        base = base.base_dist
    if not isinstance(base, Normal):  # torch's Normal or Pyro's wrapper of it
        raise NotImplementedError(f"no closed-form KL to Independent({type(base).__name__})")
    if p.event_shape != event_shape:
        raise ShapeError(
            f"kl_divergence: the prior has event_shape {tuple(p.event_shape)} but the posterior "
            f"has event_shape {tuple(event_shape)}; declare matching event dims with .to_event()"
        )
    loc, scale = base.loc, base.scale
    shape = p.batch_shape + event_shape
    return loc.expand(shape), scale.expand(shape)


@register_kl(MatrixNormal, Independent)
def _kl_matrix_normal_diagonal_normal(q, p):
    r"""KL(MN(M, U, V) || N(mu, diag sigma^2)) =
    1/2 sum_ij [(U_ii V_jj + (M_ij - mu_ij)^2) / sigma_ij^2] - mn/2 + sum_ij log sigma_ij
    - n log|L_r| - m log|L_c|, in O(m^2 + n^2 + mn)."""
    loc, scale = _diagonal_normal(p, q.event_shape)
    m, n = q.event_shape
    quad = ((q.variance + (q.loc - loc).pow(2)) / scale.pow(2)).sum((-2, -1))
    return 0.5 * (quad - m * n) + scale.log().sum((-2, -1)) - q._half_log_det()


@register_kl(MatrixNormal, MatrixNormal)
def _kl_matrix_normal_matrix_normal(q, p):
    r"""KL(MN(M_q, U_q, V_q) || MN(M_p, U_p, V_p)) =
    1/2 [tr(V_p^{-1} V_q) tr(U_p^{-1} U_q) + ||L_{r,p}^{-1} (M_q - M_p) L_{c,p}^{-T}||_F^2 - mn]
    + 1/2 log|Sigma_p| - 1/2 log|Sigma_q|, using tr((V_p (x) U_p)^{-1} (V_q (x) U_q)) =
    ||L_{c,p}^{-1} L_{c,q}||_F^2 ||L_{r,p}^{-1} L_{r,q}||_F^2; O(m^3 + n^3 + m^2 n + m n^2)."""
    if q.event_shape != p.event_shape:
        raise ShapeError(
            f"kl_divergence: MatrixNormal event shapes differ: {tuple(q.event_shape)} vs "
            f"{tuple(p.event_shape)}"
        )
    m, n = q.event_shape
    solve = torch.linalg.solve_triangular
    tr_row = solve(p.scale_tril_row, q.scale_tril_row, upper=False).pow(2).sum((-2, -1))
    tr_column = solve(p.scale_tril_column, q.scale_tril_column, upper=False).pow(2).sum((-2, -1))
    maha = p._whiten(q.loc - p.loc).pow(2).sum((-2, -1))
    return 0.5 * (tr_row * tr_column + maha - m * n) + p._half_log_det() - q._half_log_det()


@register_kl(AR1Normal, Independent)
def _kl_ar1_normal_diagonal_normal(q, p):
    r"""KL(N(mu_q, s T(rho)) || N(mu, diag sigma^2)) =
    1/2 sum_j [(s + (mu_q,j - mu_j)^2) / sigma_j^2] - d/2 + sum_j log sigma_j
    - d/2 log s - (d-1)/2 log(1 - rho^2); against N(0, I) this is the rho-VAE's
    1/2 [|mu|^2 + d (s - 1 - log s) - (d - 1) log(1 - rho^2)]. O(d)."""
    loc, scale = _diagonal_normal(p, q.event_shape)
    d = q.event_shape[0]
    quad = ((q.scale.pow(2).unsqueeze(-1) + (q.loc - loc).pow(2)) / scale.pow(2)).sum(-1)
    return 0.5 * (quad - d) + scale.log().sum(-1) - q._half_log_det()


@register_kl(AR1Normal, AR1Normal)
def _kl_ar1_normal_ar1_normal(q, p):
    r"""KL(N(mu_q, s_q T(rho_q)) || N(mu_p, s_p T(rho_p))) with
    tr(Sigma_p^{-1} Sigma_q)
        = (s_q / s_p) [1 + (d - 1) (1 - 2 rho_p rho_q + rho_p^2) / (1 - rho_p^2)]
    (the expected squared innovations of p under q) and the Mahalanobis term through p's
    innovations. O(d)."""
    if q.event_shape != p.event_shape:
        raise ShapeError(
            f"kl_divergence: AR1Normal event shapes differ: {tuple(q.event_shape)} vs "
            f"{tuple(p.event_shape)}"
        )
    d = q.event_shape[0]
    ratio = (q.scale / p.scale).pow(2)
    one_minus_rho2_p = (1 - p.rho) * (1 + p.rho)
    trace = ratio * (1 + (d - 1) * (1 - 2 * p.rho * q.rho + p.rho.pow(2)) / one_minus_rho2_p)
    maha = p._whiten(q.loc - p.loc).pow(2).sum(-1)
    return 0.5 * (trace + maha - d) + p._half_log_det() - q._half_log_det()
