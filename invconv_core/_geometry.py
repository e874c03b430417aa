r"""The four causal orders and the mask of the current-pixel tap (docs/design.md §1).

For an order ``o`` the causal convolution is ``conv2d(pad(x, PAD[o]), mask(w, o))``: with
``"TL"`` output pixel (i, j) reads pixels (i', j') with i' <= i and j' <= j; ``"TR"`` reads
i' <= i, j' >= j; ``"BL"`` i' >= i, j' <= j; ``"BR"`` i' >= i, j' >= j.
"""

from __future__ import annotations

import torch

__all__ = ["ORDERS", "OPPOSITE", "pad_amounts", "current_tap", "tap_mask", "masked_weight",
           "check_order", "check_dense", "check_operands", "check_weight_shape"]

ORDERS = ("TL", "TR", "BL", "BR")
#: The order of the adjoint operator: T(w, o)^T is causal in the opposite corner.
OPPOSITE = {"TL": "BR", "TR": "BL", "BL": "TR", "BR": "TL"}


def check_order(order) -> str:
    if not isinstance(order, str) or order not in ORDERS:
        raise ValueError(f"invconv_core: order must be one of 'TL', 'TR', 'BL', 'BR', got {order!r}")
    return order


def flips(order: str) -> tuple[bool, bool]:
    """(rows flipped, columns flipped) that turn ``order`` into ``"TL"``."""
    return order in ("BL", "BR"), order in ("TR", "BR")


def pad_amounts(order: str, kh: int, kw: int) -> tuple[int, int, int, int]:
    """``F.pad`` amounts (left, right, top, bottom) of the causal convolution of ``order``."""
    rows, cols = flips(order)
    left, right = (0, kw - 1) if cols else (kw - 1, 0)
    top, bottom = (0, kh - 1) if rows else (kh - 1, 0)
    return left, right, top, bottom


def current_tap(order: str, kh: int, kw: int) -> tuple[int, int]:
    """Kernel index (a, b) of the tap that reads the output pixel itself."""
    rows, cols = flips(order)
    return (0 if rows else kh - 1), (0 if cols else kw - 1)


def tap_mask(weight: torch.Tensor, order: str) -> torch.Tensor:
    """0/1 tensor shaped like ``weight``: 0 on the current-pixel tap above the channel diagonal
    (input channel c' > output channel c), 1 elsewhere."""
    c, kh, kw = weight.shape[0], weight.shape[2], weight.shape[3]
    a, b = current_tap(order, kh, kw)
    mask = torch.ones_like(weight, memory_format=torch.contiguous_format)
    mask[:, :, a, b] = torch.ones(c, c, dtype=weight.dtype, device=weight.device).tril()
    return mask


def masked_weight(weight: torch.Tensor, order: str) -> torch.Tensor:
    """``weight`` with the masked entries of the current-pixel tap set to 0. A ``where``, not a
    product with :func:`tap_mask`: the ignored entries may hold NaN or inf (0 · NaN = NaN)."""
    return torch.where(tap_mask(weight, order).bool(), weight, 0)


_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_weight_shape(weight: torch.Tensor) -> None:
    """The checks of the weight-only helpers (logabsdet, check_invertible): a real floating
    (C, C, kh, kw) tensor with C, kh, kw >= 1; ValueError/TypeError naming ``weight``."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"invconv_core: weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() != 4 or weight.shape[0] != weight.shape[1]:
        raise ValueError(f"invconv_core: weight must have shape (C, C, kh, kw), got {list(weight.shape)}")
    if weight.shape[0] < 1 or weight.shape[2] < 1 or weight.shape[3] < 1:
        raise ValueError(f"invconv_core: weight must have C >= 1, kh >= 1 and kw >= 1, got shape "
                         f"{list(weight.shape)}")
    _check_floating(weight, "weight")


def _check_floating(t: torch.Tensor, name: str) -> None:
    if t.dtype not in _FLOATING:
        raise TypeError(f"invconv_core: {name} must have a real floating dtype (float16, "
                        f"bfloat16, float32, float64), got {t.dtype}")


def check_dense(t: torch.Tensor, name: str) -> None:
    """TypeError naming ``name`` for a quantized or non-strided (sparse) tensor."""
    if t.is_quantized:
        raise TypeError(f"invconv_core: {name} must be a dense floating tensor, got a quantized "
                        f"one ({t.dtype}); dequantize it first")
    if t.layout != torch.strided:
        raise TypeError(f"invconv_core: {name} must be a dense (strided) tensor, got layout "
                        f"{t.layout}; call .to_dense() first")


def check_operands(inp: torch.Tensor, weight: torch.Tensor, name: str) -> None:
    """The checks the compiled core makes (cpp/solve_plan.cpp), for the pure-PyTorch paths."""
    check_dense(inp, name)
    check_dense(weight, "weight")
    if inp.dim() != 4:
        raise ValueError(f"invconv_core: {name} must be a 4-D (N, C, H, W) tensor, got shape "
                         f"{list(inp.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"invconv_core: weight must be a 4-D (C, C, kh, kw) tensor, got shape "
                         f"{list(weight.shape)}")
    if weight.shape[0] != weight.shape[1]:
        raise ValueError(f"invconv_core: weight must have shape (C, C, kh, kw) with equal channel "
                         f"axes, got {list(weight.shape)}")
    if weight.shape[0] < 1:
        raise ValueError(f"invconv_core: weight must have at least one channel, got shape "
                         f"{list(weight.shape)}")
    if weight.shape[2] < 1 or weight.shape[3] < 1:
        raise ValueError(f"invconv_core: weight must have kh >= 1 and kw >= 1, got shape "
                         f"{list(weight.shape)}")
    if inp.shape[1] != weight.shape[0]:
        c = inp.shape[1]
        raise ValueError(f"invconv_core: {name} has {c} channels but weight has shape "
                         f"{list(weight.shape)} (expected ({c}, {c}, kh, kw))")
    _check_floating(inp, name)
    _check_floating(weight, "weight")
    if inp.dtype != weight.dtype:
        raise TypeError(f"invconv_core: {name} and weight must have the same dtype, got "
                        f"{inp.dtype} and {weight.dtype}")
    if inp.device != weight.device:
        raise ValueError(f"invconv_core: {name} and weight must be on the same device, got "
                         f"{inp.device} and {weight.device}")
