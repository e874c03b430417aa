r"""The paper's small classifier (§8 of its supplementary material): two inverse-of-convolution layers and one
linear layer. :func:`train_classifier` takes a :class:`ClassifierConfig` and returns a
:class:`ClassifierResult`; the command line is ``invconv-classify``.

Each inv-conv layer is a single-channel k×k ``InvConv2d`` in the inverse placement
(``x ↦ T⁻¹x``) with its current-pixel tap fixed to 1, so it has k² − 1 learnable weights
(16 for the two 3×3 layers, as in the paper). The layers use opposite orders (TL, then BR) and
are each followed by a ``tanh``: without a non-linearity the whole model would be one linear
map, i.e. a linear classifier. Writes ``OUT/classifier.pt`` and ``OUT/metrics.json``; an ``out``
that already holds them is refused unless ``overwrite=True``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import load_dataset, require_usable_splits
from .errors import RunExistsError
from .io import atomic_save, atomic_write_json, remove_stale_temp_files
from .layers import InvConv2d
from .runlock import refuse_if_locked, run_lock
from .validate import SEED_MAX, check_output_dir, require_device, require_float, require_int

__all__ = ["InvConvClassifier", "ClassifierConfig", "ClassifierResult", "train_classifier",
           "accuracy", "CLASSIFIER_DATASETS"]


class InvConvClassifier(nn.Module):
    """(N, 1, H, W) images in [0, 1] → (N, classes) logits."""

    def __init__(self, height: int, width: int, classes: int = 10, kernel_size: int = 3):
        super().__init__()
        self.conv1 = InvConv2d(1, kernel_size, "TL", placement="inverse", learn_diag=False, init_std=0.05)
        self.conv2 = InvConv2d(1, kernel_size, "BR", placement="inverse", learn_diag=False, init_std=0.05)
        self.fc = nn.Linear(height * width, classes)

    def invconv_parameters(self) -> int:
        """Free weights of the two inv-conv layers (the fixed current tap excluded)."""
        return sum(c.weight.numel() - 1 for c in (self.conv1, self.conv2))

    def forward(self, x):
        h = torch.tanh(self.conv1(x)[0])
        h = torch.tanh(self.conv2(h)[0])
        return self.fc(h.flatten(1))


@torch.no_grad()
def accuracy(model, images, labels, batch=500) -> float:
    model.eval()
    correct = sum((model(images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum().item()
                  for i in range(0, len(images), batch))
    model.train()
    return correct / len(images)


@dataclass(frozen=True)
class ClassifierConfig:
    out: str
    dataset: str = "digits"
    epochs: int = 50
    data_dir: str | None = None
    batch_size: int = 100
    lr: float = 1e-2
    kernel_size: int = 3
    device: str = "cpu"
    seed: int = 0
    overwrite: bool = False

    def __post_init__(self):
        if not isinstance(self.out, str) or not self.out:
            raise ValueError(f"out must be a directory path, got {self.out!r}")
        if self.dataset not in CLASSIFIER_DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(CLASSIFIER_DATASETS)}, got {self.dataset!r}")
        for name in ("epochs", "batch_size", "kernel_size"):
            require_int(name, getattr(self, name), 1)
        require_float("lr", self.lr, 0.0, strict=True)
        require_int("seed", self.seed, 0, SEED_MAX)
        require_device(self.device)


@dataclass(frozen=True)
class ClassifierResult:
    dataset: str
    epochs: int
    test_accuracy: float
    train_accuracy: float
    train_seconds: float
    invconv_parameters: int
    parameters: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CLASSIFIER_DATASETS = ("digits", "mnist", "mnist5k")
_FILES = ("classifier.pt", "metrics.json")


def train_classifier(cfg: ClassifierConfig) -> ClassifierResult:
    """Trains the classifier of ``cfg`` and writes it and its metrics to ``cfg.out``.
    The output directory is checked (writable; no earlier result unless ``overwrite``; no
    other process writing to it: :class:`RunLockedError`) before any work."""
    check_output_dir(cfg.out, "output directory (out)", create=False)
    refuse_if_locked(cfg.out, "output directory")
    _refuse_existing(cfg)  # a refused run leaves the directory untouched, lock file included
    with run_lock(cfg.out, "output directory", create=True) as claim:
        _refuse_existing(cfg)
        return _train_classifier(cfg, claim)


def _refuse_existing(cfg: ClassifierConfig) -> None:
    existing = [f for f in _FILES if os.path.exists(os.path.join(cfg.out, f))]
    if existing and not cfg.overwrite:
        raise RunExistsError(f"{cfg.out}: already holds a classifier ({', '.join(existing)}); "
                             f"replace it with --overwrite or choose another --out")


def _train_classifier(cfg: ClassifierConfig, claim) -> ClassifierResult:
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    train, test = load_dataset(cfg.dataset, "train", cfg.data_dir), load_dataset(cfg.dataset, "test", cfg.data_dir)
    require_usable_splits(cfg.dataset, train, test)
    for split, data in (("training", train), ("test", test)):
        if bool(((data.labels < 0) | (data.labels > 9)).any()):
            raise ValueError(f"dataset {cfg.dataset!r}: {split} labels must be classes 0–9, found "
                             f"{int(data.labels.min())}..{int(data.labels.max())}")
    claim.keep()  # the data is usable: the run starts
    remove_stale_temp_files(cfg.out, _FILES)
    scale = float(train.n_bins - 1)
    xtr, ytr = (train.images / scale).to(device), train.labels.to(device)
    xte, yte = (test.images / scale).to(device), test.labels.to(device)
    model = InvConvClassifier(train.shape[1], train.shape[2], 10, cfg.kernel_size).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(xtr), generator=g).to(device)
        for i in range(0, len(xtr), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - t0
    result = ClassifierResult(
        dataset=cfg.dataset, epochs=cfg.epochs, test_accuracy=accuracy(model, xte, yte),
        train_accuracy=accuracy(model, xtr, ytr), train_seconds=seconds,
        invconv_parameters=model.invconv_parameters(),
        parameters=sum(q.numel() for q in model.parameters()))
    atomic_save({"model": model.state_dict(), "metrics": result.to_dict()}, os.path.join(cfg.out, "classifier.pt"))
    atomic_write_json(result.to_dict(), os.path.join(cfg.out, "metrics.json"))
    return result
