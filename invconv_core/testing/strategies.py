"""Hypothesis strategies for ``inv_conv2d``'s operands, as the project's own property tests draw
them (verification/test_dense_oracle.py), for users who test code built on the operator::

    from hypothesis import given
    from invconv_core.testing.strategies import operands

    @given(operands(max_c=4))
    def test_my_layer(ops):
        y, weight, order = ops
        ...

Weights are well conditioned as a trained flow keeps them (``invconv_core.oracle.make_weight``:
current-tap diagonal of magnitude in [0.5, 2], small other taps, garbage above the diagonal
that the operator must ignore). Requires hypothesis.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from ..selfcheck import Case

__all__ = ["ORDERS", "orders", "cases", "operands"]

#: The four causal orders of the operator (which corner the mask's current tap sits in).
ORDERS = ("TL", "TR", "BL", "BR")


def orders() -> st.SearchStrategy[str]:
    return st.sampled_from(ORDERS)


@st.composite
def cases(draw, max_c: int = 4, max_hw: int = 6, max_k: int = 7, min_b: int = 0, max_b: int = 3) -> Case:
    """A :class:`invconv_core.selfcheck.Case`: batch B in [min_b, max_b] (0: an empty batch),
    channels C in [1, max_c], image H, W in [1, max_hw], kernel kh, kw in [1, max_k] (often
    larger than the image), an order and the seed of its operands (``Case.arrays()``)."""
    return Case(B=draw(st.integers(min_b, max_b)), C=draw(st.integers(1, max_c)),
                H=draw(st.integers(1, max_hw)), W=draw(st.integers(1, max_hw)),
                kh=draw(st.integers(1, max_k)), kw=draw(st.integers(1, max_k)),
                order=draw(orders()), seed=draw(st.integers(0, 2**32 - 1)))


@st.composite
def operands(draw, dtype: torch.dtype = torch.float64, device: str = "cpu", max_c: int = 4, max_hw: int = 6,
             max_k: int = 7, min_b: int = 1, max_b: int = 3, requires_grad: bool = False):
    """``(y (B, C, H, W), weight (C, C, kh, kw), order)`` tensors of ``dtype`` on ``device``,
    drawn as :func:`cases` draws them, ready for ``inv_conv2d(y, weight, order)``."""
    case = draw(cases(max_c=max_c, max_hw=max_hw, max_k=max_k, min_b=min_b, max_b=max_b))
    w, y, _ = case.arrays()
    as_t = lambda a: torch.tensor(a, dtype=dtype, device=device).requires_grad_(requires_grad)  # noqa: E731
    return as_t(y), as_t(w), case.order
