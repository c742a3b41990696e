"""The public ``vaezoo.data.load``: datasets, splits, binarization modes, errors, full MNIST."""

import gzip
import shutil
import urllib.error

import pytest
import torch
from torch.utils.data import DataLoader

from vaezoo import data
from vaezoo.data import download, mnist
from vaezoo.data.idx import encode_idx, read_idx
from vaezoo.errors import ConfigError, DataError, UnknownNameError

FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the well-known start of MNIST
FIRST_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def offline_opener(url, *args, **kwargs):
    """A URL opener that behaves like a machine without internet."""
    raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))


def test_names():
    assert data.names() == ["celeba", "cifar10", "digits", "fashion-mnist", "mnist", "mnist-small", "synthetic"]


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"name": "mnsit"}, UnknownNameError, ["'mnsit'", "digits, fashion-mnist, mnist, mnist-small"]),
        ({"name": None}, UnknownNameError, ["None", "mnist-small"]),
        ({"name": "mnist-small", "split": "valid"}, ConfigError, ["'valid'", "'train' or 'test'"]),
        ({"name": "mnist-small", "binarize": "static"}, ConfigError, ["'static'", "None, 'dynamic' or 'fixed'"]),
        ({"name": "mnist-small", "binarize": True}, ConfigError, ["True", "'fixed'"]),
        ({"name": "mnist-small", "seed": "0"}, ConfigError, ["'0'", "int"]),
        ({"name": "mnist-small", "data_dir": 1.5}, ConfigError, ["1.5", "path"]),
    ],
)
def test_bad_arguments_raise_one_line(kwargs, error, words):
    with pytest.raises(error) as info:
        data.load(**kwargs)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("split, n, first", [("train", 10000, FIRST_TRAIN_LABELS), ("test", 2000, FIRST_TEST_LABELS)])
def test_embedded_subset_loads_offline(split, n, first, monkeypatch, tmp_path):
    monkeypatch.setenv("VAEZOO_DATA_DIR", str(tmp_path / "empty"))  # must not matter
    ds = data.load("mnist-small", split=split)
    assert isinstance(ds, data.ImageDataset) and isinstance(ds, torch.utils.data.Dataset)
    assert (ds.name, ds.split, ds.binarize) == ("mnist-small", split, None)
    assert len(ds) == n and ds.shape == (1, 28, 28)
    assert ds.data.shape == (n, 1, 28, 28) and ds.data.dtype == torch.float32
    assert ds.targets.shape == (n,) and ds.targets.dtype == torch.int64
    assert ds.targets[:10].tolist() == first
    assert set(ds.targets.unique().tolist()) == set(range(10))
    assert ds.data.min() == 0 and ds.data.max() == 1
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and int(y) == first[0]


def test_embedded_subset_is_the_prefix_of_mnist(mnist_root):
    for split, n in (("train", 10000), ("test", 2000)):
        small = data.load("mnist-small", split=split)
        full = data.load("mnist", split=split, data_dir=mnist_root, download=False)
        assert torch.equal(small.data, full.data[:n])
        assert torch.equal(small.targets, full.targets[:n])


def test_no_binarization_keeps_intensities():
    ds = data.load("mnist-small", split="test")
    x, _ = ds[3]
    assert torch.equal(x, ds.data[3])
    assert ((ds.data > 0) & (ds.data < 1)).any()
    assert ds.data.min() >= 0 and ds.data.max() <= 1


def test_dynamic_binarization_draws_anew():
    ds = data.load("mnist-small", split="test", binarize="dynamic")
    plain = data.load("mnist-small", split="test")
    assert ds.binarize == "dynamic"
    assert torch.equal(ds.data, plain.data)  # the trainer binarizes per batch itself
    torch.manual_seed(0)
    draws = torch.stack([ds[7][0] for _ in range(4)])
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(draws[0], draws[1])
    xb, yb = next(iter(DataLoader(ds, batch_size=16)))
    assert xb.shape == (16, 1, 28, 28) and yb.dtype == torch.int64
    assert set(xb.unique().tolist()) <= {0.0, 1.0}


def test_fixed_binarization_is_reproducible_from_the_seed():
    a = data.load("mnist-small", split="test", binarize="fixed", seed=0)
    b = data.load("mnist-small", split="test", binarize="fixed", seed=0)
    c = data.load("mnist-small", split="test", binarize="fixed", seed=1)
    plain = data.load("mnist-small", split="test")
    assert a.binarize == "fixed" and a.data.dtype == torch.float32
    assert set(a.data.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(a.data, b.data)
    assert not torch.equal(a.data, c.data)
    assert torch.equal(a[5][0], a.data[5])  # indexing gives the stored draw, not a new one
    # a Bernoulli draw of the intensities: it agrees with them on average, and is 1 only where they are > 0
    assert abs(a.data.mean().item() - plain.data.mean().item()) < 2e-3
    assert not (a.data.bool() & (plain.data == 0)).any()
    expected = torch.bernoulli(plain.data, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.data, expected)


@pytest.mark.parametrize("split, n", [("train", 1500), ("test", 297)])
def test_digits(split, n):
    ds = data.load("digits", split=split)
    assert len(ds) == n and ds.shape == (1, 8, 8)
    assert ds.data.dtype == torch.float32 and ds.targets.dtype == torch.int64
    assert ds.data.min() == 0 and ds.data.max() == 1
    assert set(ds.targets.unique().tolist()) == set(range(10))


def test_digits_split_is_deterministic_and_disjoint():
    from sklearn.datasets import load_digits

    everything = torch.tensor(load_digits().images / 16.0, dtype=torch.float32)
    train, test = data.load("digits"), data.load("digits", split="test")
    assert torch.equal(torch.cat([train.data, test.data])[:, 0], everything)


def test_offline_download_failure_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "urlopen", offline_opener)
    with pytest.raises(DataError) as info:
        data.load("mnist", data_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"mnist not found in {tmp_path / 'mnist'} and download failed (")
    assert "Temporary failure in name resolution" in message
    assert "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz there" in message
    assert "--data-dir" in message
    assert download.MIRRORS["mnist"][-1] in message


def test_download_false_does_not_touch_the_network(tmp_path):
    with pytest.raises(DataError, match="^fashion-mnist not found in .*; put t10k-images-idx3-ubyte.gz"):
        data.load("fashion-mnist", split="test", data_dir=tmp_path, download=False)


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEZOO_DATA_DIR", str(tmp_path / "env"))
    assert data.resolve_data_dir() == tmp_path / "env"
    assert data.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("VAEZOO_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.resolve_data_dir() == tmp_path / "xdg" / "vaezoo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.resolve_data_dir() == tmp_path / "home" / ".cache" / "vaezoo"


def test_full_mnist_is_verified_then_cached(mnist_root, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "fresh-cache"))  # a first decode for sure
    monkeypatch.setenv("VAEZOO_DATA_DIR", str(mnist_root))
    checked = []
    verify = mnist.verify

    def spy(raw, content, spec, source):
        verify(raw, content, spec, source)
        checked.append((spec.name, spec.md5))

    monkeypatch.setattr(mnist, "verify", spy)
    train = data.load("mnist", download=False)
    test = data.load("mnist", split="test", download=False)
    assert len(train) == 60000 and len(test) == 10000
    assert train.data.shape == (60000, 1, 28, 28) and test.data.shape == (10000, 1, 28, 28)
    assert train.targets[:10].tolist() == FIRST_TRAIN_LABELS and test.targets[:10].tolist() == FIRST_TEST_LABELS
    assert dict(checked) == {spec.name: spec.md5 for split in ("train", "test") for spec in mnist.MNIST.files(split)}

    checked.clear()
    again = data.load("mnist", download=False)
    assert checked == []  # served from the decoded cache, not decoded and verified again (its speed: bench/)
    assert torch.equal(again.data, train.data) and torch.equal(again.targets, train.targets)


def test_corrupted_copy_of_real_mnist_is_rejected(mnist_root, tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    source = mnist_root / "mnist"
    for name in ("t10k-images-idx3-ubyte",):
        found = mnist.find(source, mnist.IdxFile(name))
        shutil.copy(found, folder / found.name)
    labels = read_idx(mnist.find(source, mnist.IdxFile("t10k-labels-idx1-ubyte")))
    labels[0] = (labels[0] + 1) % 10
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(encode_idx(labels)))
    with pytest.raises(DataError) as info:
        data.load("mnist", split="test", data_dir=tmp_path, download=False)
    message = str(info.value)
    assert "\n" not in message
    assert str(folder / "t10k-labels-idx1-ubyte.gz") in message
    assert "expected 27ae3e4e09519cfbb04c329615203637" in message
