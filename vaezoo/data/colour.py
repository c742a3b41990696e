"""CIFAR-10 and CelebA through torchvision (the ``vision`` extra): read from torchvision's own layout
under the data dir, or downloaded by torchvision, as uint8 colour images ``[N, 3, H, W]``."""

from pathlib import Path

import numpy as np

from vaezoo.data import cache
from vaezoo.data.download import describe
from vaezoo.errors import DataError, MissingDependencyError

# CelebA's aligned images are 178x218 (w x h) with the face centred: the central 108x108 square
# keeps the face and little background, and is resized to 64x64 (the crop of DCGAN's CelebA code,
# which most VAE work of the spatial-VAE paper's time followed; the paper itself gives only 64x64)
CELEBA_CROP = 108
CELEBA_SIZE = 64
FOLDERS = {"cifar10": "cifar-10-batches-py", "celeba": "celeba"}  # torchvision's, under its root
SPLITS = {"cifar10": {"train": True, "test": False}, "celeba": {"train": "train", "test": "test"}}


def _torchvision(name):
    try:
        import torchvision
    except ImportError:
        raise MissingDependencyError(f"dataset {name!r} needs torchvision; expected it installed "
                                     "(pip install vaezoo[vision])") from None
    return torchvision


def _open(name, make, root: Path, download: bool):
    """``make()``, the torchvision dataset, with its refusals as one-line :class:`DataError`."""
    folder = root / FOLDERS[name]
    if not download and not folder.is_dir():
        raise DataError(f"no {name} data in {folder}; expected torchvision's files there "
                        f"(download=True, or let vaezoo train download them)")
    try:
        return make()
    # torchvision raises RuntimeError for missing or corrupt files (failed MD5 sums) and OSError
    # for a failed download; the call holds no user code, so both mean "the files are not right"
    except (RuntimeError, OSError) as err:
        raise DataError(f"{name} in {folder}: {describe(err)}") from err


def load_cifar10(split, root, download=True):
    """CIFAR-10's 50000/10000 images ``[N, 3, 32, 32]`` (uint8) and labels, from
    ``root/cifar-10-batches-py/`` (torchvision's layout), downloaded by torchvision if missing."""
    tv = _torchvision("cifar10")
    root = Path(root)
    ds = _open("cifar10", lambda: tv.datasets.CIFAR10(root, train=SPLITS["cifar10"][split], download=download),
               root, download)
    images = np.ascontiguousarray(np.asarray(ds.data, dtype=np.uint8).transpose(0, 3, 1, 2))  # NHWC -> NCHW
    return images, np.asarray(ds.targets, dtype=np.int64)


def load_celeba(split, root, download=True):
    """CelebA's aligned faces (162770 train / 19962 test images of 178x218), centre-cropped to
    :data:`CELEBA_CROP` x :data:`CELEBA_CROP` and resized to 64x64 (antialiased bilinear), as uint8
    ``[N, 3, 64, 64]``, with the celebrity identities as labels; from ``root/celeba/`` (torchvision's
    layout: ``img_align_celeba/`` and the five ``.txt`` lists), downloaded by torchvision if missing.
    The decoded images are cached beside them (see :mod:`vaezoo.data.cache`), so the JPEGs are read once."""
    tv = _torchvision("celeba")
    root = Path(root)
    transform = tv.transforms.Compose([
        tv.transforms.CenterCrop(CELEBA_CROP), tv.transforms.Resize(CELEBA_SIZE), tv.transforms.PILToTensor(),
    ])
    ds = _open("celeba", lambda: tv.datasets.CelebA(root, split=SPLITS["celeba"][split], target_type="identity",
                                                    transform=transform, download=download), root, download)
    folder = root / FOLDERS["celeba"]
    sources = [folder / "img_align_celeba", folder / "list_eval_partition.txt", folder / "identity_CelebA.txt"]
    key = f"{split}-{CELEBA_CROP}-{CELEBA_SIZE}"
    stamp = cache.stamp(sources)
    arrays = cache.load(cache.candidates(folder, key), stamp)
    if arrays is None:
        from tqdm.auto import tqdm

        images = np.empty((len(ds), 3, CELEBA_SIZE, CELEBA_SIZE), dtype=np.uint8)
        labels = np.empty(len(ds), dtype=np.int64)
        for i in tqdm(range(len(ds)), desc=f"celeba {split}", unit="image", leave=False):
            image, identity = ds[i]
            images[i], labels[i] = image.numpy(), int(identity)
        arrays = {"images": images, "labels": labels}
        cache.save(cache.candidates(folder, key), stamp, arrays)
    return arrays["images"], arrays["labels"]


LOADERS = {"cifar10": load_cifar10, "celeba": load_celeba}
