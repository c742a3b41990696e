"""Deconvolutional decoder of the spatial VAEs: it starts from latent feature maps ``[c, d, d]``
rather than a vector, so it needs no fully connected layer and only the up-sampling stages
from ``d`` to the image size (Wang, Yuan & Ji 2017, ``papers/spatial-vae-matrix-normal.txt``)."""

from typing import Sequence, Tuple

import torch
from torch import nn

from vaezoo.errors import ConfigError


def upsampling_stages(map_size: int, image_size: int) -> int:
    """``k`` with ``image_size == map_size * 2**k``, or a one-line :class:`ConfigError`."""
    k, size = 0, max(map_size, 1)
    while size < image_size:
        size, k = 2 * size, k + 1
    if map_size < 1 or size != image_size:
        raise ConfigError(
            f"map_size={map_size} cannot be up-sampled to {image_size}x{image_size} images by doublings; "
            f"expected a map_size d with {image_size} = d * 2^k"
        )
    return k


class DeconvDecoder(nn.Module):
    """``[..., c, d, d] -> [..., *out_shape]`` for ``out_shape = (C, H, H)`` with ``H = d 2^k``:
    conv(3x3, ``width``) on the maps, then ``k`` stride-2 transposed convolutions (4x4, as in
    :class:`vaezoo.nets.ConvDecoder`) halving the width at each stage (at least 16 channels), the last
    one giving the ``C`` output channels (a 3x3 convolution does when ``k = 0``).

    It is :class:`ConvDecoder` with its fully connected layers replaced by one convolution on the
    latent maps: a latent feature map keeps its locations, so nothing has to learn to place them."""

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], width: int = 64):
        super().__init__()
        c, d, d2 = self.in_shape = tuple(int(s) for s in in_shape)
        channels, h, w = self.out_shape = tuple(int(s) for s in out_shape)
        if d != d2 or h != w:
            raise ConfigError(f"the deconvolutional decoder needs square maps and images, got maps {d}x{d2} for images {h}x{w}")
        stages = upsampling_stages(d, h)
        widths = [width] + [max(width // 2**i, 16) for i in range(1, stages)] + [channels]
        layers = [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
        for i in range(stages):
            layers.append(nn.ConvTranspose2d(widths[i], widths[i + 1], 4, 2, 1))
            if i < stages - 1:
                layers.append(nn.ReLU())
        if not stages:
            layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # z [..., c, d, d]
        batch: Tuple[int, ...] = z.shape[:-3]
        return self.net(z.reshape((-1,) + self.in_shape)).reshape(batch + self.out_shape)
