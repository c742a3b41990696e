"""The SOS-VAE decoder (``papers/sos-vae-low-rank-observations.txt``): a trunk giving features at
every position of the datapoint, and per-position heads for the mean, the low-rank covariance
factor and the diagonal of the observation distribution."""

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class ObservationHeads(nn.Module):
    r"""``[..., latent_dim] -> (loc, cov_factor, cov_diag)`` for data of shape ``(C, *rest)``.

    ``trunk`` maps latents to features ``[..., features, *rest]``; after ``activation``, three
    linear maps applied at every position of ``rest`` (the 1x1 convolutions of the paper's code)
    give ``loc`` ``[..., C, *rest]``, the factor :math:`P` ``[..., n, rank]`` (``n = C prod(rest)``,
    flattened as the data are) and the diagonal :math:`D`. :math:`D` is ``cov_diag`` fixed, or
    ``cov_diag + softplus(head)`` when ``learn_diag`` (``cov_diag`` is then its floor). With
    ``rank=0`` there is no factor (``cov_factor`` is None) and :math:`D` has the data's shape: the
    pixel-wise independent baseline.

    Warm-up (section 3.3 of the paper): while :meth:`set_epoch` has announced an epoch
    ``<= warmup_epochs`` the variance heads (factor and learned diagonal) receive no gradient and
    keep their initial values; the trunk and the mean head train. The Trainer announces every
    epoch; a decoder that was never told an epoch (Pyro's SVI, a hand-written loop) trains all its
    heads. The switch is a buffer read by tensor operations, so a compiled objective
    (``compile=True``) follows it.

    Initialization: the mean head's bias is 0.5, the middle of the data's [0, 1] range, with
    PyTorch's default weights (the paper's code scales them down to N(0, 1e-5), which starves the
    trunk of gradient at the start); the factor head starts small (N(0, 1e-3) weights, zero bias),
    a covariance close to ``cov_diag`` but not at the saddle point P = 0, where the gradient
    with respect to P vanishes.
    """

    def __init__(self, trunk: nn.Module, data_shape: Tuple[int, ...], features: int, rank: int,
                 cov_diag: float, learn_diag: bool = False, warmup_epochs: int = 0, activation: str = "relu"):
        super().__init__()
        self.trunk = trunk
        self.data_shape = tuple(data_shape)
        self.channels, self.rest = self.data_shape[0], self.data_shape[1:]
        self.rank = rank
        self.cov_diag = float(cov_diag)
        self.warmup_epochs = warmup_epochs
        self.activation = {"relu": F.relu, "tanh": torch.tanh, "elu": F.elu, "softplus": F.softplus}[activation]
        c = self.channels
        self.loc_head = nn.Linear(features, c)
        nn.init.constant_(self.loc_head.bias, 0.5)
        self.factor_head: Optional[nn.Linear] = None
        if rank > 0:
            self.factor_head = nn.Linear(features, c * rank)
            nn.init.normal_(self.factor_head.weight, std=1e-3)
            nn.init.zeros_(self.factor_head.bias)
        self.diag_head: Optional[nn.Linear] = None
        if learn_diag:
            self.diag_head = nn.Linear(features, c)
            # softplus(raw) starts at cov_diag: D starts at twice the floor
            nn.init.zeros_(self.diag_head.weight)
            nn.init.constant_(self.diag_head.bias, math.log(math.expm1(self.cov_diag)))
        # 1.0: the variance heads train; 0.0: frozen (warm-up). Not persistent: set_epoch derives
        # it from the epoch, which the Trainer's checkpoint holds.
        self.register_buffer("variance_trains", torch.ones(()), persistent=False)

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer at the start of every epoch (1, 2, ...)."""
        self.variance_trains.fill_(0.0 if epoch <= self.warmup_epochs else 1.0)

    def _variance_head(self, head: nn.Linear, h: torch.Tensor) -> torch.Tensor:
        # weights that keep their value but pass no gradient while variance_trains is 0; the
        # trunk still gets the gradient through them
        t = self.variance_trains.to(h.dtype)
        weight = t * head.weight + (1 - t) * head.weight.detach()
        bias = t * head.bias + (1 - t) * head.bias.detach()
        return F.linear(h, weight, bias)

    def _to_data_layout(self, out: torch.Tensor, k: int) -> torch.Tensor:
        """``[..., *rest, C * k]`` -> ``[..., C, *rest, k]``."""
        out = out.reshape(out.shape[:-1] + (self.channels, k))
        return out.movedim(-2, -2 - len(self.rest))

    def forward(self, z: torch.Tensor):
        batch = z.shape[:-1]
        h = self.activation(self.trunk(z))  # [..., features, *rest]
        h = h.movedim(-1 - len(self.rest), -1)  # [..., *rest, features]
        loc = self._to_data_layout(self.loc_head(h), 1).squeeze(-1)  # [..., C, *rest]
        n = math.prod(self.data_shape)
        cov_factor = None
        if self.factor_head is not None:
            factor = self._to_data_layout(self._variance_head(self.factor_head, h), self.rank)
            cov_factor = factor.reshape(batch + (n, self.rank))  # [..., n, r]
        if self.diag_head is not None:
            raw = self._to_data_layout(self._variance_head(self.diag_head, h), 1).squeeze(-1)
            diag = F.softplus(raw) + self.cov_diag  # [..., C, *rest]
        else:
            diag = loc.new_full((), self.cov_diag).expand(loc.shape)
        if cov_factor is not None:
            diag = diag.reshape(batch + (n,))
        return loc, cov_factor, diag
