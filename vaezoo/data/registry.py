"""The dataset registry: :func:`load` a dataset by name, :func:`names` lists them."""

import os

import numpy as np
import torch

from vaezoo.data import colour, digits, embedded, mnist, synthetic
from vaezoo.data.dataset import ImageDataset, check_binarize, fixed_binarization
from vaezoo.data.paths import resolve_data_dir
from vaezoo.errors import ConfigError, UnknownNameError

SPLITS = ("train", "test")

DESCRIPTIONS = {
    "mnist": "MNIST, 60000/10000 digits of 1x28x28 (IDX files in <data dir>/mnist/, downloaded if missing)",
    "fashion-mnist": "Fashion-MNIST, 60000/10000 clothes of 1x28x28 (IDX files in <data dir>/fashion-mnist/)",
    "mnist-small": "the first 10000/2000 MNIST digits of 1x28x28, shipped with vaezoo (no download)",
    "digits": "scikit-learn's 1500/297 digits of 1x8x8 (shipped with scikit-learn)",
    "synthetic": "MaskAAE's synthetic data: 20000/5000 vectors of 128 with true dimension true_dim (generated offline)",
    "cifar10": "CIFAR-10, 50000/10000 colour images of 3x32x32 (torchvision, the vision extra; <data dir>/cifar-10-batches-py/)",
    "celeba": "CelebA, 162770/19962 faces centre-cropped to 108x108 and resized to 3x64x64 (torchvision, the vision extra; "
              "<data dir>/celeba/)",
}


def names():
    """The names of the datasets :func:`load` knows, sorted."""
    return sorted(DESCRIPTIONS)


def _arrays(name, split, data_dir, download):
    """Images ``[N, H, W]`` or ``[N, C, H, W]`` (uint8 0..255 or float32 in [0, 1]) and labels of a dataset split."""
    if name in colour.LOADERS:
        return colour.LOADERS[name](split, resolve_data_dir(data_dir), download=download)
    if name in mnist.SOURCES:
        return mnist.load_arrays(mnist.SOURCES[name], split, resolve_data_dir(data_dir), download=download)
    if name == "mnist-small":
        return embedded.load_arrays(split)
    return digits.load_arrays(split)


def _to_tensors(images, labels):
    """Float32 ``[N, C, H, W]`` intensities in [0, 1] (C = 1 for images ``[N, H, W]``) and int64 labels ``[N]``."""
    if images.dtype == np.uint8:
        data = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)
    else:
        data = torch.tensor(images, dtype=torch.float32)
    targets = torch.tensor(labels, dtype=torch.int64)
    return (data.unsqueeze(1) if data.dim() == 3 else data), targets


def load(name, split="train", binarize=None, data_dir=None, seed=0, *, download=True, **options):
    """Load a dataset split as an :class:`ImageDataset` of float32 images ``[N, C, H, W]`` in [0, 1].

    Args:
        name: one of :func:`names` (``"mnist"``, ``"fashion-mnist"``, ``"mnist-small"``, ``"digits"``,
            ``"synthetic"``, and the colour ``"cifar10"`` and ``"celeba"``, which need torchvision:
            ``pip install vaezoo[vision]``).
        split: ``"train"`` or ``"test"``.
        binarize: ``None`` keeps the intensities; ``"dynamic"`` keeps them too, and each read of an
            item (or each batch, in the trainer) draws a fresh Bernoulli binarization; ``"fixed"``
            binarizes once with a ``torch.Generator`` seeded with ``seed`` (the protocol of Burda et
            al. 2016 for the test set), so the same seed gives the same binary images.
        data_dir: folder holding ``mnist/`` and ``fashion-mnist/``, and torchvision's
            ``cifar-10-batches-py/`` and ``celeba/`` (it is their torchvision ``root``); default ``$VAEZOO_DATA_DIR``,
            else ``$XDG_CACHE_HOME/vaezoo`` (``~/.cache/vaezoo``). Unused by the embedded datasets.
        seed: the seed of the ``"fixed"`` binarization.
        options: dataset options, for ``"synthetic"`` only: ``true_dim``, ``num_samples``,
            ``image`` (see :func:`vaezoo.data.synthetic.load`; ``seed`` seeds its generator).
        download: fetch missing MNIST/Fashion-MNIST files from the mirrors in
            :data:`vaezoo.data.download.MIRRORS`, and CIFAR-10/CelebA through torchvision (whose
            download also checks their MD5 sums); if false, a missing file raises at once.

    Raises:
        UnknownNameError: an unknown dataset name.
        ConfigError: an unknown split or binarization mode, or a seed that is not an integer.
        DataError: files that are missing and cannot be downloaded, corrupt, or fail their checksum.
        MissingDependencyError: CIFAR-10 or CelebA without torchvision.
    """
    if not isinstance(name, str) or name not in DESCRIPTIONS:
        raise UnknownNameError(f"unknown dataset {name!r}; expected one of {', '.join(names())}")
    if not isinstance(split, str) or split not in SPLITS:
        raise ConfigError(f"split={split!r} is not a split; expected 'train' or 'test'")
    check_binarize(binarize)
    if name == "synthetic" or options:
        if name != "synthetic":
            raise ConfigError(f"dataset {name!r} takes no option {next(iter(options))!r}; only 'synthetic' takes options")
        return synthetic.load(split, seed=seed, **options)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed={seed!r} is not an integer; expected an int seed for binarize='fixed'")
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise ConfigError(f"data_dir={data_dir!r} is not a path; expected a str or os.PathLike folder")

    data, targets = _to_tensors(*_arrays(name, split, data_dir, download))
    if binarize == "fixed":
        data = fixed_binarization(data, int(seed))
    return ImageDataset(data, targets, name=name, split=split, binarize=binarize)
