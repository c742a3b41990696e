"""Kernel two-sample divergences between latent codes and prior draws: the MMD^2 with the sum of
inverse multiquadratic kernels of WAE-MMD (Tolstikhin et al. 2018), used by
:class:`~vaezoo.inference.adversarial.WAEMMD` and by the ELBO's ``mmd_weight`` term (InfoVAE)."""

from __future__ import annotations

from typing import Sequence

import torch

#: the scales of the IMQ kernel of Tolstikhin et al. (2018), times 2 * latent_dim * prior variance
IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def imq_kernel(sq_dist: torch.Tensor, scale) -> torch.Tensor:
    """k(a_i, b_j) = C / (C + |a_i - b_j|^2) with C = ``scale`` (a number, or a tensor of them that
    broadcasts against ``sq_dist``), from the squared distances ``sq_dist[i, j] = |a_i - b_j|^2``."""
    return scale / (scale + sq_dist)


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[N, D], [M, D] -> [N, M]``: |a_i - b_j|^2 by one matrix product, as ``torch.cdist`` takes
    it for batches this size, without its square root (and that root's backward)."""
    sq = a.square().sum(-1, keepdim=True) + b.square().sum(-1) - 2 * a @ b.T
    return sq.clamp_min(0)


def mmd_imq(q: torch.Tensor, p: torch.Tensor, prior_variance: float = 1.0, scales: Sequence[float] = IMQ_SCALES) -> torch.Tensor:
    """The unbiased estimate of MMD^2 between samples ``q  # [N, D]`` and ``p  # [N, D]`` with the
    sum of IMQ kernels of WAE-MMD, C = 2 D s prior_variance for each s in ``scales``. The three
    distance matrices are taken once, and every scale at once: with ``cdist`` and a kernel per scale,
    the term took as long as the rest of a step of the InfoVAE's MLP `vae`."""
    n, d = q.shape
    off = 1 - torch.eye(n, device=q.device, dtype=q.dtype)  # the unbiased estimate drops i == j
    c = (2.0 * d * prior_variance) * torch.tensor(scales, device=q.device, dtype=q.dtype)[:, None, None]
    qq, pp, qp = (imq_kernel(_squared_distances(a, b), c).sum(0) for a, b in ((q, q), (p, p), (q, p)))
    return ((qq + pp) * off).sum() / (n * (n - 1)) - 2 * qp.mean()
