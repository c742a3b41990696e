"""Multi-layer perceptrons; the defaults are the networks of Burda et al. (2016): two
deterministic layers of 200 tanh units between the data and 50 latents."""

from typing import Sequence

import torch
from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "softplus": nn.Softplus}


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


class MLP(nn.Sequential):
    """``in_features -> hidden[0] -> ... -> out_features`` with an activation after every hidden
    layer. Acts on the last dimension, so any leading (particle, batch) dimensions pass through."""

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int, activation: str = "tanh"):
        act = ACTIVATIONS[activation]
        layers, width = [], in_features
        for h in hidden:
            layers += [nn.Linear(width, h), act()]
            width = h
        layers.append(nn.Linear(width, out_features))
        super().__init__(*layers)


class MLPEncoder(nn.Module):
    """Flattens data ``[..., *in_shape]`` (images, vectors, sequences) and maps them to
    ``[..., out_features]``."""

    def __init__(self, in_shape: Sequence[int], hidden: Sequence[int], out_features: int, activation: str = "tanh"):
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.net = MLP(_prod(in_shape), hidden, out_features, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[: x.dim() - len(self.in_shape)] + (-1,)))


class MLPDecoder(nn.Module):
    """Maps latents ``[..., in_features]`` to outputs ``[..., *out_shape]`` of the data's shape."""

    def __init__(self, in_features: int, hidden: Sequence[int], out_shape: Sequence[int], activation: str = "tanh"):
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.net = MLP(in_features, hidden, _prod(out_shape), activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).reshape(z.shape[:-1] + self.out_shape)
