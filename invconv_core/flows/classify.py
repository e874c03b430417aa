r"""``invconv-classify``: the paper's small classifier (supplementary §8) — two inverse-of-
convolution layers and one linear layer.

    invconv-classify --dataset digits --epochs 50 --out runs/cls

Each inv-conv layer is a single-channel k×k ``InvConv2d`` in the inverse placement
(``x ↦ T⁻¹x``) with its current-pixel tap fixed to 1, so it has k² − 1 learnable weights
(16 for the two 3×3 layers, as in the paper). The layers use opposite orders (TL, then BR) and
are each followed by a ``tanh``: without a non-linearity the whole model would be one linear
map, i.e. a linear classifier. Writes ``OUT/metrics.json`` with ``test_accuracy``.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import load_dataset
from .io import atomic_save, atomic_write_json
from .layers import InvConv2d


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


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="invconv-classify", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=("digits", "mnist"), default="digits")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--out", required=True)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--kernel-size", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    train, test = load_dataset(args.dataset, "train", args.data_dir), load_dataset(args.dataset, "test", args.data_dir)
    scale = float(train.n_bins - 1)
    xtr, ytr = (train.images / scale).to(device), train.labels.to(device)
    xte, yte = (test.images / scale).to(device), test.labels.to(device)
    model = InvConvClassifier(train.shape[1], train.shape[2], 10, args.kernel_size).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        perm = torch.randperm(len(xtr), generator=g).to(device)
        for i in range(0, len(xtr), args.batch_size):
            idx = perm[i:i + args.batch_size]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - t0
    metrics = {"dataset": args.dataset, "epochs": args.epochs, "test_accuracy": accuracy(model, xte, yte),
               "train_accuracy": accuracy(model, xtr, ytr), "train_seconds": seconds,
               "invconv_parameters": model.invconv_parameters(),
               "parameters": sum(q.numel() for q in model.parameters())}
    os.makedirs(args.out, exist_ok=True)
    atomic_save({"model": model.state_dict(), "metrics": metrics}, os.path.join(args.out, "classifier.pt"))
    atomic_write_json(metrics, os.path.join(args.out, "metrics.json"))
    print(f"test accuracy {metrics['test_accuracy']:.4f} (train {metrics['train_accuracy']:.4f}) after "
          f"{args.epochs} epochs, {metrics['invconv_parameters']} inv-conv weights, {seconds:.1f} s")
    return metrics


if __name__ == "__main__":
    main()
