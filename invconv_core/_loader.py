"""Loads the compiled core, or registers the pure-PyTorch implementation in its place.

``INVCONV_DISABLE_COMPILED=1`` forces the pure-PyTorch path (to compare or debug).

Either way the operators ``torch.ops.invconv_core.causal_conv2d`` and
``torch.ops.invconv_core.inv_conv2d`` exist after import with the same schemas, so autograd,
fake tensors and the public wrappers (ops.py) do not care which implementation runs.
"""

from __future__ import annotations

import os
import warnings

import torch

from .wavefront import causal_conv2d_composite, wavefront_solve

__all__ = ["COMPILED", "BUILD_INFO", "LOAD_ERROR"]

# Kept equal to the TORCH_LIBRARY block in cpp/invconv.cpp.
SCHEMAS = (
    'causal_conv2d(Tensor x, Tensor weight, str order="TL") -> Tensor',
    'inv_conv2d(Tensor y, Tensor weight, str order="TL", bool transpose=False) -> Tensor',
)

COMPILED = False
BUILD_INFO: dict = {}
LOAD_ERROR: str | None = None
_FALLBACK_LIB = None


def _fallback_inv_conv2d(y, weight, order="TL", transpose=False):
    return wavefront_solve(y, weight, order, transpose)


def _register_fallback() -> None:
    global _FALLBACK_LIB
    lib = torch.library.Library("invconv_core", "DEF")
    for schema in SCHEMAS:
        lib.define(schema)
    lib.impl("causal_conv2d", causal_conv2d_composite, "CompositeImplicitAutograd")
    for key in ("CPU", "CUDA"):
        lib.impl("inv_conv2d", _fallback_inv_conv2d, key)
    _FALLBACK_LIB = lib  # the registrations live as long as this object


def _check_environment() -> None:
    """One warning per unknown value of the package's switches (a typo would otherwise be
    silently ignored: INVCONV_DISABLE_COMPILED=true kept the compiled core)."""
    known = {"INVCONV_DISABLE_COMPILED": ("", "0", "1"), "INVCONV_CPU_ISA": ("", "baseline")}
    for name, values in known.items():
        value = os.environ.get(name)
        if value is not None and value not in values:
            warnings.warn(f"invconv_core: {name}={value!r} is not one of "
                          f"{', '.join(repr(v) for v in values if v)}; ignored", RuntimeWarning,
                          stacklevel=3)


_check_environment()
try:
    if os.environ.get("INVCONV_DISABLE_COMPILED", "0") == "1":
        raise ImportError("disabled by INVCONV_DISABLE_COMPILED=1")
    from . import _C  # noqa: F401  (registers the ops as a side effect)

    COMPILED = True
    BUILD_INFO = dict(_C.build_info())
except ImportError as err:  # not built, built against another torch, or disabled
    LOAD_ERROR = f"{type(err).__name__}: {err}"
    _here = os.path.dirname(os.path.abspath(__file__))
    if os.path.isfile(os.path.join(_here, os.pardir, "setup.py")) and "INVCONV_DISABLE" not in LOAD_ERROR:
        # `python -m invconv_core...` run in a checkout imports the source tree, not the install
        LOAD_ERROR += (f" (imported from the source checkout {_here}, which has no compiled "
                       f"core: run from another directory, use `python -I`, or build in place with "
                       f"`pip install --no-build-isolation -e .`)")
    warnings.warn(
        "invconv_core: the compiled core could not be loaded "
        f"({LOAD_ERROR}); using the pure-PyTorch wavefront implementation, which is correct "
        "but much slower. Build it with `pip install --no-build-isolation -e .`.",
        RuntimeWarning,
        stacklevel=3,
    )
    _register_fallback()

if COMPILED:
    # The compiled core defines the schemas and the inv_conv2d kernels; causal_conv2d's one
    # implementation is the composite in wavefront.py (the fallback needs it too).
    _PYTHON_IMPLS = torch.library.Library("invconv_core", "IMPL")  # lives as long as the module
    _PYTHON_IMPLS.impl("causal_conv2d", causal_conv2d_composite, "CompositeImplicitAutograd")

if COMPILED and not BUILD_INFO.get("cuda", False):
    # A CPU-only build on a machine with GPUs: CUDA tensors are still served, by the wavefront
    # in PyTorch ops, with one warning, instead of failing with a dispatcher error.
    _warned_cuda = False

    def _cuda_inv_conv2d(y, weight, order="TL", transpose=False):
        global _warned_cuda
        if not _warned_cuda:
            _warned_cuda = True
            warnings.warn("invconv_core: the compiled core was built without CUDA kernels; "
                          "CUDA tensors use the pure-PyTorch wavefront (slower). Rebuild on a "
                          "machine with a CUDA toolkit to get the CUDA kernels.",
                          RuntimeWarning, stacklevel=2)
        return wavefront_solve(y, weight, order, transpose)

    _PYTHON_IMPLS.impl("inv_conv2d", _cuda_inv_conv2d, "CUDA")
