"""Test-case generators and the tolerance rule shared by the verification suite."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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
SOLVERS = ["cpu", pytest.param("cuda", marks=needs_gpu), "emulated-cuda"]


def solver_device(solver: str) -> str:
    """The device of the tensors a solver of SOLVERS takes."""
    return "cuda" if solver == "cuda" else "cpu"


def emulated_inv_conv2d(y, weight, order="TL", transpose=False, **launch):
    """The CUDA kernel under the CPU SIMT emulation (invconv_core._simt); `launch`: threads,
    max_blocks, shared_limit overrides of the launch limits."""
    import invconv_core._simt  # noqa: F401  (registers torch.ops.invconv_simt)
    return torch.ops.invconv_simt.inv_conv2d(y, weight, order, transpose, **launch)


def solve(solver: str, y, weight, order: str, transpose: bool = False):
    """T⁻¹ y (or T⁻ᵀ y) by the given solver of SOLVERS."""
    import invconv_core as ic
    if solver == "emulated-cuda":
        return emulated_inv_conv2d(y, weight, order, transpose)
    return (ic.inv_conv2d_transpose if transpose else ic.inv_conv2d)(y, weight, order)
# unit roundoff of each dtype the solver computes in (half types accumulate in float32)
UNIT_ROUNDOFF = {torch.float64: 2.0**-53, torch.float32: 2.0**-24,
                 torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


def current_tap(order: str, kh: int, kw: int) -> tuple[int, int]:
    return (0 if order in ("BL", "BR") else kh - 1), (0 if order in ("TR", "BR") else kw - 1)


def make_weight(rng: np.random.Generator, C: int, kh: int, kw: int, order: str,
                off_scale: float = 0.3, garbage_above_diagonal: bool = True) -> np.ndarray:
    """A well-conditioned weight, as a trained flow keeps it: current-tap diagonal of magnitude
    in [0.5, 2] with random sign, strictly-lower current entries and the other taps small
    (their total row mass is about ``off_scale`` of the smallest diagonal). The entries above the
    diagonal of the current tap get large random values: the operators must ignore them."""
    n = C * kh * kw
    w = rng.standard_normal((C, C, kh, kw)) * (off_scale * 0.5 / np.sqrt(n))
    a, b = current_tap(order, kh, kw)
    cur = np.tril(rng.standard_normal((C, C)) * (off_scale * 0.5 / np.sqrt(C)), -1)
    cur += np.diag(rng.uniform(0.5, 2.0, C) * rng.choice([-1.0, 1.0], C))
    if garbage_above_diagonal:
        cur += np.triu(rng.standard_normal((C, C)) * 3.0, 1)
    w[:, :, a, b] = cur
    return w


def operand_arrays(C: int, kh: int, kw: int, order: str, shape: tuple, seed: int = 0,
                   extra: int = 0) -> list[np.ndarray]:
    """[weight, y, *extra tensors of `shape`] as float64 arrays from one seeded generator: the
    weight of make_weight (well conditioned, garbage above the current tap's diagonal), then
    standard-normal arrays."""
    rng = np.random.default_rng(seed)
    return [make_weight(rng, C, kh, kw, order)] + [rng.standard_normal(shape) for _ in range(1 + extra)]


def operands(C: int, kh: int, kw: int, order: str, shape: tuple, dtype=torch.float64,
             device="cpu", seed: int = 0, extra: int = 0, requires_grad: bool = False):
    """The operands of every test and benchmark: (weight, y, *extra) as tensors (see
    operand_arrays), optionally requiring grad."""
    return tuple(torch.tensor(a, dtype=dtype, device=device).requires_grad_(requires_grad)
                 for a in operand_arrays(C, kh, kw, order, shape, seed, extra))


def solve_tolerance(cond: float, terms: int, dtype: torch.dtype) -> float:
    """Normwise relative error allowed for a triangular solve: the classical forward-error
    bound cond(T) · n · u (Higham, Accuracy and Stability, Thm 8.5 with n the terms summed per
    unknown), with a safety factor 4 and at least a few units in the last place."""
    u = UNIT_ROUNDOFF[torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype]
    tol = 4.0 * cond * max(terms, 1) * u
    if dtype in (torch.float16, torch.bfloat16):  # plus rounding the result to the half type
        tol += 2.0 * UNIT_ROUNDOFF[dtype]
    return tol


def rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    den = np.linalg.norm(expected)
    num = np.linalg.norm(np.asarray(actual, dtype=np.float64) - expected)
    return float(num / den) if den > 0 else float(num)


def to_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()
