"""Datasets as in-memory torch Datasets of [C, H, W] float images (MNIST, Fashion-MNIST, digits, and
CIFAR-10 and CelebA through torchvision)."""

from vaezoo.data.dataset import ImageDataset
from vaezoo.data.paths import resolve_data_dir, user_cache_dir
from vaezoo.data.registry import load, names

__all__ = ["ImageDataset", "load", "names", "resolve_data_dir", "user_cache_dir"]
