"""Sparse and quantized operands: a TypeError naming the argument, like every other bad operand.

Without these kernels the dispatcher answered a sparse or quantized tensor with
NotImplementedError ("Could not run 'invconv_core::inv_conv2d' with arguments from the
'SparseCPU' backend ...") or a RuntimeError from deep inside a convolution. Both operators take
dense (strided) real floating tensors only (cpp/solve_plan.cpp, _geometry.py)."""

from __future__ import annotations

import torch

from ._geometry import check_dense

__all__ = ["UNSUPPORTED_KEYS"]

_lib = torch.library.Library("invconv_core", "IMPL")

UNSUPPORTED_KEYS = ("SparseCPU", "SparseCUDA", "SparseCsrCPU", "SparseCsrCUDA", "QuantizedCPU",
                    "QuantizedCUDA")


def _refuse(input_name: str, *tensors_and_names):
    for t, name in tensors_and_names:
        check_dense(t, name)
    raise TypeError(f"invconv_core: {input_name} and weight must be dense floating tensors")


def _inv_conv2d(y, weight, order="TL", transpose=False):
    _refuse("y", (y, "y"), (weight, "weight"))


def _causal_conv2d(x, weight, order="TL"):
    _refuse("x", (x, "x"), (weight, "weight"))


for _key in UNSUPPORTED_KEYS:
    _lib.impl("inv_conv2d", _inv_conv2d, _key)
    _lib.impl("causal_conv2d", _causal_conv2d, _key)
