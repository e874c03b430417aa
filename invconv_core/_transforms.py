r"""``inv_conv2d`` under PyTorch's function transforms and forward-mode AD.

The op's everyday autograd is the C++ kernel of cpp/autograd.cpp (a torch::autograd::Function:
fast, but invisible to functorch and without a forward-mode formula, so ``torch.func.jvp``
used to return a zero tangent and ``torch.func.grad``/``jacrev`` failed). While a function
transform (``torch.func.grad``, ``jacrev``, ``jvp``, ``jacfwd``, ``vmap``, ``hessian`` ...) or a
forward-AD level (``torch.autograd.forward_ad.dual_level``) is active, the public wrappers
(``inv_conv2d``, ``inv_conv2d_transpose``) route through :class:`InvConv2dFunction` instead: a
Python ``torch.autograd.Function`` with

* ``backward`` -- the same formula as the C++ kernel (ops.py derives it), built from this
  function again, so it can be differentiated again under the transforms;
* ``jvp`` -- forward mode: for ``x = T⁻¹ y``, ``ẋ = T⁻¹ (ẏ − Ṫ x)`` with ``Ṫ x =
  causal_conv2d(x, ẇ)``; for ``x = T⁻ᵀ y``, ``ẋ = T⁻ᵀ (ẏ − Ṫᵀ x)``: one more solve and one
  (transposed) causal convolution of the weight's tangent;
* ``vmap`` -- a batching rule: a vmapped ``y`` with an unbatched weight folds the vmapped
  dimension into the batch (one solve); a vmapped weight is solved per weight (each solve
  needs its own plan).

Outside the transforms nothing changes: the wrappers call the op directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd import forward_ad

from ._geometry import masked_weight, pad_amounts

__all__ = ["InvConv2dFunction", "transforms_active", "causal_conv2d_transpose", "setup_context",
           "backward"]

_ops = torch.ops.invconv_core


def transforms_active() -> bool:
    """True while a torch.func transform or a forward-AD level is active (outside torch.compile,
    which traces the op itself)."""
    if torch.compiler.is_compiling():
        return False
    return forward_ad._current_level >= 0 or torch._C._are_functorch_transforms_active()


def causal_conv2d_transpose(g: torch.Tensor, weight: torch.Tensor, order: str) -> torch.Tensor:
    """``T(weight, order)ᵀ g`` for g (N, C, H, W): the adjoint of ``causal_conv2d``, a transposed
    convolution with the masked weight, cropped to the image (differentiable)."""
    kh, kw = weight.shape[2], weight.shape[3]
    left, _, top, _ = pad_amounts(order, kh, kw)
    full = F.conv_transpose2d(g, masked_weight(weight, order))
    return full[:, :, top:top + g.shape[2], left:left + g.shape[3]]


def _causal(x, weight, order, transpose):
    """``T x`` (or ``Tᵀ x``) of the weight ``weight``."""
    if transpose:
        return causal_conv2d_transpose(x, weight, order)
    return _ops.causal_conv2d(x, weight, order)


def setup_context(ctx, inputs, output):
    """Saves what :func:`backward` and the forward-mode rule read (also the pure-PyTorch
    fallback's autograd registration, ops.py)."""
    _, weight, order, transpose = inputs
    ctx.order, ctx.transpose = order, transpose
    ctx.save_for_backward(weight, output)
    ctx.save_for_forward(weight, output)


def backward(ctx, grad):
    """``(∂L/∂y, ∂L/∂weight, None, None)`` of ``x = T⁻¹ y`` (or ``T⁻ᵀ y``), the formula of
    cpp/autograd.cpp (ops.py derives it), built from :class:`InvConv2dFunction` itself so that
    it can be differentiated again, under the transforms too."""
    weight, out = ctx.saved_tensors
    need_y, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if grad is None or not (need_y or need_w):
        return None, None, None, None
    from .ops import _weight_grad
    # the derivative of a T^{-1} solve is a T^{-T} solve and vice versa
    g_in = InvConv2dFunction.apply(grad.contiguous(), weight, ctx.order, not ctx.transpose)
    g_w = None
    if need_w:
        inp, gout = (g_in, out) if ctx.transpose else (out, g_in)
        g_w = -_weight_grad(inp, gout, weight, ctx.order)
    return (g_in if need_y else None), g_w, None, None


class InvConv2dFunction(torch.autograd.Function):
    """``x = T(weight, order)⁻¹ y`` (``transpose``: ``T⁻ᵀ y``) with backward, forward-mode and
    vmap rules that torch.func understands. Arguments as ``torch.ops.invconv_core.inv_conv2d``."""

    @staticmethod
    def forward(y, weight, order, transpose):
        return _ops.inv_conv2d(y, weight, order, transpose)

    @staticmethod
    def setup_context(ctx, inputs, output):
        setup_context(ctx, inputs, output)

    @staticmethod
    def backward(ctx, grad):
        return backward(ctx, grad)

    @staticmethod
    def jvp(ctx, y_dot, w_dot, _order_dot, _transpose_dot):
        weight, out = ctx.saved_tensors
        rhs = y_dot
        if w_dot is not None:
            moved = _causal(out, w_dot, ctx.order, ctx.transpose)
            rhs = -moved if rhs is None else rhs - moved
        if rhs is None:
            return torch.zeros_like(out)
        return InvConv2dFunction.apply(rhs.contiguous(), weight, ctx.order, ctx.transpose)

    @staticmethod
    def vmap(info, in_dims, y, weight, order, transpose):
        y_dim, w_dim = in_dims[0], in_dims[1]
        if w_dim is None:
            # vmapped y, one weight: the vmapped dimension joins the batch -- one solve
            y = y.movedim(y_dim, 0)
            v, n = y.shape[0], y.shape[1]
            x = InvConv2dFunction.apply(y.reshape(v * n, *y.shape[2:]).contiguous(), weight,
                                        order, transpose)
            return x.reshape(v, n, *x.shape[1:]), 0
        weight = weight.movedim(w_dim, 0)
        ys = y.movedim(y_dim, 0) if y_dim is not None else None
        xs = [InvConv2dFunction.apply((ys[i] if ys is not None else y).contiguous(), weight[i],
                                      order, transpose) for i in range(info.batch_size)]
        return torch.stack(xs), 0
