"""Convolutional encoder and decoder for images whose height and width are multiples of 4
(8x8 digits, 28x28 MNIST, 32x32 CIFAR, 64x64 CelebA): two stride-2 convolutions each way."""

from typing import Sequence

import torch
from torch import nn

from vaezoo.errors import ConfigError


def _check(shape):
    if len(shape) != 3:
        raise ConfigError(
            f"the convolutional nets need image data of shape (C, H, W), got shape {shape}; "
            "use the MLP nets (net=mlp) for vectors and sequences"
        )
    c, h, w = shape
    if h % 4 or w % 4:
        raise ConfigError(f"the convolutional nets need height and width divisible by 4, got {h}x{w}; use the MLP nets (net=mlp)")
    return c, h, w


class ConvEncoder(nn.Module):
    """``[B, C, H, W] -> [B, out_features]``: conv(32, 4, s2) - conv(64, 4, s2) - linear(hidden)."""

    def __init__(self, in_shape: Sequence[int], out_features: int, channels=(32, 64), hidden: int = 256):
        super().__init__()
        c, h, w = _check(tuple(in_shape))
        self.in_shape = (c, h, w)
        c1, c2 = channels
        self.net = nn.Sequential(
            nn.Conv2d(c, c1, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 4, 2, 1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c2 * (h // 4) * (w // 4), hidden),
            nn.ReLU(),
            nn.Linear(hidden, out_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-3]
        return self.net(x.reshape((-1,) + self.in_shape)).reshape(batch + (-1,))


class ConvDecoder(nn.Module):
    """``[..., in_features] -> [..., *out_shape]``, mirroring :class:`ConvEncoder`."""

    def __init__(self, in_features: int, out_shape: Sequence[int], channels=(64, 32), hidden: int = 256):
        super().__init__()
        c, h, w = _check(tuple(out_shape))
        self.out_shape = (c, h, w)
        c1, c2 = channels
        self.seed_shape = (c1, h // 4, w // 4)
        self.fc = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, c1 * (h // 4) * (w // 4)), nn.ReLU()
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(c1, c2, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(c2, c, 4, 2, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]
        h = self.fc(z.reshape(-1, z.shape[-1])).reshape((-1,) + self.seed_shape)
        return self.deconv(h).reshape(batch + self.out_shape)
