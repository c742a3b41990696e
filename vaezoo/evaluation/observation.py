"""Tools in the observation space of a low-rank normal likelihood (the SOS-VAE,
``papers/sos-vae-low-rank-observations.txt`` sections 4.1-4.5): samples and the Figure 2 panel,
slerp over the noise, principal components, interactive editing, and the observational distribution
fitted without networks against PCA. Each needs one decoder pass at most."""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch

from vaezoo import traces
from vaezoo.distributions.gaussian import conditional, principal_directions
from vaezoo.errors import ConfigError, ShapeError
from vaezoo.models.low_rank_likelihood import LowRankNormal
from vaezoo.randomness import rng_scope


# --------------------------------------------------------------------------------- the distribution
def _device(m) -> torch.device:
    return next(m.parameters()).device


def _template(m, n: int) -> torch.Tensor:
    p = next(m.parameters())
    return torch.zeros((n,) + tuple(m.data_shape), device=p.device, dtype=p.dtype)


@torch.no_grad()
def prior_observation(m, n: int):
    """The observation distribution p(x | z) of ``n`` draws z from the prior of the zoo model
    ``m`` (one decoder pass): batch ``[n]``, event ``m.data_shape``."""
    return traces.record(m.model, _template(m, n)).sites["x"]["fn"]


@torch.no_grad()
def posterior_observation(m, x: torch.Tensor):
    """p(x | z) at z = the mean of q(z | x) for every latent site (the reconstruction's
    distribution), for ``x  # [N, *data_shape]``."""
    guide_run = traces.record(m.guide, x)
    means = {name: s["fn"].mean for name, s in guide_run.sites.items() if not s["is_observed"]}
    return traces.record(m.model, x, replay=means).sites["x"]["fn"]


def low_rank(d) -> Tuple[torch.distributions.LowRankMultivariateNormal, torch.Size]:
    """``(flat, event_shape)``: the ``LowRankMultivariateNormal`` over the flattened event of an
    observation distribution, or a one-line :class:`ConfigError` for one that is not low rank."""
    if isinstance(d, LowRankNormal):
        return d.flat, d.event_shape
    if isinstance(d, torch.distributions.LowRankMultivariateNormal):
        return d, d.event_shape
    raise ConfigError(
        f"the observation distribution is a {type(d).__name__}; expected a low-rank normal "
        "(the sos-vae entry, or a LowRankMultivariateNormal)"
    )


def covariance_to(d, pixel: int) -> torch.Tensor:
    """Column ``pixel`` (an index into the flattened event) of the covariance ``P P^T + D``,
    shaped like the data ``[..., *event_shape]``, in O(n r); for a pixel-wise independent
    distribution the variance at ``pixel`` and zeros elsewhere."""
    event_shape = d.event_shape
    n = math.prod(event_shape)
    if not 0 <= pixel < n:
        raise ConfigError(f"pixel={pixel}; expected an index in [0, {n}) of the flattened image")
    try:
        flat, _ = low_rank(d)
    except ConfigError:
        variance = d.variance.reshape(d.batch_shape + (n,))
        column = torch.zeros_like(variance)
        column[..., pixel] = variance[..., pixel]
        return column.reshape(d.batch_shape + event_shape)
    P, D = flat.cov_factor, flat.cov_diag  # [..., n, r], [..., n]
    column = (P @ P[..., pixel, :].unsqueeze(-1)).squeeze(-1)  # [..., n]
    column[..., pixel] += D[..., pixel]
    return column.reshape(flat.batch_shape + event_shape)


def _signed(v: torch.Tensor) -> torch.Tensor:
    """Signed values per image mapped to [0, 1] with 0 at grey 0.5."""
    scale = v.flatten(1).abs().amax(1).clamp_min(1e-12).reshape((-1,) + (1,) * (v.dim() - 1))
    return 0.5 + 0.5 * v / scale


def figure(m, path, n: int = 8, pixel: Optional[int] = None, seed: int = 0):
    """The paper's Figure 2 for ``n`` prior draws of the zoo model ``m`` as one PNG, a column per
    draw: mean, a sample of p(x | z), their difference, the per-pixel variance and the covariance
    to ``pixel`` (default: the centre; signed rows have grey at 0). Returns the path."""
    from vaezoo.evaluation.figures import save_image_grid

    if len(m.data_shape) != 3:
        raise ShapeError(f"data of shape {tuple(m.data_shape)} are not images; expected (C, H, W)")
    c, h, w = m.data_shape
    pixel = (h // 2) * w + w // 2 if pixel is None else pixel
    with rng_scope(_device(m)):
        torch.manual_seed(seed)
        d = prior_observation(m, n)
        mean = d.mean
        sample = d.sample()
    variance = d.variance
    rows = [mean, sample, _signed(sample - mean), variance / variance.flatten(1).amax(1).clamp_min(1e-12).reshape(-1, 1, 1, 1),
            _signed(covariance_to(d, pixel))]
    return save_image_grid(torch.cat(rows), path, nrow=n)


# --------------------------------------------------------------------------------- noise space
def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    r"""Spherical interpolation (the paper's eq. 8) between ``a`` and ``b`` ``[..., r]`` at
    ``t  # [T]``: :math:`\frac{\sin((1-t)\Omega)}{\sin\Omega} a + \frac{\sin(t\Omega)}{\sin\Omega} b`,
    :math:`\cos\Omega = \hat a \cdot \hat b`. Where :math:`\sin\Omega` vanishes (identical or
    opposite directions, where eq. 8 divides 0 by 0) it is the linear interpolation, which is
    its limit for identical directions. Returns ``[T, ..., r]``."""
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device).reshape((-1,) + (1,) * a.dim())
    cos = (a * b).sum(-1, keepdim=True) / (a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True)).clamp_min(1e-30)
    omega = torch.arccos(cos.clamp(-1, 1))
    sin = torch.sin(omega)
    degenerate = sin.abs() < 1e-6
    safe = torch.where(degenerate, torch.ones_like(sin), sin)
    spherical = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / safe
    linear = (1 - t) * a + t * b
    return torch.where(degenerate, linear, spherical)


def _noise(flat, sample_shape, noise):
    if noise is not None:
        return noise
    return torch.randn(tuple(sample_shape) + tuple(flat.loc.shape), dtype=flat.loc.dtype, device=flat.loc.device)


def interpolate(d, eps0: torch.Tensor, eps1: torch.Tensor, t: torch.Tensor, noise: Optional[torch.Tensor] = None):
    r"""Eq. 4: :math:`x(t) = \mu + P\, \mathrm{slerp}(\epsilon_0, \epsilon_1, t) + \sqrt D \eta` with
    the low-rank noises ``eps0``, ``eps1`` ``[..., r]`` and one fixed pixel noise :math:`\eta`
    (``noise`` ``[..., n]``, drawn once if None). No decoder pass. Returns ``[T, ..., *event]``."""
    flat, event_shape = low_rank(d)
    eta = _noise(flat, (), noise)
    eps = slerp(eps0, eps1, t)  # [T, ..., r]
    x = flat.loc + (flat.cov_factor @ eps.unsqueeze(-1)).squeeze(-1) + flat.cov_diag.sqrt() * eta
    return x.reshape(x.shape[:-1] + event_shape)


def scale_component(d, eps: torch.Tensor, component: int, scale: float, noise: Optional[torch.Tensor] = None):
    r"""Eq. 5: with the SVD :math:`P = U S V^\top`, the sample
    :math:`x = \mu + U S \Lambda V^\top \epsilon + \sqrt D \eta` whose principal ``component``
    (0: the largest) is scaled by ``scale`` (:math:`\Lambda = I` but for that entry). Computed from
    the principal directions :math:`U` alone (``vaezoo.distributions.principal_directions``, a thin
    SVD in O(n r^2)), as :math:`P\epsilon + (\text{scale} - 1)\, u_k u_k^\top P \epsilon`.
    ``eps`` ``[..., r]``, ``noise`` ``[..., n]`` (zero pixel noise if None). Returns ``[..., *event]``."""
    flat, event_shape = low_rank(d)
    r = flat.cov_factor.shape[-1]
    if not 0 <= component < min(r, flat.cov_factor.shape[-2]):
        raise ConfigError(f"component={component}; expected an index in [0, {min(r, flat.cov_factor.shape[-2])})")
    U, _ = principal_directions(flat, k=component + 1)
    u = U[..., component]  # [..., n]
    p_eps = (flat.cov_factor @ eps.unsqueeze(-1)).squeeze(-1)  # [..., n]
    x = flat.loc + p_eps + (scale - 1) * u * (u * p_eps).sum(-1, keepdim=True)
    if noise is not None:
        x = x + flat.cov_diag.sqrt() * noise
    return x.reshape(x.shape[:-1] + event_shape)


def edit(d, mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    r"""Interactive editing (eqs. 6-7): the pixels where ``mask`` (bool, the event's shape, shared
    by the batch) is True are set to ``values`` (the data's shape ``[..., *event]``, read where
    ``mask`` is True), the others to their conditional mean
    :math:`\mu_u + \Sigma_{uo} \Sigma_{oo}^{-1} (x_o - \mu_o)`, by Woodbury in O(n r^2)
    (``vaezoo.distributions.conditional``; the conditional covariance is not formed).
    Returns ``[..., *event]``."""
    flat, event_shape = low_rank(d)
    if tuple(mask.shape) != tuple(event_shape) or mask.dtype != torch.bool:
        raise ShapeError(f"mask of shape {tuple(mask.shape)} and dtype {mask.dtype}; expected a bool mask of shape {tuple(event_shape)}")
    if tuple(values.shape[values.dim() - len(event_shape):]) != tuple(event_shape):
        raise ShapeError(f"values of shape {tuple(values.shape)}; expected [..., {', '.join(map(str, event_shape))}]")
    n = math.prod(event_shape)
    observed = mask.reshape(n).to(flat.loc.device)
    x_o = values.reshape(values.shape[: values.dim() - len(event_shape)] + (n,))[..., observed]
    rest = conditional(flat, observed, x_o.to(flat.loc))
    out = torch.empty(torch.broadcast_shapes(flat.loc.shape, rest.shape[:-1] + (n,)), dtype=flat.loc.dtype, device=flat.loc.device)
    out[..., observed] = x_o.to(out).expand(out.shape[:-1] + (int(observed.sum()),))
    out[..., ~observed] = rest
    return out.reshape(out.shape[:-1] + event_shape)


# --------------------------------------------------------------------------------- section 4.5
def fit_low_rank_normal(x: torch.Tensor, rank: int, steps: int = 2000, lr: float = 0.05, seed: int = 0):
    r"""The observational distribution without networks (section 4.5): one
    :math:`\mathcal N(\mu, P P^\top + \sigma^2 I)` over the flattened data ``x  # [N, *event]``,
    learned by maximum likelihood with Adam (full batch, ``steps`` steps). With an isotropic
    diagonal its optimum is probabilistic PCA's (Tipping and Bishop 1999), which PCA of the same
    rank gives in closed form: :func:`pca_normal`. Returns a :class:`LowRankNormal` with the
    data's event shape."""
    event_shape = tuple(x.shape[1:])
    flat = x.reshape(x.shape[0], -1)
    n = flat.shape[1]
    g = torch.Generator(device="cpu").manual_seed(seed)
    loc = torch.nn.Parameter(flat.mean(0).detach().clone())
    factor = torch.nn.Parameter((0.01 * torch.randn(n, rank, generator=g, dtype=torch.float64)).to(flat))
    log_var = torch.nn.Parameter(flat.var(0).mean().log().detach().clone())
    opt = torch.optim.Adam([loc, factor, log_var], lr=lr)
    for _ in range(steps):
        d = torch.distributions.LowRankMultivariateNormal(loc, factor, log_var.exp().expand(n))
        loss = -d.log_prob(flat).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return LowRankNormal(loc.detach().reshape(event_shape), factor.detach(), log_var.detach().exp().expand(n).clone(), len(event_shape))


def pca_normal(x: torch.Tensor, rank: int) -> LowRankNormal:
    r"""PCA of the same rank (scikit-learn) as a generative model: probabilistic PCA's
    :math:`\mathcal N(\bar x, W W^\top + \sigma^2 I)` with :math:`W = U_k (\Lambda_k - \sigma^2)^{1/2}`
    and :math:`\sigma^2` the mean of the discarded eigenvalues (``noise_variance_``), the model
    scikit-learn's ``PCA.score`` evaluates."""
    from sklearn.decomposition import PCA

    event_shape = tuple(x.shape[1:])
    flat = x.reshape(x.shape[0], -1).detach().cpu().double().numpy()
    pca = PCA(n_components=rank, svd_solver="full").fit(flat)
    scale = (pca.explained_variance_ - pca.noise_variance_).clip(min=0) ** 0.5
    W = torch.as_tensor(pca.components_.T * scale).to(x)  # [n, rank]
    loc = torch.as_tensor(pca.mean_).to(x).reshape(event_shape)
    diag = torch.full((W.shape[0],), float(pca.noise_variance_), dtype=x.dtype, device=x.device)
    return LowRankNormal(loc, W, diag, len(event_shape))


def observational_figure(x: torch.Tensor, rank: int, path, n: int = 8, steps: int = 2000, seed: int = 0):
    """Section 4.5's figure as one PNG: a row of ``n`` samples of :func:`fit_low_rank_normal` on
    the images ``x`` above a row of ``n`` samples of :func:`pca_normal` of the same rank."""
    from vaezoo.evaluation.figures import save_image_grid

    learned, pca = fit_low_rank_normal(x, rank, steps=steps, seed=seed), pca_normal(x, rank)
    with rng_scope(x.device):
        torch.manual_seed(seed)
        rows = torch.cat([learned.sample((n,)), pca.sample((n,))])
    return save_image_grid(rows, path, nrow=n)


def read_png(path, shape: Sequence[int]) -> torch.Tensor:
    """A PNG as a float tensor of the data's ``shape`` ``(C, H, W)`` in [0, 1] (grey for C = 1,
    RGB for C = 3), or a one-line :class:`ShapeError` when its size differs."""
    import numpy as np
    from PIL import Image

    c, h, w = shape

    def unreadable(e):
        return ConfigError(f"cannot read {str(path)!r} as a PNG image ({type(e).__name__}); expected a PNG file")

    try:
        img = Image.open(path)  # reads the header only: the size is checked before any pixel is decoded
    except Image.DecompressionBombError:  # Pillow's guard against images too large to decode
        raise ConfigError(f"{str(path)!r} is too large an image to decode (over {2 * Image.MAX_IMAGE_PIXELS:,} pixels); "
                          f"expected a {w}x{h} PNG, the data's size") from None
    except (OSError, ValueError) as e:
        raise unreadable(e) from None
    if img.size != (w, h):
        raise ShapeError(f"{str(path)!r} is {img.size[0]}x{img.size[1]} pixels; expected {w}x{h}, the data's size")
    try:
        img = img.convert("L" if c == 1 else "RGB")
    except (OSError, ValueError) as e:
        raise unreadable(e) from None
    arr = torch.as_tensor(np.asarray(img, dtype=np.float32) / 255.0)
    return arr.unsqueeze(0) if c == 1 else arr.permute(2, 0, 1)


@torch.no_grad()
def edit_from_png(m, mask_path, values_path, n: int = 8, seed: int = 0) -> torch.Tensor:
    """Edits ``n`` prior draws of the zoo model ``m``: the pixels white in the mask PNG take the
    values PNG's grey levels, the others their conditional mean (:func:`edit`). Returns the means
    above the edited images, ``[2 n, *data_shape]``, for a PNG grid of ``n`` columns."""
    if len(m.data_shape) != 3:
        raise ShapeError(f"data of shape {tuple(m.data_shape)} are not images; expected (C, H, W)")
    mask = read_png(mask_path, m.data_shape) > 0.5
    values = read_png(values_path, m.data_shape)
    with rng_scope(_device(m)):
        torch.manual_seed(seed)
        d = prior_observation(m, n)
    return torch.cat([d.mean, edit(d, mask, values.to(d.mean))])
