r"""The operators under ``torch.autocast``: both run in the widest dtype of their operands, at
least float32, with autocast off inside.

Under autocast a flow's activations arrive in bfloat16/float16 while its parameters stay
float32; the ops need one dtype (their dtype error said so, and Inverse-Flow, FInC and Emerging
models failed under ``torch.autocast("cpu", dtype=torch.bfloat16)``). A triangular solve
amplifies rounding with the depth of the recursion (H + W − 1 dependent steps), so neither op
is run in a 16-bit type under autocast: like the ops autocast keeps in float32 (``torch.linalg``
solves, ``exp``, norms), they compute in float32 -- or float64 when an operand is float64 -- and
return that dtype. Outside autocast nothing changes: mixed dtypes are still a TypeError.
"""

from __future__ import annotations

import torch

__all__ = ["AUTOCAST_DEVICES", "autocast_dtype"]

_lib = torch.library.Library("invconv_core", "IMPL")


def autocast_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype both operators compute in under autocast: the widest, at least float32."""
    out = torch.float32
    for d in dtypes:
        out = torch.promote_types(out, d)
    return out


def _register(device_type: str) -> None:
    key = "Autocast" + {"cpu": "CPU", "cuda": "CUDA"}[device_type]

    def inv_conv2d(y, weight, order="TL", transpose=False):
        dtype = autocast_dtype(y.dtype, weight.dtype)
        with torch.autocast(device_type, enabled=False):
            return torch.ops.invconv_core.inv_conv2d(y.to(dtype), weight.to(dtype), order, transpose)

    def causal_conv2d(x, weight, order="TL"):
        dtype = autocast_dtype(x.dtype, weight.dtype)
        with torch.autocast(device_type, enabled=False):
            return torch.ops.invconv_core.causal_conv2d(x.to(dtype), weight.to(dtype), order)

    _lib.impl("inv_conv2d", inv_conv2d, key)
    _lib.impl("causal_conv2d", causal_conv2d, key)


AUTOCAST_DEVICES = ("cpu", "cuda")
for _device in AUTOCAST_DEVICES:
    _register(_device)
