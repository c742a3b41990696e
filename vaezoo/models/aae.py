"""Decoders of adversarial autoencoders: z ~ N(0, I), x | z ~ likelihood(decoder(alpha * z)) with an
optional trainable mask alpha over the latent dimensions (MaskAAE, Mondal et al.)."""

from typing import Optional

import pyro
import torch
from torch import nn

from vaezoo.models.likelihoods import Likelihood
from vaezoo.models.vae import VAEModel
from vaezoo.traces import data_plate

#: a dimension is active while its mask value is at least this (the released code's threshold)
ACTIVE_THRESHOLD = 0.1


class _AtLeastZero(torch.autograd.Function):
    """max(m, 0) whose gradient is that of projected gradient descent on m >= 0 (the paper clips m
    after each step): it passes wherever m > 0, and at a clipped m only in the direction that
    opens it (a descent step along -grad raises m). ``clamp`` would send no gradient there, so a
    dimension closed once, by early noise, could never reopen."""

    @staticmethod
    def forward(ctx, m):
        ctx.save_for_backward(m)
        return m.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (m,) = ctx.saved_tensors
        return torch.where((m > 0) | (grad < 0), grad, torch.zeros_like(grad))


class LatentMask(nn.Module):
    """MaskAAE's relaxed binary mask alpha = 1 - exp(-m), m >= 0 (``[latent_dim]``), m drawn from
    U(0, ``init_high``) by ``torch``'s global generator. m is clamped at 0 in the forward pass rather
    than clipped after each step, because the Trainer's optimizer steps it; the clamp's gradient is
    projected gradient descent's, so a closed dimension (m <= 0) reopens when the loss asks it to."""

    def __init__(self, latent_dim: int, init_high: float = 5.0, rate: float = 1.0):
        super().__init__()
        self.rate = float(rate)
        self.raw = nn.Parameter(torch.rand(latent_dim) * init_high / self.rate)
        self.frozen = False  # alpha without a gradient (MaskAAE's warm-up sets it)

    @property
    def m(self) -> torch.Tensor:
        """m = ``rate`` x the parameter: with one optimizer for the whole pair, ``rate`` is the
        mask's learning rate relative to the networks' (the paper gives the mask its own)."""
        return self.raw * self.rate

    def alpha(self) -> torch.Tensor:
        m = self.m.detach() if self.frozen else self.m
        return 1 - torch.exp(-_AtLeastZero.apply(m))

    def active(self) -> torch.Tensor:
        """Number of active dimensions, as a tensor of the mask's dtype."""
        return (self.alpha() >= ACTIVE_THRESHOLD).sum().to(self.m.dtype)


class OpenMask(nn.Module):
    """The mask held fully open, alpha = 1 (``[latent_dim]``), with no parameter: MaskAAE's own
    architecture without the mask's training (``mask-aae-open``, the paper's baseline). alpha is a
    buffer of ones, so the decoder and the critic see exactly ``1 * z``."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.register_buffer("ones", torch.ones(latent_dim))
        self.frozen = True  # nothing to train (read by MaskAAE's warm-up, a no-op here)

    def alpha(self) -> torch.Tensor:
        return self.ones

    def active(self) -> torch.Tensor:
        return (self.ones >= ACTIVE_THRESHOLD).sum().to(self.ones.dtype)


class MaskedDecoderModel(VAEModel):
    """The :class:`VAEModel` whose decoder sees ``mask.alpha() * z`` (a :class:`LatentMask` or an
    :class:`OpenMask`; the plain decoder without a mask): site ``"z"`` ``[..., B, latent_dim]`` ~ N(0, I), observation ``"x"``."""

    def __init__(self, decoder: nn.Module, likelihood: Likelihood, latent_dim: int, mask: Optional[nn.Module] = None):
        super().__init__(decoder, likelihood, latent_dim)
        self.mask = mask

    def forward(self, x: torch.Tensor) -> None:
        with data_plate(x):
            z = pyro.sample("z", self.prior(x))
            if self.mask is not None:
                z = z * self.mask.alpha()
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)
