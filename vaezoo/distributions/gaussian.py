"""Algebra on low-rank-plus-diagonal Gaussians N(mu, W W^T + D), for the SOS-VAE's observation
model (``papers/sos-vae-low-rank-observations.txt``): conditioning on observed pixels
(inpainting, editing) and principal directions (sampling and interpolation along them). Nothing
here forms an n x n matrix."""

import torch

from vaezoo.errors import ConfigError, ShapeError


def _split(observed, n, device):
    """Indices ``(observed, unobserved)`` from a 1-D index tensor or a length-``n`` bool mask."""
    observed = torch.as_tensor(observed, device=device)
    if observed.dim() != 1:
        raise ShapeError(
            f"conditional: observed must be a 1-D index tensor or a bool mask of shape [{n}] "
            f"shared by the batch, got shape {tuple(observed.shape)}"
        )
    if observed.dtype == torch.bool:
        if observed.numel() != n:
            raise ShapeError(
                f"conditional: the observed mask must have shape [{n}], got [{observed.numel()}]"
            )
        mask = observed
    else:
        if observed.is_floating_point():
            raise ConfigError("conditional: observed indices must be integers or a bool mask")
        if observed.numel() and (observed.min() < 0 or observed.max() >= n):
            raise ConfigError(
                f"conditional: observed indices must lie in [0, {n}), got {observed.tolist()}"
            )
        mask = torch.zeros(n, dtype=torch.bool, device=device)
        mask[observed] = True
        if int(mask.sum()) != observed.numel():
            raise ConfigError(
                f"conditional: observed indices must be distinct, got {observed.tolist()}"
            )
    observed_idx = observed if observed.dtype != torch.bool else mask.nonzero().squeeze(-1)
    return observed_idx, (~mask).nonzero().squeeze(-1)


def conditional(mvn, observed, observed_values, return_cov=False):
    r"""
    The distribution of the unobserved coordinates of :math:`x \sim \mathcal N(\mu, \Sigma)`,
    :math:`\Sigma = W W^\top + D`, given the observed ones :math:`x_o`:

    .. math::

        x_u \mid x_o \sim \mathcal N\big(\mu_u + W_u K^{-1} W_o^\top D_o^{-1} (x_o - \mu_o),\
                                          D_u + W_u K^{-1} W_u^\top\big),
        \qquad K = I_r + W_o^\top D_o^{-1} W_o ,

    which is the textbook :math:`\mu_u + \Sigma_{uo}\Sigma_{oo}^{-1}(x_o - \mu_o)`,
    :math:`\Sigma_{uu} - \Sigma_{uo}\Sigma_{oo}^{-1}\Sigma_{ou}` rewritten by Woodbury's identity
    (:math:`\Sigma_{uo} = W_u W_o^\top` since :math:`D` is diagonal), with :math:`K^{-1}` taken
    from the SVD of :math:`D_o^{-1/2} W_o` rather than from :math:`K` itself. It costs
    :math:`O(n r^2 + r^3)` and the conditional covariance stays low rank plus diagonal.

    :param mvn: a ``LowRankMultivariateNormal`` (torch's or Pyro's) with ``loc`` ``[..., n]``,
        ``cov_factor`` :math:`W` ``[..., n, r]`` and ``cov_diag`` :math:`D` ``[..., n]``.
    :param observed: which coordinates are observed, shared by the whole batch: either a 1-D
        integer tensor of distinct indices ``[n_o]`` or a bool mask ``[n]``. (Per-datapoint masks
        would give ragged results and are not supported.)
    :param observed_values: :math:`x_o`, shape ``[..., n_o]``, in the order of ``observed``'s
        indices (increasing order for a mask); its leading dims broadcast with ``mvn.batch_shape``.
    :param bool return_cov: also return the conditional covariance.
    :returns: the conditional mean ``[..., n_u]`` over the unobserved coordinates in increasing
        index order; with ``return_cov=True`` the triple ``(mean, cov_factor, cov_diag)`` with
        ``cov_factor`` :math:`W_u M` ``[..., n_u, r]`` (:math:`M M^\top = K^{-1}`) and
        ``cov_diag`` :math:`D_u` ``[..., n_u]``, so that
        ``LowRankMultivariateNormal(*conditional(mvn, observed, x_o, return_cov=True))`` is the
        conditional distribution.
    """
    # K is never formed: with A = D_o^{-1/2} W_o = U S V^T (thin SVD), K = V (I + S^2) V^T, so
    # K^{-1} A^T = V S (I + S^2)^{-1} U^T and W_u V (I + S^2)^{-1/2} is a square root of the
    # conditional's low-rank part. Forming K squares A's condition number: a trained SOS-VAE factor
    # over a diagonal of 1e-5 gives K eigenvalues of 1e21 beside 1, which not even a float64 Cholesky
    # factor survives. The SVD runs in float64 and the results come back in the distribution's dtype.
    dtype = mvn.loc.dtype
    loc, W, D = mvn.loc.double(), mvn.cov_factor.double(), mvn.cov_diag.double()
    observed_values = observed_values.double()
    n, r = W.shape[-2:]
    observed_idx, unobserved_idx = _split(observed, n, loc.device)
    if observed_values.dim() < 1 or observed_values.size(-1) != observed_idx.numel():
        raise ShapeError(
            f"conditional: observed_values must have shape [..., {observed_idx.numel()}] (one "
            f"value per observed coordinate), got {tuple(observed_values.shape)}"
        )
    W_o, W_u = W[..., observed_idx, :], W[..., unobserved_idx, :]  # [..., n_o, r], [..., n_u, r]
    scale_o = D[..., observed_idx].rsqrt()  # D_o^{-1/2}
    U, S, Vh = torch.linalg.svd(W_o * scale_o.unsqueeze(-1), full_matrices=False)  # [..., n_o, k], [..., k], [..., k, r]
    residual = (observed_values - loc[..., observed_idx]) * scale_o  # D_o^{-1/2} (x_o - mu_o), [..., n_o]
    proj = (U.mT @ residual.unsqueeze(-1)).squeeze(-1) * S / (1 + S**2)  # [..., k]
    coef = (Vh.mT @ proj.unsqueeze(-1))  # K^{-1} W_o^T D_o^{-1} (x_o - mu_o), [..., r, 1]
    mean = loc[..., unobserved_idx] + (W_u @ coef).squeeze(-1)
    if not return_cov:
        return mean.to(dtype)
    # K^{-1} = Q diag(d)^2 Q^T: Q an orthonormal basis of R^r whose first k columns are V's (up to
    # sign), d = (1 + S^2)^{-1/2} on them and 1 on the directions A does not reach (when n_o < r)
    V = Vh.mT  # [..., r, k]
    eye = torch.eye(r, dtype=W.dtype, device=W.device).expand(V.shape[:-2] + (r, r))
    Q = torch.linalg.qr(torch.cat([V, eye], -1)).Q  # [..., r, r]
    d = torch.cat([(1 + S**2).rsqrt(), torch.ones(S.shape[:-1] + (r - S.shape[-1],), dtype=S.dtype, device=S.device)], -1)
    cov_factor = W_u @ (Q * d.unsqueeze(-2))  # W_u K^{-1/2}: W_u K^{-1} W_u^T = cov_factor cov_factor^T
    return mean.to(dtype), cov_factor.to(dtype), D[..., unobserved_idx].expand(cov_factor.shape[:-1]).to(dtype)


def principal_directions(mvn, k=None, include_diag=False):
    r"""
    Principal directions of a low-rank-plus-diagonal Gaussian :math:`\mathcal N(\mu, W W^\top + D)`,
    from the thin SVD :math:`W = U S V^\top` (so :math:`W W^\top = U S^2 U^\top`) in
    :math:`O(n r^2)`.

    The directions are the eigenvectors of the low-rank part :math:`W W^\top`. They are also
    eigenvectors of the full covariance when :math:`D = \sigma^2 I` is isotropic (as in the
    SOS-VAE, whose :math:`D` is a fixed constant), with eigenvalues :math:`S^2 + \sigma^2`; for a
    non-isotropic :math:`D` they are not, and the exact eigenvectors would need the n x n matrix.

    :param mvn: a ``LowRankMultivariateNormal`` with ``cov_factor`` :math:`W` ``[..., n, r]`` and
        ``cov_diag`` :math:`D` ``[..., n]``.
    :param int k: how many directions to return, ``1 <= k <= min(n, r)``; all of them by default.
    :param bool include_diag: if False (default) the variances are :math:`s_i^2`, the eigenvalues
        of :math:`W W^\top`; if True they are :math:`u_i^\top (W W^\top + D) u_i = s_i^2 +
        \sum_j D_j u_{ji}^2`, the variance of the full distribution along :math:`u_i`.
    :returns: ``(directions, variances)``: ``directions`` ``[..., n, k]`` with orthonormal columns
        :math:`u_i`, ordered by decreasing :math:`s_i`, each signed so that its entry of largest
        magnitude is positive (so results are reproducible); ``variances`` ``[..., k]``.
    """
    W = mvn.cov_factor
    n, r = W.shape[-2:]
    k_max = min(n, r)
    if k is None:
        k = k_max
    if not 1 <= k <= k_max:
        raise ConfigError(
            f"principal_directions: k must lie in [1, {k_max}] for a rank-{r} factor of size "
            f"{n}, got {k}"
        )
    U, S, _ = torch.linalg.svd(W, full_matrices=False)
    U, S = U[..., :k], S[..., :k]
    pivot = U.abs().argmax(-2, keepdim=True)  # [..., 1, k]
    U = U * torch.sign(U.gather(-2, pivot))
    variances = S.pow(2)
    if include_diag:
        variances = variances + (mvn.cov_diag.unsqueeze(-1) * U.pow(2)).sum(-2)
    return U, variances
