"""Devices, solvers and torch operands of the verification suite; the oracle, the random
operands and the tolerance rule come from the package (invconv_core/oracle.py)."""

from __future__ import annotations

import pytest
import torch

# The oracle and its operands and tolerances ship with the package (invconv-verify uses them too).
from invconv_core.oracle import (UNIT_ROUNDOFF, make_weight, operand_arrays, rel_err,  # noqa: F401
                                 solve_tolerance, to_np, weight_grad_bound)

ORDERS = ("TL", "TR", "BL", "BR")
OPPOSITE = {"TL": "BR", "TR": "BL", "BL": "TR", "BR": "TL"}
# The devices every device-parametrised test and benchmark runs on. CUDA is always collected:
# a machine without a GPU shows those cases as skipped, not absent.
NO_GPU = not torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(NO_GPU, reason="no CUDA GPU on this machine")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_gpu)]
# The implementations of the inverse solve the dense-oracle tests check: the compiled CPU core,
# the CUDA kernel on a GPU, and the CUDA kernel's source run on the CPU under the SIMT emulation
# (cpp/emulation/; select with `pytest verification -k emulated`).
# "emulated-cuda-bands" is the same kernel with every image split into bands of rows over
# several blocks (kImageBand, what a GPU takes for small batches), at the thinnest bands
# (kh - 1 rows: every band hands over to the next) and 64 threads solving pairs (rounds; 64 more are the comm warps).
# "fallback" is the pure-PyTorch wavefront that serves when the compiled core cannot be loaded
# (and CUDA tensors in a CPU-only build), called directly.
SOLVERS = ["cpu", pytest.param("cuda", marks=needs_gpu), "emulated-cuda", "emulated-cuda-bands",
           "fallback"]
# the launch of "emulated-cuda-bands": band_rows=1 is raised to the halo, kh - 1 rows
BAND_LAUNCH = {"band_rows": 1, "threads": 128}


def solver_device(solver: str) -> str:
    """The device of the tensors a solver of SOLVERS takes."""
    return "cuda" if solver == "cuda" else "cpu"


def emulated_inv_conv2d(y, weight, order="TL", transpose=False, **launch):
    """The CUDA kernel under the CPU SIMT emulation (invconv_core._simt); `launch`: threads,
    max_blocks, shared_limit overrides of the launch limits, wide_index, and sm_count /
    band_rows (bands of rows over several blocks)."""
    import invconv_core._simt  # noqa: F401  (registers torch.ops.invconv_simt)
    return torch.ops.invconv_simt.inv_conv2d(y, weight, order, transpose, **launch)


def solve(solver: str, y, weight, order: str, transpose: bool = False):
    """T⁻¹ y (or T⁻ᵀ y) by the given solver of SOLVERS."""
    import invconv_core as ic
    if solver == "emulated-cuda":
        return emulated_inv_conv2d(y, weight, order, transpose)
    if solver == "emulated-cuda-bands":
        return emulated_inv_conv2d(y, weight, order, transpose, **BAND_LAUNCH)
    if solver == "fallback":
        from invconv_core.wavefront import wavefront_solve
        return wavefront_solve(y, weight, order, transpose)
    return (ic.inv_conv2d_transpose if transpose else ic.inv_conv2d)(y, weight, order)


def operands(C: int, kh: int, kw: int, order: str, shape: tuple, dtype=torch.float64,
             device="cpu", seed: int = 0, extra: int = 0, requires_grad: bool = False):
    """The operands of every test and benchmark: (weight, y, *extra) as tensors (see
    operand_arrays), optionally requiring grad."""
    return tuple(torch.tensor(a, dtype=dtype, device=device).requires_grad_(requires_grad)
                 for a in operand_arrays(C, kh, kw, order, shape, seed, extra))
