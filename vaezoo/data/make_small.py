"""Build the embedded ``mnist-small`` asset (``vaezoo/data/mnist_small.npz``) from the full MNIST.

The asset is the first 10,000 training and the first 2,000 test images of MNIST with their labels,
as uint8 arrays ``train_images [10000, 28, 28]``, ``train_labels [10000]``, ``test_images
[2000, 28, 28]`` and ``test_labels [2000]``, in a zlib-compressed ``.npz`` (about 2 MB). It was made
from the four standard MNIST IDX files, checked against their MD5 sums, with::

    VAEZOO_DATA_DIR=/work/shared/data python -m vaezoo.data.make_small

(``--data-dir DIR`` instead of the variable; ``--out PATH`` to write elsewhere; ``--check`` to
rebuild in memory and compare with the shipped asset without writing). The zip entries carry a fixed
timestamp, so the same zlib writes the same bytes; :data:`vaezoo.data.embedded.CONTENT_MD5` pins the
decoded arrays, whatever zlib compressed them.
"""

import argparse
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

from vaezoo.data import embedded, mnist
from vaezoo.data.paths import atomic_writer, resolve_data_dir

DEFAULT_OUT = Path(__file__).with_name(embedded.ASSET)


def subset_arrays(data_dir=None, n_train=embedded.N_TRAIN, n_test=embedded.N_TEST):
    """The first ``n_train`` training and ``n_test`` test images and labels of the MNIST in ``data_dir``."""
    root = resolve_data_dir(data_dir)
    train_images, train_labels = mnist.load_arrays(mnist.MNIST, "train", root, download=False)
    test_images, test_labels = mnist.load_arrays(mnist.MNIST, "test", root, download=False)
    return {
        "train_images": np.ascontiguousarray(train_images[:n_train]),
        "train_labels": np.ascontiguousarray(train_labels[:n_train]),
        "test_images": np.ascontiguousarray(test_images[:n_test]),
        "test_labels": np.ascontiguousarray(test_labels[:n_test]),
    }


def npz_bytes(arrays):
    """A compressed ``.npz`` of ``arrays`` with fixed zip timestamps (reproducible bytes)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in embedded.KEYS:
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arrays[key], allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return out.getvalue()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m vaezoo.data.make_small", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="folder holding mnist/ (default: $VAEZOO_DATA_DIR or the user cache)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where to write (default: {DEFAULT_OUT})")
    parser.add_argument("--check", action="store_true", help="compare with the shipped asset instead of writing")
    args = parser.parse_args(argv)

    arrays = subset_arrays(args.data_dir)
    digest = embedded.content_md5(arrays)
    if args.check:
        shipped = embedded.content_md5(embedded.read_asset())
        print(f"rebuilt content md5 {digest}, shipped {shipped}: {'same' if digest == shipped else 'DIFFERENT'}")
        return 0 if digest == shipped else 1
    data = npz_bytes(arrays)
    with atomic_writer(args.out) as f:
        f.write(data)
    print(f"wrote {args.out} ({len(data)} bytes), content md5 {digest}")
    if digest != embedded.CONTENT_MD5:
        print(f"update vaezoo.data.embedded.CONTENT_MD5 to {digest!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
