"""The dataset type that :func:`vaezoo.data.load` returns, and its binarization modes."""

import torch
from torch.utils.data import Dataset

from vaezoo.errors import ConfigError

BINARIZE_MODES = (None, "dynamic", "fixed")


def check_binarize(binarize):
    """Return ``binarize`` if it is a known mode, else raise :class:`ConfigError`."""
    if binarize is not None and not (isinstance(binarize, str) and binarize in BINARIZE_MODES):
        raise ConfigError(f"binarize={binarize!r} is not a binarization mode; expected None, 'dynamic' or 'fixed'")
    return binarize


def fixed_binarization(data, seed):
    """One Bernoulli draw of the intensities ``data`` from a ``torch.Generator`` seeded with ``seed``."""
    generator = torch.Generator(device=data.device).manual_seed(seed)
    return torch.bernoulli(data, generator=generator)


class ImageDataset(Dataset):
    """Images with labels, held in memory as one tensor.

    Attributes:
        data: float32 tensor ``[N, C, H, W]`` with values in [0, 1]; with ``binarize="fixed"`` it
            holds the one seeded binarization (values 0 and 1), otherwise the intensities.
        targets: int64 tensor ``[N]`` of labels.
        binarize: ``None`` (intensities), ``"dynamic"`` (a new Bernoulli draw of the intensities
            each time an item is read; a trainer that reads :attr:`data` directly draws per batch
            itself) or ``"fixed"`` (binarized once, reproducibly from the seed).
        name, split: the dataset name and split (``"train"`` or ``"test"``).
    """

    def __init__(self, data, targets, name, split, binarize=None):
        if data.dim() != 4:
            raise ValueError(f"data must have shape [N, C, H, W], got {tuple(data.shape)}")
        if targets.shape != data.shape[:1]:
            raise ValueError(f"targets must have shape [{data.shape[0]}], got {tuple(targets.shape)}")
        self.data = data
        self.targets = targets
        self.name = name
        self.split = split
        self.binarize = check_binarize(binarize)

    @property
    def shape(self):
        """The shape ``(C, H, W)`` of one image."""
        return tuple(self.data.shape[1:])

    def __len__(self):
        return self.data.shape[0]

    def __getitem__(self, index):
        x = self.data[index]
        if self.binarize == "dynamic":
            x = torch.bernoulli(x)
        return x, self.targets[index]

    def __repr__(self):
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, binarize={self.binarize!r}, "
            f"n={len(self)}, shape={self.shape})"
        )
