"""``mnist-small``: a real subset of MNIST shipped inside the package, so it loads offline.

The asset ``mnist_small.npz`` holds, as uint8 arrays, the first 10,000 training images and labels
and the first 2,000 test images and labels of MNIST, in the original order. It is made from the
verified MNIST files by :mod:`vaezoo.data.make_small`, which documents how to rebuild it.
"""

import functools
import hashlib
import io
from importlib import resources

import numpy as np

from vaezoo.errors import DataError

ASSET = "mnist_small.npz"
N_TRAIN = 10000
N_TEST = 2000
KEYS = ("train_images", "train_labels", "test_images", "test_labels")
# md5 of the decoded arrays (see content_md5), independent of how zlib compressed the asset
CONTENT_MD5 = "b4ea8179e25ea51d3c65f9d8c4fb2671"


def content_md5(arrays):
    """The md5 of the arrays ``arrays[key]`` for ``key`` in :data:`KEYS`: dtypes, shapes and bytes."""
    digest = hashlib.md5()
    for key in KEYS:
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def read_asset():
    """The four arrays of the shipped asset, checked against :data:`CONTENT_MD5`."""
    asset = resources.files(__package__).joinpath(ASSET)
    try:
        with np.load(io.BytesIO(asset.read_bytes()), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in KEYS}
    except (OSError, ValueError, KeyError, EOFError) as err:
        raise DataError(
            f"the embedded dataset {asset} is unreadable ({err}); expected the npz shipped with vaezoo, reinstall it"
        ) from None
    got = content_md5(arrays)
    if got != CONTENT_MD5:
        raise DataError(
            f"checksum mismatch for the embedded dataset {asset}: md5 {got}, expected {CONTENT_MD5}; reinstall vaezoo"
        )
    return arrays


def load_arrays(split):
    """The uint8 images ``[N, 28, 28]`` and labels ``[N]`` of ``split`` (10,000 train, 2,000 test)."""
    arrays = read_asset()
    return arrays[f"{split}_images"], arrays[f"{split}_labels"]
