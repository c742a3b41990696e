"""The synthetic benchmark of MaskAAE (Mondal et al., section 5.1): z ~ N(0, I_n) pushed through a
fixed random two-layer leaky-ReLU network to 128 dimensions, so the data have true dimension n."""

from typing import Optional

import torch

from vaezoo.data.dataset import ImageDataset
from vaezoo.arguments import check_int
from vaezoo.errors import ConfigError

#: the data dimension of the paper
DATA_DIM = 128
NUM_TRAIN, NUM_TEST = 20000, 5000
#: leaky-ReLU slope; nonzero, so the generator is injective almost surely and its Jacobian has rank n
SLOPE = 0.2


class SyntheticGenerator(torch.nn.Module):
    """x = f(z) = lrelu(W2 lrelu(W1 z + b1) + b2), ``z  # [..., true_dim]`` -> ``[..., data_dim]``,
    with weights drawn once from ``seed`` (He-scaled normals, so every layer keeps unit scale)."""

    def __init__(self, true_dim: int, seed: int = 0, hidden: int = DATA_DIM, data_dim: int = DATA_DIM):
        super().__init__()
        g = torch.Generator().manual_seed(int(seed))
        gain = (2.0 / (1.0 + SLOPE**2)) ** 0.5
        self.register_buffer("w1", torch.randn(hidden, true_dim, generator=g, dtype=torch.float64) * gain / true_dim**0.5)
        self.register_buffer("b1", 0.1 * torch.randn(hidden, generator=g, dtype=torch.float64))
        self.register_buffer("w2", torch.randn(data_dim, hidden, generator=g, dtype=torch.float64) * gain / hidden**0.5)
        self.register_buffer("b2", 0.1 * torch.randn(data_dim, generator=g, dtype=torch.float64))
        self.true_dim = int(true_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lrelu = torch.nn.functional.leaky_relu
        h = lrelu(z @ self.w1.to(z).T + self.b1.to(z), SLOPE)
        return lrelu(h @ self.w2.to(z).T + self.b2.to(z), SLOPE)


class SyntheticDataset(ImageDataset):
    """``data``: float32 ``[N, 128]`` (or ``[N, 1, 8, 16]`` with ``image=True``), ``latents``: the
    true codes ``[N, n]``; ``targets`` are zeros (no labels). Same seed, same data, offline. An
    :class:`ImageDataset` in all but the image shape (its checks are skipped): never binarized."""

    def __init__(self, data, latents, split, true_dim, seed):
        self.data, self.latents, self.split, self.binarize = data, latents, split, None
        self.targets = torch.zeros(data.shape[0], dtype=torch.int64)
        self.name, self.true_dim, self.seed = "synthetic", true_dim, seed


def load(split: str = "train", seed: int = 0, true_dim: int = 4, num_samples: Optional[int] = None, image: bool = False,
         **unknown) -> SyntheticDataset:
    """The ``split`` of the synthetic data of true dimension ``true_dim`` whose generator is drawn
    from ``seed``; train and test hold distinct draws of z (20000 and 5000 by default)."""
    if unknown:
        raise ConfigError(f"dataset 'synthetic' has no option {next(iter(unknown))!r}; expected true_dim, num_samples or image")
    if not isinstance(image, bool):
        raise ConfigError(f"image={image!r}; expected true or false")
    check_int("seed", seed, 0, 2**32 - 1)
    check_int("true_dim", true_dim, 1, DATA_DIM)
    n = {"train": NUM_TRAIN, "test": NUM_TEST}[split] if num_samples is None else check_int("num_samples", num_samples, 1, 10**7)
    f = SyntheticGenerator(true_dim, seed)
    # the latents of each split from their own stream, so that train and test never share a draw
    g = torch.Generator().manual_seed(int(seed) * 2 + (split == "test") + 1_000_003)
    z = torch.randn(n, true_dim, generator=g, dtype=torch.float64)
    with torch.no_grad():
        x = f(z).to(torch.float32)
    if image:
        x = x.reshape(n, 1, 8, 16)
    return SyntheticDataset(x, z.to(torch.float32), split, true_dim, seed)
