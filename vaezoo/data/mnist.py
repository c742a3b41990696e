"""MNIST and Fashion-MNIST from their IDX files: location, checksums, download and decoded cache."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaezoo.data import cache
from vaezoo.data import download as downloader
from vaezoo.data.idx import GZIP_MAGIC, decompress, parse_idx
from vaezoo.data.paths import is_writable_dir
from vaezoo.errors import DataError


@dataclass(frozen=True)
class IdxFile:
    """One IDX file of a dataset.

    ``md5`` is the MD5 of its decompressed bytes (what every mirror and recompression shares);
    ``gz_md5`` the MD5 of the ``.gz`` file as published, used only when ``md5`` is unknown.
    """

    name: str
    md5: str | None = None
    gz_md5: str | None = None


@dataclass(frozen=True)
class IdxSource:
    """A dataset of ``splits[split] = (images file, labels file, number of examples)``."""

    name: str
    splits: dict
    image_shape: tuple = (28, 28)
    num_classes: int = 10

    def files(self, split):
        images, labels, _ = self.splits[split]
        return images, labels


MNIST = IdxSource("mnist", {
    "train": (
        IdxFile("train-images-idx3-ubyte", md5="6bbc9ace898e44ae57da46a324031adb"),
        IdxFile("train-labels-idx1-ubyte", md5="a25bea736e30d166cdddb491f175f624"),
        60000,
    ),
    "test": (
        IdxFile("t10k-images-idx3-ubyte", md5="2646ac647ad5339dbf082846283269ea"),
        IdxFile("t10k-labels-idx1-ubyte", md5="27ae3e4e09519cfbb04c329615203637"),
        10000,
    ),
})

# Fashion-MNIST publishes the MD5 sums of its .gz files only (zalandoresearch/fashion-mnist README),
# so a .gz file is checked against those; an already decompressed file is checked by its structure
# (IDX header, 60000/10000 images of 28x28, labels in 0..9) alone.
FASHION_MNIST = IdxSource("fashion-mnist", {
    "train": (
        IdxFile("train-images-idx3-ubyte", gz_md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        IdxFile("train-labels-idx1-ubyte", gz_md5="25c81989df183df01b3e8a0aad5dffbe"),
        60000,
    ),
    "test": (
        IdxFile("t10k-images-idx3-ubyte", gz_md5="bef4ecab320f06d8554ea6380940ec79"),
        IdxFile("t10k-labels-idx1-ubyte", gz_md5="bb300cfdad3c16e7a12a480ee83cd310"),
        10000,
    ),
})

SOURCES = {source.name: source for source in (MNIST, FASHION_MNIST)}


def find(folder, spec):
    """The file of ``spec`` in ``folder``, uncompressed or ``.gz``, or ``None``."""
    for candidate in (folder / spec.name, folder / (spec.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def verify(raw, content, spec, source):
    """Check the file bytes ``raw`` (decompressed: ``content``) against the checksums of ``spec``.

    Raises :class:`DataError` naming ``source`` and the expected sum on a mismatch.
    """
    if spec.md5 is not None:
        got = hashlib.md5(content).hexdigest()
        if got != spec.md5:
            raise DataError(
                f"checksum mismatch for {source}: the md5 of its decompressed content is {got}, "
                f"expected {spec.md5}; delete it to download it again"
            )
    elif spec.gz_md5 is not None and bytes(raw[:2]) == GZIP_MAGIC:
        got = hashlib.md5(raw).hexdigest()
        if got != spec.gz_md5:
            raise DataError(
                f"checksum mismatch for {source}: its md5 is {got}, expected {spec.gz_md5} "
                f"(the published {spec.name}.gz); delete it to download it again"
            )


def decode(path, spec):
    """Read, verify and parse the IDX file ``path`` of ``spec``."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    content = decompress(raw, str(path))
    array = parse_idx(content, str(path))  # a truncated file gets the more telling structural error
    verify(raw, content, spec, path)
    return array


def check_arrays(source, split, images, labels, images_path, labels_path):
    """Raise :class:`DataError` unless the decoded arrays have the shapes and range of ``source``."""
    count = source.splits[split][2]
    expected = (count, *source.image_shape)
    if images.dtype != np.uint8 or images.shape != expected:
        raise DataError(
            f"{images_path} holds a {images.dtype} array of shape {images.shape}, "
            f"expected uint8 images of shape {expected}"
        )
    if labels.dtype != np.uint8 or labels.shape != (count,):
        raise DataError(
            f"{labels_path} holds a {labels.dtype} array of shape {labels.shape}, "
            f"expected {count} uint8 labels"
        )
    if labels.size and int(labels.max()) >= source.num_classes:
        raise DataError(
            f"{labels_path} holds label {int(labels.max())}, expected labels in 0..{source.num_classes - 1}"
        )


def missing_message(source, folder, missing, reason=None):
    """The one-line error for files of ``source`` that are missing from ``folder``."""
    files = ", ".join(spec.name + ".gz" for spec in missing)
    failed = f" and download failed ({reason})" if reason else ""
    return (
        f"{source.name} not found in {folder}{failed}; put {files} there, "
        f"or pass --data-dir (or set VAEZOO_DATA_DIR) to a folder holding {source.name}/"
    )


def fetch_missing(source, folder, missing, progress=None):
    """Download the files ``missing`` of ``source`` into ``folder``, each verified before it is written."""
    mirrors = downloader.MIRRORS.get(source.name, [])
    if not is_writable_dir(folder):
        reason = f"{folder} is read-only, nothing was downloaded"
        raise DataError(missing_message(source, folder, missing, reason=reason))
    for spec in missing:
        filename = spec.name + ".gz"

        def check(content, spec=spec, filename=filename):
            verify(content, decompress(content, filename), spec, filename)

        try:
            downloader.fetch_from_mirrors(mirrors, filename, folder / filename, verify=check, progress=progress)
        except DataError as err:
            raise DataError(missing_message(source, folder, missing, reason=str(err))) from None


def load_arrays(source, split, root, download=True, progress=None):
    """The uint8 images ``[N, H, W]`` and labels ``[N]`` of ``split`` of ``source`` under ``root``.

    Files are looked up in ``root / source.name``; missing ones are downloaded if ``download``.
    After the first decode, the arrays are cached (see :mod:`vaezoo.data.cache`), so later loads skip
    decompression, checksums and parsing while the source files are unchanged.
    """
    folder = Path(root) / source.name
    specs = source.files(split)
    paths = [find(folder, spec) for spec in specs]
    missing = [spec for spec, path in zip(specs, paths) if path is None]
    if missing:
        if not download:
            raise DataError(missing_message(source, folder, missing))
        fetch_missing(source, folder, missing, progress=progress)
        paths = [find(folder, spec) for spec in specs]

    current = cache.stamp(paths)
    where = cache.candidates(folder, split)
    cached = cache.load(where, current)
    if cached is not None and set(cached) == {"images", "labels"}:
        try:
            check_arrays(source, split, cached["images"], cached["labels"], *paths)
            return cached["images"], cached["labels"]
        except DataError:
            pass  # a stale or foreign cache: decode again and overwrite it

    images = decode(paths[0], specs[0])
    labels = decode(paths[1], specs[1])
    check_arrays(source, split, images, labels, *paths)
    cache.save(where, current, {"images": images, "labels": labels})
    return images, labels
