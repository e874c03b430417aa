"""Dataset loaders on tiny files written in each exact format, and their errors."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest

from invconv_core.flows.data import load_dataset


def _idx(path, magic, arr, gz=False):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    opener = gzip.open if gz else open
    with opener(path + (".gz" if gz else ""), "wb") as f:
        f.write(data)


def _write_mnist(d, n=5, gz=False):
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        imgs = rng.integers(0, 256, (n, 28, 28))
        _idx(os.path.join(d, f"{prefix}-images-idx3-ubyte"), 0x803, imgs, gz)
        _idx(os.path.join(d, f"{prefix}-labels-idx1-ubyte"), 0x801, rng.integers(0, 10, n), gz)
    return imgs


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx(tmp_path, gz):
    imgs = _write_mnist(str(tmp_path), gz=gz)
    data = load_dataset("mnist", "test", str(tmp_path))
    assert data.images.shape == (5, 1, 28, 28) and data.n_bins == 256
    np.testing.assert_array_equal(data.images[:, 0].numpy(), imgs)
    assert data.labels.dtype.is_floating_point is False


def test_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.*MNIST IDX file not found"):
        load_dataset("mnist", "test", str(tmp_path))
    _write_mnist(str(tmp_path))
    path = os.path.join(tmp_path, "t10k-images-idx3-ubyte")
    with open(path, "r+b") as f:
        f.write((0x801).to_bytes(4, "big"))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte: not an IDX file of the expected kind"):
        load_dataset("mnist", "test", str(tmp_path))
    _write_mnist(str(tmp_path))
    with open(path, "ab") as f:
        f.write(b"extra")
    with pytest.raises(ValueError, match="IDX header says"):
        load_dataset("mnist", "test", str(tmp_path))
    with pytest.raises(ValueError, match=r"dataset .mnist. needs its files: give data_dir \(--data-dir\)"):
        load_dataset("mnist", "test", None)


def _write_cifar(d, n=4):
    root = os.path.join(d, "cifar-10-batches-py")
    os.makedirs(root)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(os.path.join(root, name), "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
                         b"labels": list(rng.integers(0, 10, n))}, f)
    return root


def test_cifar10_pickles(tmp_path):
    root = _write_cifar(str(tmp_path))
    train = load_dataset("cifar10", "train", str(tmp_path))
    assert train.images.shape == (20, 3, 32, 32)
    with open(os.path.join(root, "test_batch"), "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    test = load_dataset("cifar10", "test", root)  # the folder itself works too
    np.testing.assert_array_equal(test.images.numpy().reshape(4, -1), raw[b"data"])
    with open(os.path.join(root, "test_batch"), "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match=r"test_batch: expected b'data' of shape \(N, 3072\)"):
        load_dataset("cifar10", "test", str(tmp_path))
    os.remove(os.path.join(root, "data_batch_3"))
    with pytest.raises(FileNotFoundError, match="data_batch_3: CIFAR-10 python batch not found"):
        load_dataset("cifar10", "train", str(tmp_path))


@pytest.mark.parametrize("size", [32, 64])
def test_imagenet_npz(tmp_path, size):
    d = tmp_path / f"Imagenet{size}_train_npz"
    d.mkdir()
    rng = np.random.default_rng(2)
    data = rng.integers(0, 256, (3, 3 * size * size)).astype(np.uint8)
    np.savez(d / "train_data_batch_1.npz", data=data, labels=np.array([1, 2, 1000]))
    np.savez(tmp_path / "val_data.npz", data=data[:2], labels=np.array([5, 6]))
    train = load_dataset(f"imagenet{size}", "train", str(tmp_path))
    assert train.images.shape == (3, 3, size, size) and train.labels.tolist() == [0, 1, 999]
    np.testing.assert_array_equal(train.images.numpy().reshape(3, -1), data)
    assert load_dataset(f"imagenet{size}", "test", str(tmp_path)).images.shape == (2, 3, size, size)
    other = 64 if size == 32 else 32
    with pytest.raises(ValueError, match=f"expected 'data' of shape \\(N, {3 * other * other}\\)"):
        load_dataset(f"imagenet{other}", "train", str(tmp_path))


def test_imagenet_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no val_data.npz found for imagenet32"):
        load_dataset("imagenet32", "test", str(tmp_path))


def test_digits_is_the_embedded_default():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert train.images.shape == (1500, 1, 8, 8) and test.images.shape == (297, 1, 8, 8)
    assert train.n_bins == 17 and float(train.images.max()) == 16.0 and float(train.images.min()) == 0.0


def test_unknown_dataset():
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("svhn")
