"""The two sides every "our op beside conv2d" benchmark times (test_core_vs_conv2d.py,
test_flow_shapes.py): the callables for the inverse and conv2d of the same shape, forward and
forward+backward, and how one is run on each device."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import invconv_core as ic


def run(benchmark, device: str, fn) -> None:
    """pytest-benchmark ``fn``; on CUDA (asynchronous) fixed rounds, each synchronised."""
    if device == "cuda":
        def call():
            out = fn()
            torch.cuda.synchronize()
            return out
        benchmark.pedantic(call, rounds=30, iterations=1, warmup_rounds=3)
    else:
        benchmark(fn)


def forward(impl: str, y: torch.Tensor, w: torch.Tensor):
    """conv2d on the input padded once beforehand, or the inverse, order TL."""
    if impl == "conv2d":
        padded = F.pad(y, (w.shape[3] - 1, 0, w.shape[2] - 1, 0))
        return lambda: F.conv2d(padded, w)
    return lambda: ic.inv_conv2d(y, w)


def forward_backward(impl: str, y: torch.Tensor, w: torch.Tensor, g: torch.Tensor):
    """Forward plus the full backward (∂L/∂input and ∂L/∂weight) for the upstream gradient g;
    y and w require grad."""
    pad = (w.shape[3] - 1, 0, w.shape[2] - 1, 0)

    def conv():
        return torch.autograd.grad(F.conv2d(F.pad(y, pad), w), (y, w), g)

    def inv():
        return torch.autograd.grad(ic.inv_conv2d(y, w), (y, w), g)

    return conv if impl == "conv2d" else inv
