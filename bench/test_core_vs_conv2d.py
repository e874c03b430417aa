"""The compiled core against F.conv2d of the same shape (issue: within 3× on CPU for
B=16, C=12, 32×32, k=3, float32; on CUDA the targets of the CUDA issue), and on
single-channel images.

Each group holds the reference (plain conv2d) and our op side by side, so the ratio comes
from one run: ``pytest bench/test_core_vs_conv2d.py --benchmark-only --benchmark-group-by=group``.
"""

from __future__ import annotations

import pytest
import torch

import pairs
from cases import DEVICES, operands

# (B, C, H = W, k): the flow-layer shape of the core issue, then single-channel images as a
# deconvolution model meets them (C = 1 takes its own, pixel-vectorised path in the CPU kernel).
SHAPES = [(16, 12, 32, 3), (1, 1, 256, 3), (1, 1, 512, 7), (1, 1, 512, 15), (1, 1, 1024, 3)]
if torch.cuda.is_available():
    SHAPES += [(100, 12, 16, 3), (100, 12, 32, 3), (100, 48, 8, 3)]


def _operands(device, B, C, H, k, requires_grad=False):
    w, y = operands(C, k, k, "TL", (B, C, H, H), torch.float32, device, requires_grad=requires_grad)
    return y, w


def _grid(test):
    """Every device × shape × implementation (the reference conv2d and our op)."""
    test = pytest.mark.parametrize("impl", ["conv2d", "inv_conv2d"])(test)
    test = pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B%d-C%d-%dx%d-k%d" % (s[0], s[1], s[2], s[2], s[3]))(test)
    return pytest.mark.parametrize("device", DEVICES)(test)


@_grid
def test_forward(benchmark, device, shape, impl):
    B, C, H, k = shape
    benchmark.group = f"forward {device} B{B} C{C} {H}x{H} k{k}"
    y, w = _operands(device, B, C, H, k)
    with torch.no_grad():
        pairs.run(benchmark, device, pairs.forward(impl, y, w))


@_grid
def test_forward_backward(benchmark, device, shape, impl):
    """Forward plus the full backward (∂L/∂input and ∂L/∂weight)."""
    B, C, H, k = shape
    benchmark.group = f"forward+backward {device} B{B} C{C} {H}x{H} k{k}"
    y, w = _operands(device, B, C, H, k, requires_grad=True)
    g = torch.randn(y.shape, device=device)
    pairs.run(benchmark, device, pairs.forward_backward(impl, y, w, g))
