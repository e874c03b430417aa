r"""Public operators: the causal convolution, its exact inverse, and their log-determinant.

Notation (docs/design.md): ``T = T(w, o)`` is the (C·H·W)×(C·H·W) matrix of
``causal_conv2d(·, w, o)``; it is block-triangular with the lower-triangular C×C current-pixel
tap on its diagonal, so it is invertible iff every ``w[c, c, current]`` is non-zero and
``log|det T| = H·W·Σ_c log|w[c, c, current]|``.

Backward of ``x = inv_conv2d(y, w)`` for an upstream gradient ``gx = ∂L/∂x``::

    gy = T^{-T} gx                                      one more wavefront solve (the adjoint)
    gw = -∂/∂w <gy, causal_conv2d(x, w)>                one weight-gradient correlation, masked

The adjoint solve is the same solver run on the opposite corner with the kernel flipped and
its channel axes swapped and reversed: ``T(w,o)^T = P T(v, opposite(o)) P`` (cpp/solve_plan.h).
This is the paper's Theorems 1 and 2 (docs/design.md §2) in another form: Theorem 1's
impulse responses ∂x_q/∂y_p are the columns of T^{-1}, and ``gy = T^{-T} gx`` sums them
against gx in one solve instead of forming them; Theorem 2's recursion
``∂x_q/∂W_a = -x_{q-a} - Σ W ∂x/∂W_a`` is ``∂x/∂W_a = -T^{-1} (∂T/∂W_a) x``, whose contraction
with gx is ``-gyᵀ (∂T/∂W_a) x`` -- the correlation above, with no O(B·C·k²·H·W) buffer.

The transposed solve differentiates the same way (for ``x = T^{-T} y``: ``gy = T^{-1} gx`` and
``gw = -∂/∂w <x, causal_conv2d(gy, w)>``), so the backward is built from registered
differentiable ops and second derivatives (``gradgradcheck``, Hessian-vector products) work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _loader  # noqa: F401  (makes sure torch.ops.invconv_core.* exist)
from ._geometry import (check_operands, check_order, check_weight_shape, current_tap,
                        pad_amounts, tap_mask)
from . import _autocast  # noqa: F401  (the ops' autocast kernels)
from . import _layouts  # noqa: F401  (sparse and quantized operands: TypeError)
from . import _transforms
from ._transforms import InvConv2dFunction, transforms_active

__all__ = ["causal_conv2d", "inv_conv2d", "inv_conv2d_transpose", "logabsdet",
           "check_invertible", "inverse_residual"]

_ops = torch.ops.invconv_core


def causal_conv2d(x: torch.Tensor, weight: torch.Tensor, order: str = "TL") -> torch.Tensor:
    r"""Masked causal convolution ``y = T(weight, order) x``.

    ``conv2d(pad(x, PAD[order]), mask(weight, order))``: with ``"TL"`` output pixel (i, j) reads
    input pixels (i', j') with i' <= i, j' <= j; the other orders put the padding in the other
    corners. Entries of the current-pixel tap above the channel diagonal are ignored.

    Args:
        x: (N, C, H, W), floating dtype.
        weight: (C, C, kh, kw), any kh, kw >= 1; same dtype and device as x.
        order: "TL", "TR", "BL" or "BR".
    Returns:
        y: (N, C, H, W), same dtype and device as x.
    """
    return _ops.causal_conv2d(x, weight, check_order(order))


def inv_conv2d(y: torch.Tensor, weight: torch.Tensor, order: str = "TL", *,
               check: bool = False) -> torch.Tensor:
    r"""Exact inverse of :func:`causal_conv2d`: the x with ``causal_conv2d(x, weight, order) == y``.

    A wavefront solve: H + W - 1 dependent steps, O(N·H·W·C²·kh·kw) work (that of one
    convolution). Differentiable in ``y`` and ``weight`` to any order, in reverse and forward
    mode, and under ``torch.func`` (``grad``, ``jacrev``, ``jvp``, ``jacfwd``, ``vmap``,
    ``hessian``; see invconv_core/_transforms.py).

    The matrix is singular when a diagonal entry ``weight[c, c, current]`` of the current-pixel
    tap is zero; the solve then returns inf/NaN. ``check=True`` raises a ``ValueError``
    instead (one small reduction, and on a GPU one host synchronisation).

    Args:
        y: (N, C, H, W), float16, bfloat16, float32 or float64 (half types accumulate in float32).
        weight: (C, C, kh, kw), same dtype and device as y.
        order: "TL", "TR", "BL" or "BR" -- must match the convolution being inverted.
    Returns:
        x: (N, C, H, W), contiguous, dtype and device of y.
    """
    check_order(order)
    if check:
        check_invertible(weight, order)
    if transforms_active():  # torch.func / forward AD: the formula they understand (_transforms.py)
        return InvConv2dFunction.apply(y, weight, order, False)
    return _ops.inv_conv2d(y, weight, order, False)


def inv_conv2d_transpose(g: torch.Tensor, weight: torch.Tensor, order: str = "TL") -> torch.Tensor:
    r"""``T(weight, order)^{-T} g``: the adjoint solve (∂L/∂y of :func:`inv_conv2d`). Shapes as
    in :func:`inv_conv2d`."""
    check_order(order)
    if transforms_active():
        return InvConv2dFunction.apply(g, weight, order, True)
    return _ops.inv_conv2d(g, weight, order, True)


def check_invertible(weight: torch.Tensor, order: str = "TL") -> None:
    """Raise ``ValueError`` if ``T(weight, order)`` cannot be inverted in the weight's dtype: a
    diagonal entry of the current-pixel tap that is zero, subnormal (its reciprocal overflows:
    1e-45 in float32 gave 47 of 48 outputs non-finite) or not finite, or any other entry the
    convolution reads that is not finite (the ignored entries above the current tap's channel
    diagonal may hold anything)."""
    check_order(order)
    check_weight_shape(weight)
    a, b = current_tap(order, weight.shape[2], weight.shape[3])
    w = weight.detach()
    diag = w[:, :, a, b].diagonal()
    bad = (diag.abs() < torch.finfo(w.dtype).tiny) | ~torch.isfinite(diag)
    if bool(bad.any()):
        channels = bad.nonzero().flatten().tolist()
        raise ValueError(
            f"invconv_core: weight[c, c, {a}, {b}] (the current-pixel tap of order {order!r}) is "
            f"zero, subnormal or not finite for channels {channels}: the convolution is not "
            f"invertible")
    read = torch.isfinite(w) | ~tap_mask(w, order).bool()
    if not bool(read.all()):
        first = [int(i) for i in (~read).nonzero()[0]]
        raise ValueError(f"invconv_core: weight holds a non-finite entry the convolution reads "
                         f"(first at weight[{', '.join(map(str, first))}]): the inverse would be "
                         f"inf/NaN")


def logabsdet(weight: torch.Tensor, height: int, width: int, order: str = "TL") -> torch.Tensor:
    r"""``log|det T(weight, order)|`` for one H×W image: ``H·W·Σ_c log|weight[c, c, current]|``.

    A 0-d tensor, differentiable in ``weight``. The log-det of :func:`inv_conv2d` is its
    negative. It is accumulated in float32 or wider: for a float16/bfloat16 weight the result is
    **float32** (a float16 sum overflows to -inf already at C = 12, diagonal 0.5, 128²), for
    float32 and float64 it has the weight's dtype.
    """
    check_order(order)
    check_weight_shape(weight)
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"invconv_core: {name} must be an int >= 1, got {v!r}")
    a, b = current_tap(order, weight.shape[2], weight.shape[3])
    diagonal = weight[:, :, a, b].diagonal()
    diagonal = diagonal.to(torch.promote_types(diagonal.dtype, torch.float32))
    return diagonal.abs().log().sum() * (height * width)


@torch.no_grad()
def inverse_residual(y: torch.Tensor, weight: torch.Tensor, order: str = "TL") -> torch.Tensor:
    """``‖causal_conv2d(inv_conv2d(y)) - y‖ / ‖y‖``, per batch element: a cheap health check of
    the inverse for a trained weight (large values mean an ill-conditioned kernel)."""
    x = inv_conv2d(y, weight, order)
    r = causal_conv2d(x, weight, order) - y
    return r.flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1).clamp_min(torch.finfo(y.dtype).tiny)


# ----------------------------------------------------------------------------- autograd

def _weight_grad(inp: torch.Tensor, grad_out: torch.Tensor, weight: torch.Tensor, order: str):
    """``∂/∂weight <grad_out, causal_conv2d(inp, weight, order)>``: a conv2d weight gradient
    (oneDNN/cuDNN), masked like the weight. Differentiable in ``inp`` and ``grad_out``."""
    kh, kw = weight.shape[2], weight.shape[3]
    if inp.shape[2] == 0 or inp.shape[3] == 0:  # no pixels: conv2d rejects the padded input
        return (grad_out.sum() * inp.sum()) * torch.zeros_like(weight)
    padded = F.pad(inp, pad_amounts(order, kh, kw))
    if any(isinstance(d, torch.SymInt) for d in (*inp.shape, *weight.shape)):
        # Traced with symbolic shapes (torch.compile(dynamic=True)): Inductor of torch 2.13.0
        # fails to lower aten.convolution_backward there ("ValueRangeError: Invalid ranges
        # [0:-1]"). The same correlation as a plain conv2d -- channels as the batch, the batch
        # as channels: gw[o, i, a, b] = sum_{n, p} grad_out[n, o, p] padded[n, i, p + (a, b)] --
        # lowers fine. Eager and static shapes keep convolution_backward, which oneDNN runs
        # faster at large batches (1.2 vs 3.7 ms at 100×12×16×16, k=3, 2 cores).
        gw = F.conv2d(padded.transpose(0, 1), grad_out.transpose(0, 1)).transpose(0, 1)
    else:
        gw = torch.ops.aten.convolution_backward(
            grad_out, padded, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
            [False, True, False])[1]
    return gw * tap_mask(weight, order)


def _fake_inv_conv2d(y, weight, order="TL", transpose=False):
    check_operands(y, weight, "y")
    check_order(order)
    return torch.empty(y.shape, dtype=y.dtype, device=y.device)


torch.library.register_fake("invconv_core::inv_conv2d", _fake_inv_conv2d)
if not _loader.COMPILED:
    # The compiled core registers this same formula as a C++ autograd kernel (cpp/autograd.cpp):
    # the Python one costs ~120 us per call, most of a small forward+backward.
    torch.library.register_autograd("invconv_core::inv_conv2d", _transforms.backward,
                                    setup_context=_transforms.setup_context)
