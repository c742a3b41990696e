"""Fixtures of the data tests: no network, a private cache directory, and the real MNIST if present."""

import os
from pathlib import Path

import pytest

import vaezoo.data.download

MNIST_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture(autouse=True)
def isolated(monkeypatch, session_cache):
    """Keep the user's cache untouched and make any real network access fail loudly."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(session_cache))

    def no_network(url, *args, **kwargs):
        raise AssertionError(f"a test tried to open {url}")

    monkeypatch.setattr(vaezoo.data.download, "urlopen", no_network)


def _has_mnist(root):
    folder = Path(root) / "mnist"
    return all((folder / name).is_file() or (folder / (name + ".gz")).is_file() for name in MNIST_FILES)


@pytest.fixture(scope="session")
def mnist_root():
    """The data directory of the real MNIST (``$VAEZOO_DATA_DIR``), or skip."""
    root = os.environ.get("VAEZOO_DATA_DIR")
    if not root or not _has_mnist(root):
        pytest.skip("full MNIST absent: set VAEZOO_DATA_DIR to a folder whose mnist/ holds the four IDX files")
    return Path(root)

