"""scikit-learn's 8x8 handwritten digits (1797 images, shipped inside scikit-learn: no download)."""

import numpy as np

from vaezoo.errors import DataError

N_TEST = 297  # the last 297 images are the test split, the first 1500 the training split


def load_arrays(split):
    """Float32 intensities ``[N, 8, 8]`` in [0, 1] (pixel counts 0..16 divided by 16) and int64 labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        message = "the digits dataset needs scikit-learn; expected it installed (pip install scikit-learn)"
        raise DataError(message) from None
    bunch = load_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / 16.0).clip(0.0, 1.0)
    labels = np.asarray(bunch.target, dtype=np.int64)
    cut = len(images) - N_TEST
    if split == "train":
        return images[:cut], labels[:cut]
    return images[cut:], labels[cut:]
