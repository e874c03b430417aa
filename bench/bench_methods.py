r"""The methods the scaling benchmarks compare, each behind one interface.

For x = T⁻¹y with T = T(w, order), a method provides three timed callables:
``forward`` (x from y, w), ``backward`` (∂L/∂y and ∂L/∂w from an upstream ∂L/∂x, the forward
already done) and ``forward_backward`` (both, as one training step needs).

- ``compiled``: invconv_core's registered op (C++ CPU kernel, or CUDA kernel when built).
- ``wavefront``: the pure-PyTorch anti-diagonal wavefront (invconv_core.wavefront) with the
  same backward formulas: one transposed wavefront solve + one weight-gradient correlation.
- ``sequential``: sparse T and sequential substitution, SciPy's ``spsolve_triangular``
  (SuperLU's triangular solve, compiled): O(nnz) = O(n·C·k²) work in n·C dependent steps,
  the Emerging-style baseline. Building the sparse T from w is part of the forward (it
  changes whenever w does); the backward reuses it.
- ``naive``: dense T and Gaussian elimination, ``torch.linalg.solve`` (LU, O((Cn)³)) with
  autograd through it and through the construction of T.
"""

from __future__ import annotations

import numpy as np
import torch
from cases import operands
from invconv_core.oracle import structure
from scipy.sparse import csr_array
from scipy.sparse.linalg import spsolve_triangular

import invconv_core as ic
from invconv_core.ops import _weight_grad
from invconv_core.wavefront import wavefront_solve

METHODS = ("compiled", "wavefront", "sequential", "naive")
MODES = ("forward", "backward", "forward_backward")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _compiled(y, w, gx, order):
    def forward():
        with torch.no_grad():
            return ic.inv_conv2d(y, w, order)

    yr, wr = y.detach().requires_grad_(True), w.detach().requires_grad_(True)
    x_graph = ic.inv_conv2d(yr, wr, order)

    def backward():
        return torch.autograd.grad(x_graph, (yr, wr), gx, retain_graph=True)

    def forward_backward():
        return torch.autograd.grad(ic.inv_conv2d(yr, wr, order), (yr, wr), gx)

    return forward, backward, forward_backward


def _wavefront(y, w, gx, order):
    def forward():
        return wavefront_solve(y, w, order)

    x = forward()

    def backward_from(x):
        gy = wavefront_solve(gx, w, order, transpose=True)
        return gy, -_weight_grad(x, gy, w, order)

    def forward_backward():
        return backward_from(forward())

    return forward, (lambda: backward_from(x)), forward_backward


def _sequential(y, w, gx, order):
    B, C, H, W = y.shape
    kh, kw = w.shape[2], w.shape[3]
    rows, cols, widx, perm = structure(C, H, W, kh, kw, order)
    N = C * H * W
    inv_perm = np.empty_like(perm)
    inv_perm[perm] = np.arange(N)
    # T in wavefront (lower-triangular) order: entry (rows, cols) moves to (inv_perm[rows], ...)
    prow, pcol = inv_perm[rows], inv_perm[cols]
    w_flat = w.detach().cpu().numpy().reshape(-1)
    y_np = y.detach().cpu().numpy().reshape(B, N)
    gx_np = gx.detach().cpu().numpy().reshape(B, N)

    def build():
        return csr_array((w_flat[widx], (prow, pcol)), shape=(N, N))

    def solve(T):
        return spsolve_triangular(T, y_np[:, perm].T, lower=True)  # (N, B), wavefront order

    def grads(T, xp):
        gyp = spsolve_triangular(T.T.tocsr(), gx_np[:, perm].T, lower=False)
        # gw_a = -sum over the entries of tap a of gy[row] * x[col], summed over the batch
        contrib = -(gyp[prow] * xp[pcol]).sum(axis=1)
        return gyp, np.bincount(widx, weights=contrib, minlength=w_flat.size)

    T0 = build()
    x0 = solve(T0)

    def forward():
        return solve(build())

    def forward_backward():
        T = build()
        return grads(T, solve(T))

    return forward, (lambda: grads(T0, x0)), forward_backward


def _naive(y, w, gx, order):
    B, C, H, W = y.shape
    kh, kw = w.shape[2], w.shape[3]
    rows, cols, widx, _ = structure(C, H, W, kh, kw, order)
    N = C * H * W
    dev = y.device
    flat_index = torch.as_tensor(rows * N + cols, device=dev)
    widx_t = torch.as_tensor(widx, device=dev)

    def dense_T(w):
        return torch.zeros(N * N, dtype=w.dtype, device=dev).index_add(
            0, flat_index, w.reshape(-1)[widx_t]).reshape(N, N)

    def solve(y, w):
        return torch.linalg.solve(dense_T(w), y.reshape(B, N).T).T.reshape(y.shape)

    def forward():
        with torch.no_grad():
            return solve(y, w)

    yr, wr = y.detach().requires_grad_(True), w.detach().requires_grad_(True)
    x_graph = solve(yr, wr)

    def backward():
        return torch.autograd.grad(x_graph, (yr, wr), gx, retain_graph=True)

    def forward_backward():
        return torch.autograd.grad(solve(yr, wr), (yr, wr), gx)

    return forward, backward, forward_backward


_FACTORIES = {"compiled": _compiled, "wavefront": _wavefront, "sequential": _sequential,
              "naive": _naive}


def make_problem(B, C, m, k, device, dtype=torch.float32, seed=0):
    """A well-conditioned (y, w, ∂L/∂x) triple of shapes (B, C, m, m) and (C, C, k, k), order TL
    (the verification suite's operand builder)."""
    w, y, gx = operands(C, k, k, "TL", (B, C, m, m), dtype, device, seed, extra=1)
    return y, w, gx


def timed_callable(method: str, mode: str, B, C, m, k, device, order="TL"):
    """The callable to time (it synchronises the device before returning)."""
    y, w, gx = make_problem(B, C, m, k, device)
    fns = dict(zip(MODES, _FACTORIES[method](y, w, gx, order)))
    fn = fns[mode]

    def call():
        out = fn()
        _sync(device)
        return out

    return call
