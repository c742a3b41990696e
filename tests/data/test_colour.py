"""CIFAR-10 and CelebA: small fabricated datasets in the files torchvision reads (their MD5 table set
to the fabricated files), loaded as [N, 3, H, W] floats in [0, 1] equal to the images written, with
CelebA's crop and resize checked against PIL; without torchvision, one line naming the extra."""

import hashlib
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from vaezoo import data
from vaezoo.errors import DataError, MissingDependencyError


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def cifar_batches(root, sizes={"data_batch_1": 3, "data_batch_2": 2, "test_batch": 2}):
    """CIFAR-10's python batches: rows of 3072 bytes (the red, green, blue planes of 32x32), labels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name, n in sizes.items():
        rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rows, "labels": labels, "batch_label": name}, f)
        written[name] = (rows, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class {k}" for k in range(10)]}, f)
    return folder, written


@pytest.fixture
def cifar(tmp_path, monkeypatch):
    datasets = pytest.importorskip("torchvision.datasets")
    folder, written = cifar_batches(tmp_path)
    monkeypatch.setattr(datasets.CIFAR10, "train_list", [[n, md5(folder / n)] for n in ("data_batch_1", "data_batch_2")])
    monkeypatch.setattr(datasets.CIFAR10, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(datasets.CIFAR10, "meta", dict(datasets.CIFAR10.meta, md5=md5(folder / "batches.meta")))
    return tmp_path, written


def test_cifar10_loads_the_batches_as_written(cifar):
    root, written = cifar
    train = data.load("cifar10", split="train", data_dir=root, download=False)
    test = data.load("cifar10", split="test", data_dir=root, download=False)
    rows = np.concatenate([written["data_batch_1"][0], written["data_batch_2"][0]])
    expected = torch.from_numpy(rows.reshape(-1, 3, 32, 32)).double() / 255
    assert train.data.shape == (5, 3, 32, 32) and train.data.dtype == torch.float32
    torch.testing.assert_close(train.data.double(), expected, rtol=0, atol=1e-7)
    assert train.targets.tolist() == written["data_batch_1"][1] + written["data_batch_2"][1]
    assert test.shape == (3, 32, 32) and len(test) == 2 and test.targets.tolist() == written["test_batch"][1]


def test_cifar10_refuses_missing_or_corrupt_files_in_one_line(cifar, tmp_path):
    root, _ = cifar
    with pytest.raises(DataError, match=r"no cifar10 data in .*empty/cifar-10-batches-py; expected torchvision's files"):
        data.load("cifar10", data_dir=tmp_path / "empty", download=False)
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(b"truncated")
    with pytest.raises(DataError, match=r"cifar10 in .*cifar-10-batches-py: Dataset not found or corrupted"):
        data.load("cifar10", split="test", data_dir=root, download=False)


CELEBA_SPLITS = {"000001.png": 0, "000002.png": 0, "000003.png": 1, "000004.png": 2, "000005.png": 0, "000006.png": 2}


def celeba_folder(root):
    """torchvision's CelebA layout: 178x218 images whose colours code their pixel's position (so a
    wrong crop shows), the partition and identity lists, and minimal bbox/landmark/attribute lists."""
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    yy, xx = np.mgrid[0:218, 0:178]
    for k, name in enumerate(CELEBA_SPLITS):
        rgb = np.stack([xx * 255 // 177, yy * 255 // 217, (xx * yy + 40 * k) % 256], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(folder / "img_align_celeba" / name)
    names = list(CELEBA_SPLITS)
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} {s}\n" for n, s in CELEBA_SPLITS.items()))
    (folder / "identity_CelebA.txt").write_text("".join(f"{n} {100 + k}\n" for k, n in enumerate(names)))
    (folder / "list_bbox_celeba.txt").write_text(
        f"{len(names)}\nimage_id x_1 y_1 width height\n" + "".join(f"{n} 95 71 226 313\n" for n in names))
    (folder / "list_landmarks_align_celeba.txt").write_text(
        f"{len(names)}\nlefteye_x lefteye_y righteye_x righteye_y\n" + "".join(f"{n}  69  109  106  113\n" for n in names))
    (folder / "list_attr_celeba.txt").write_text(
        f"{len(names)}\nSmiling Young\n" + "".join(f"{n}  1 -1\n" for n in names))
    return folder


@pytest.fixture
def celeba(tmp_path, monkeypatch):
    datasets = pytest.importorskip("torchvision.datasets")
    folder = celeba_folder(tmp_path)
    table = [(gid, md5(folder / name) if name.endswith(".txt") else digest, name)
             for gid, digest, name in datasets.CelebA.file_list]
    monkeypatch.setattr(datasets.CelebA, "file_list", table)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path, folder


def test_celeba_is_centre_cropped_to_108_and_resized_to_64(celeba):
    root, folder = celeba
    train = data.load("celeba", split="train", data_dir=root, download=False)
    test = data.load("celeba", split="test", data_dir=root, download=False)
    assert train.data.shape == (3, 3, 64, 64) and test.data.shape == (2, 3, 64, 64)
    assert train.targets.tolist() == [100, 101, 104] and test.targets.tolist() == [103, 105]
    # the central 108x108 square of the 178x218 image: columns 35..142, rows 55..162
    for k, name in enumerate(["000001.png", "000002.png", "000005.png"]):
        crop = Image.open(folder / "img_align_celeba" / name).crop((35, 55, 35 + 108, 55 + 108))
        expected = torch.from_numpy(np.array(crop.resize((64, 64), Image.BILINEAR))).permute(2, 0, 1) / 255
        torch.testing.assert_close(train.data[k], expected, rtol=0, atol=1e-6)
    # the decoded images are cached beside the files and read back from there
    assert list(folder.glob(".vaezoo-cache-*.npz"))
    again = data.load("celeba", split="train", data_dir=root, download=False)
    assert torch.equal(again.data, train.data)


def test_colour_datasets_without_torchvision_name_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    for name in ("cifar10", "celeba"):
        with pytest.raises(MissingDependencyError, match=rf"dataset '{name}' needs torchvision; expected it installed "
                                                         r"\(pip install vaezoo\[vision\]\)"):
            data.load(name, data_dir=tmp_path, download=False)


def test_cifar10_through_a_fake_torchvision(monkeypatch, tmp_path):
    """Where torchvision is not installed: vaezoo's side of the exchange (split, root, download
    flag, NHWC uint8 -> NCHW floats in [0, 1]) with a stand-in that returns torchvision's attributes."""
    rng = np.random.default_rng(1)
    calls = []

    class CIFAR10:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            self.data = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)  # torchvision's NHWC
            self.targets = [3, 1, 4, 1]

    fake = types.ModuleType("torchvision")
    fake.datasets = types.SimpleNamespace(CIFAR10=CIFAR10)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    (tmp_path / "cifar-10-batches-py").mkdir()
    ds = data.load("cifar10", split="test", data_dir=tmp_path, download=False)
    assert calls == [(tmp_path, False, False)]
    assert ds.data.shape == (4, 3, 32, 32) and ds.targets.tolist() == [3, 1, 4, 1]
    rng = np.random.default_rng(1)
    expected = torch.from_numpy(rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)).permute(0, 3, 1, 2) / 255
    torch.testing.assert_close(ds.data, expected.float(), rtol=0, atol=1e-7)
