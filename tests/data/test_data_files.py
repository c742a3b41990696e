"""IDX datasets on disk, on a tiny handmade dataset: checksums, decoded cache, read-only folders, download."""

import gzip
import hashlib
import io
import os
import urllib.error

import numpy as np
import pytest

from vaezoo.data import cache, download, mnist
from vaezoo.data.idx import encode_idx
from vaezoo.errors import DataError

RNG = np.random.default_rng(0)
IMAGES = {
    "train": RNG.integers(0, 256, (5, 4, 4), dtype=np.uint8),
    "test": RNG.integers(0, 256, (3, 4, 4), dtype=np.uint8),
}
LABELS = {"train": np.array([0, 1, 2, 1, 0], dtype=np.uint8), "test": np.array([2, 2, 0], dtype=np.uint8)}
NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def raw_files():
    """name -> decompressed IDX bytes of the tiny dataset."""
    out = {}
    for split, (images, labels) in NAMES.items():
        out[images] = encode_idx(IMAGES[split])
        out[labels] = encode_idx(LABELS[split])
    return out


RAW = raw_files()
GZ = {name: gzip.compress(raw, mtime=0) for name, raw in RAW.items()}


def md5(data):
    return hashlib.md5(data).hexdigest()


def tiny_source(by="raw"):
    """An IdxSource of the tiny dataset, checked by the md5 of decompressed (``raw``) or .gz bytes."""
    def spec(name):
        if by == "raw":
            return mnist.IdxFile(name, md5=md5(RAW[name]))
        return mnist.IdxFile(name, gz_md5=md5(GZ[name]))

    splits = {split: (spec(images), spec(labels), len(LABELS[split])) for split, (images, labels) in NAMES.items()}
    return mnist.IdxSource("tiny", splits, image_shape=(4, 4), num_classes=3)


def write_tiny(root, compressed=True, names=None):
    folder = root / "tiny"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names or RAW:
        if compressed:
            (folder / (name + ".gz")).write_bytes(GZ[name])
        else:
            (folder / name).write_bytes(RAW[name])
    return folder


@pytest.mark.parametrize("compressed", [True, False])
def test_loads_and_caches_in_the_data_folder(tmp_path, monkeypatch, compressed):
    folder = write_tiny(tmp_path, compressed)
    images, labels = mnist.load_arrays(tiny_source(), "train", tmp_path, download=False)
    np.testing.assert_array_equal(images, IMAGES["train"])
    np.testing.assert_array_equal(labels, LABELS["train"])
    assert (folder / ".vaezoo-cache-train.npz").is_file()

    def no_decode(*args):
        raise AssertionError("decoded although the cache is fresh")

    monkeypatch.setattr(mnist, "decode", no_decode)
    images, labels = mnist.load_arrays(tiny_source(), "train", tmp_path, download=False)
    np.testing.assert_array_equal(images, IMAGES["train"])


def test_a_changed_source_file_invalidates_the_cache(tmp_path):
    folder = write_tiny(tmp_path)
    mnist.load_arrays(tiny_source(), "test", tmp_path, download=False)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    corrupt = LABELS["test"].copy()
    corrupt[0] = 1
    path.write_bytes(gzip.compress(encode_idx(corrupt)))
    os.utime(path, ns=(1, 1))  # a different mtime, even on a coarse clock
    with pytest.raises(DataError, match="checksum mismatch"):
        mnist.load_arrays(tiny_source(), "test", tmp_path, download=False)


@pytest.mark.parametrize("compressed", [True, False])
def test_corrupted_copy_is_rejected_by_checksum(tmp_path, compressed):
    folder = write_tiny(tmp_path, compressed)
    name = "train-images-idx3-ubyte"
    raw = bytearray(RAW[name])
    raw[-1] ^= 0xFF  # one pixel: still a well-formed IDX file
    path = folder / (name + (".gz" if compressed else ""))
    path.write_bytes(gzip.compress(bytes(raw)) if compressed else bytes(raw))
    with pytest.raises(DataError) as info:
        mnist.load_arrays(tiny_source(), "train", tmp_path, download=False)
    message = str(info.value)
    assert "\n" not in message
    assert "checksum mismatch" in message and str(path) in message
    assert md5(RAW[name]) in message and md5(bytes(raw)) in message


def test_gz_checksum_when_only_the_published_gz_sum_is_known(tmp_path):
    folder = write_tiny(tmp_path)
    mnist.load_arrays(tiny_source(by="gz"), "test", tmp_path, download=False)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(RAW["t10k-labels-idx1-ubyte"], compresslevel=1, mtime=12345))
    with pytest.raises(DataError, match=f"expected {md5(GZ['t10k-labels-idx1-ubyte'])}"):
        mnist.load_arrays(tiny_source(by="gz"), "test", tmp_path, download=False)


def test_wrong_shape_is_rejected(tmp_path):
    folder = write_tiny(tmp_path, compressed=False)
    source = tiny_source()
    images, labels, _ = source.splits["test"]
    wrong = mnist.IdxSource("tiny", {"test": (images, labels, 4)}, image_shape=(4, 4))
    with pytest.raises(DataError, match=r"expected uint8 images of shape \(4, 4, 4\)"):
        mnist.load_arrays(wrong, "test", tmp_path, download=False)
    assert folder.is_dir()


def test_read_only_folder_caches_under_the_user_cache(tmp_path, monkeypatch):
    user_cache = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(user_cache))
    folder = write_tiny(tmp_path / "shared")
    before = sorted(os.listdir(folder))
    folder.chmod(0o555)
    try:
        images, _ = mnist.load_arrays(tiny_source(), "train", tmp_path / "shared", download=False)
        assert sorted(os.listdir(folder)) == before  # nothing written there, not even by root
    finally:
        folder.chmod(0o755)
    np.testing.assert_array_equal(images, IMAGES["train"])
    where = cache.candidates(folder, "train")[1]
    assert where.is_file() and str(where).startswith(str(user_cache / "vaezoo" / "decoded"))


def test_no_writable_cache_location_skips_caching(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "ro-cache"))
    (tmp_path / "ro-cache").mkdir()
    (tmp_path / "ro-cache").chmod(0o555)
    folder = write_tiny(tmp_path / "shared")
    folder.chmod(0o555)
    try:
        for _ in range(2):
            images, _ = mnist.load_arrays(tiny_source(), "test", tmp_path / "shared", download=False)
            np.testing.assert_array_equal(images, IMAGES["test"])
        assert not any(name.startswith(".vaezoo-cache") for name in os.listdir(folder))
        assert os.listdir(tmp_path / "ro-cache") == []
    finally:
        folder.chmod(0o755)
        (tmp_path / "ro-cache").chmod(0o755)


class FakeResponse(io.BytesIO):
    def __init__(self, data):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def fake_opener(files, calls, failing=("https://down.example/",)):
    """Serve ``files[name]`` under any mirror except ``failing`` ones, which are unreachable."""
    def opener(url, timeout=None):
        calls.append(url)
        assert timeout is not None and timeout <= 60
        base, name = url.rsplit("/", 1)
        if base + "/" in failing:
            raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))
        if name not in files:
            raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)
        return FakeResponse(files[name])

    return opener


def test_download_tries_mirrors_in_order_and_verifies(tmp_path, monkeypatch):
    calls = []
    served = {name + ".gz": data for name, data in GZ.items()}
    monkeypatch.setattr(download, "urlopen", fake_opener(served, calls))
    monkeypatch.setitem(download.MIRRORS, "tiny", ["https://down.example/", "https://up.example/"])
    images, labels = mnist.load_arrays(tiny_source(), "test", tmp_path / "data", progress=False)
    np.testing.assert_array_equal(images, IMAGES["test"])
    np.testing.assert_array_equal(labels, LABELS["test"])
    folder = tmp_path / "data" / "tiny"
    assert (folder / "t10k-images-idx3-ubyte.gz").read_bytes() == GZ["t10k-images-idx3-ubyte"]
    assert calls == [
        "https://down.example/t10k-images-idx3-ubyte.gz", "https://up.example/t10k-images-idx3-ubyte.gz",
        "https://down.example/t10k-labels-idx1-ubyte.gz", "https://up.example/t10k-labels-idx1-ubyte.gz",
    ]
    assert not [name for name in os.listdir(folder) if name.endswith(".part")]


def test_download_of_corrupt_bytes_writes_nothing(tmp_path, monkeypatch):
    calls = []
    served = {name + ".gz": gzip.compress(RAW[name][:-1] + b"\x07") for name in RAW}
    monkeypatch.setattr(download, "urlopen", fake_opener(served, calls))
    monkeypatch.setitem(download.MIRRORS, "tiny", ["https://up.example/"])
    with pytest.raises(DataError) as info:
        mnist.load_arrays(tiny_source(), "train", tmp_path, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert "download failed" in message and "checksum mismatch" in message
    assert md5(RAW["train-images-idx3-ubyte"]) in message
    assert not (tmp_path / "tiny").exists() or os.listdir(tmp_path / "tiny") == []
