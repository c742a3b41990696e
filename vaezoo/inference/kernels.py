"""Kernel two-sample divergences between latent codes and prior draws: the MMD^2 with the sum of
inverse multiquadratic kernels of WAE-MMD (Tolstikhin et al. 2018), used by
:class:`~vaezoo.inference.adversarial.WAEMMD` and by the ELBO's ``mmd_weight`` term (InfoVAE)."""

from __future__ import annotations

from typing import Sequence

import torch

#: the scales of the IMQ kernel of Tolstikhin et al. (2018), times 2 * latent_dim * prior variance
IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def imq_kernel(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """k(a_i, b_j) = C / (C + |a_i - b_j|^2) with C = ``scale``: ``[N, D], [M, D] -> [N, M]``."""
    return scale / (scale + torch.cdist(a, b).square())


def mmd_imq(q: torch.Tensor, p: torch.Tensor, prior_variance: float = 1.0, scales: Sequence[float] = IMQ_SCALES) -> torch.Tensor:
    """The unbiased estimate of MMD^2 between samples ``q  # [N, D]`` and ``p  # [N, D]`` with the
    sum of IMQ kernels of WAE-MMD, C = 2 D s prior_variance for each s in ``scales``."""
    n, d = q.shape
    off = 1 - torch.eye(n, device=q.device, dtype=q.dtype)  # the unbiased estimate drops i == j
    total = q.new_zeros(())
    for s in scales:
        c = 2.0 * d * prior_variance * s
        total = total + ((imq_kernel(q, q, c) + imq_kernel(p, p, c)) * off).sum() / (n * (n - 1))
        total = total - 2 * imq_kernel(q, p, c).mean()
    return total
