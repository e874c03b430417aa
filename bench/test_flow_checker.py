"""How long ``invconv_core.testing.check_flow_layer`` takes on our layers at the size its docs
recommend (a 2×3×4×4 example, float64, every property including gradcheck), one thread: the
checker is meant to run in a user's unit tests, target < 1 s per layer (docs/testing.md).

    pytest bench/test_flow_checker.py --benchmark-only
"""

from __future__ import annotations

import pytest
import torch

from invconv_core.flows import ActNorm, AffineCoupling, Conv1x1, InvConv2d, SmoothLeakyReLU
from invconv_core.testing import check_flow_layer

LAYERS = {
    "InvConv2d-inverse-k3": lambda: InvConv2d(3, 3, "TL", placement="inverse"),
    "InvConv2d-conv-k3": lambda: InvConv2d(3, 3, "BR", placement="conv"),
    "ActNorm": lambda: ActNorm(3),
    "AffineCoupling-w8": lambda: AffineCoupling(3, width=8),
    "Conv1x1": lambda: Conv1x1(3),
    "SmoothLeakyReLU": lambda: SmoothLeakyReLU(0.1),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_check_flow_layer_time(benchmark, name):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        layer = LAYERS[name]()
        example = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
        benchmark.group = "check_flow_layer 2x3x4x4 float64, 1 thread"
        report = benchmark(check_flow_layer, layer, example)
        assert report.passed, str(report)
    finally:
        torch.set_num_threads(threads)
