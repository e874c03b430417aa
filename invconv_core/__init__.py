r"""invconv_core: exact, fast inverse of invertible causal convolutions, with exact backprop.

    y = causal_conv2d(x, w, order)      # masked k×k convolution padded in one corner
    x = inv_conv2d(y, w, order)         # its exact inverse: a wavefront solve, H+W-1 steps
    logabsdet(w, H, W, order)           # log|det| of causal_conv2d for one image

The math is in docs/design.md of the repository; ``backend_info()`` tells what runs.
"""

from __future__ import annotations

import torch

from . import _loader
from ._geometry import ORDERS, current_tap
from ._version import __version__
from .ops import (
    causal_conv2d,
    check_invertible,
    inv_conv2d,
    inv_conv2d_transpose,
    inverse_residual,
    logabsdet,
)

__all__ = [
    "__version__",
    "ORDERS",
    "backend_info",
    "causal_conv2d",
    "check_invertible",
    "current_tap",
    "inv_conv2d",
    "inv_conv2d_transpose",
    "inverse_residual",
    "logabsdet",
]


def backend_info() -> dict:
    """What serves the operators.

    Keys: ``compiled`` (the C++ core is loaded), ``cuda`` (CUDA kernels are compiled in),
    ``version`` (of invconv_core), ``torch`` (running torch), ``load_error`` (why the compiled
    core is missing, else None), and the compiled core's build facts when it is loaded --
    among them ``cpu_isa``, the instruction set its CPU kernels run with in this process
    (``"x86-64-v3"`` or ``"baseline"``; ``INVCONV_CPU_ISA=baseline`` forces the latter).
    """
    info = {
        "compiled": _loader.COMPILED,
        "cuda": bool(_loader.BUILD_INFO.get("cuda", False)),
        "version": __version__,
        "torch": torch.__version__,
        "load_error": _loader.LOAD_ERROR,
    }
    for k, v in _loader.BUILD_INFO.items():
        info.setdefault(k, v)
    return info
