"""The compiled core at the shapes a multi-scale flow feeds it, each beside `F.conv2d` of the
same shape in the same run (float32, k = 3, order TL): the inverse against conv2d's forward,
and forward+backward (∂L/∂input and ∂L/∂weight) against conv2d's.

    pytest bench/test_flow_shapes.py --benchmark-only --benchmark-json=flow.json
    python bench/flow_shapes_report.py flow.json

The report prints one line per shape with both ratios (targets: ≤ 1.2× at B = 100, ≤ 2× at
B = 1; bench/RESULTS.md).
"""

from __future__ import annotations

import pytest
import torch
import pairs
from cases import DEVICES, operands


K = 3
# (B, C, H = W) and the flow level that feeds it
FLOW_SHAPES = {
    (100, 4, 4): "digits level 1",
    (100, 8, 2): "digits level 2",
    (100, 4, 14): "MNIST level 1",
    (100, 8, 7): "MNIST level 2",
    (100, 12, 16): "CIFAR level 1",
    (100, 24, 8): "CIFAR level 2",
    (100, 48, 4): "CIFAR level 3",
    (1, 4, 4): "one image, inference",
}


def group_name(mode: str, device: str, B: int, C: int, H: int) -> str:
    return f"flow {mode} {device} B{B} C{C} {H}x{H}"


def _grid(test):
    test = pytest.mark.parametrize("impl", ["conv2d", "inv_conv2d"])(test)
    test = pytest.mark.parametrize("shape", list(FLOW_SHAPES), ids=lambda s: "B%d-C%d-%dx%d" % (s[0], s[1], s[2], s[2]))(test)
    return pytest.mark.parametrize("device", DEVICES)(test)


@_grid
def test_flow_forward(benchmark, device, shape, impl):
    B, C, H = shape
    benchmark.group = group_name("forward", device, B, C, H)
    w, y = operands(C, K, K, "TL", (B, C, H, H), torch.float32, device)
    with torch.no_grad():
        pairs.run(benchmark, device, pairs.forward(impl, y, w))


@_grid
def test_flow_forward_backward(benchmark, device, shape, impl):
    B, C, H = shape
    benchmark.group = group_name("forward+backward", device, B, C, H)
    w, y, g = operands(C, K, K, "TL", (B, C, H, H), torch.float32, device, extra=1, requires_grad=True)
    pairs.run(benchmark, device, pairs.forward_backward(impl, y, w, g.detach()))
