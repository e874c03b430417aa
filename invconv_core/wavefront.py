r"""Pure-PyTorch implementation of the two operators: the fallback when the compiled core cannot
be loaded, and an independent second implementation for the tests.

``wavefront_solve`` computes ``x = T(w, o)^{-1} y`` (or ``T^{-T} y``) anti-diagonal by
anti-diagonal: every pixel of the diagonal i + j = d is solved at once (one batched gather of
its taps, one ``einsum`` and one small ``solve_triangular`` for the C x C current tap), so the
Python loop runs H + W - 1 times. It is a different algorithm from the compiled kernel (which
substitutes pixel by pixel with hand-written loops), which is what makes their agreement a test.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._geometry import OPPOSITE, check_operands, check_order, flips, masked_weight, pad_amounts

__all__ = ["wavefront_solve", "causal_conv2d_composite"]


def causal_conv2d_composite(x: torch.Tensor, weight: torch.Tensor, order: str = "TL") -> torch.Tensor:
    """``conv2d(pad(x), mask(weight))`` for x (N, C, H, W), weight (C, C, kh, kw); the masked
    entries of the weight are ignored, whatever they hold (NaN included).

    The one implementation of ``invconv_core::causal_conv2d`` (CompositeImplicitAutograd,
    registered by _loader.py whether or not the compiled core loads): plain ATen ops, so
    autograd, oneDNN/cuDNN and torch.compile see through it."""
    check_operands(x, weight, "x")
    check_order(order)
    masked = masked_weight(weight, order)
    if x.shape[2] == 0 or x.shape[3] == 0:  # no pixels: conv2d rejects the padded input
        return (x * masked.sum()).contiguous()
    kh, kw = weight.shape[2], weight.shape[3]
    return F.conv2d(F.pad(x, pad_amounts(order, kh, kw)), masked)


def wavefront_solve(y: torch.Tensor, weight: torch.Tensor, order: str = "TL",
                    transpose: bool = False) -> torch.Tensor:
    r"""Solve ``causal_conv2d(x, weight, order) = y`` for x, or the transposed system.

    Args:
        y: (N, C, H, W) right-hand side, floating dtype.
        weight: (C, C, kh, kw), same dtype and device as ``y``.
        order: "TL", "TR", "BL" or "BR".
        transpose: solve ``T^T x = y`` instead (the adjoint used by the backward).
    Returns:
        x, contiguous (N, C, H, W), dtype of ``y``. float16/bfloat16 are solved in float32.
    """
    check_operands(y, weight, "y")
    check_order(order)
    out_dtype = y.dtype
    acc = torch.float64 if y.dtype == torch.float64 else torch.float32
    y = y.to(acc)
    w = weight.to(acc)
    if transpose:
        # T(w, o)^T = P T(v, opposite(o)) P, v[c, c', a, b] = w[C-1-c', C-1-c, kh-1-a, kw-1-b]
        w = w.flip(0, 1, 2, 3).transpose(0, 1)
        order = OPPOSITE[order]
        y = y.flip(1)
    rows, cols = flips(order)
    dims = [d for d, f in ((2, rows), (3, cols)) if f]
    if dims:  # reduce to the TL problem
        y = y.flip(dims)
        w = w.flip(dims)
    n, c, h, wd = y.shape
    # taps reaching further than the image only ever read padding
    kh, kw = min(w.shape[2], h), min(w.shape[3], wd)
    w = w[:, :, w.shape[2] - kh:, w.shape[3] - kw:]
    xp = y.new_zeros(n, c, h + kh - 1, wd + kw - 1)
    taps = [(a, b) for a in range(kh) for b in range(kw) if (a, b) != (kh - 1, kw - 1)]
    ta = torch.tensor([a for a, _ in taps], dtype=torch.long, device=y.device)
    tb = torch.tensor([b for _, b in taps], dtype=torch.long, device=y.device)
    w_taps = w[:, :, ta, tb]  # (C, C', taps)
    lower = w[:, :, kh - 1, kw - 1].tril()
    for d in range(h + wd - 1):
        i = torch.arange(max(0, d - wd + 1), min(h - 1, d) + 1, device=y.device)
        j = d - i
        rhs = y[:, :, i, j]  # (N, C, P)
        if taps:
            patch = xp[:, :, i[None, :] + ta[:, None], j[None, :] + tb[:, None]]  # (N, C', taps, P)
            rhs = rhs - torch.einsum("cdt,ndtp->ncp", w_taps, patch)
        p = i.numel()
        sol = torch.linalg.solve_triangular(lower, rhs.transpose(0, 1).reshape(c, n * p), upper=False)
        xp[:, :, i + kh - 1, j + kw - 1] = sol.reshape(c, n, p).transpose(0, 1)
    x = xp[:, :, kh - 1:, kw - 1:]
    if dims:
        x = x.flip(dims)
    if transpose:
        x = x.flip(1)
    return x.to(out_dtype).contiguous()
