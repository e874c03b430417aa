"""Finite-difference checks (gradcheck, gradgradcheck), torch.library.opcheck of the registered
operators, and torch.compile tracing them."""

from __future__ import annotations

import pytest
import torch
from cases import DEVICES, ORDERS
from cases import operands as _operands

import invconv_core as ic


def operands(C, kh, kw, order, shape, device="cpu", seed=0, dtype=torch.float64):
    return _operands(C, kh, kw, order, shape, dtype, device, seed, requires_grad=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("op", ["inv", "transpose", "causal"])
def test_gradcheck(order, op, device):
    f = {"inv": ic.inv_conv2d, "transpose": ic.inv_conv2d_transpose, "causal": ic.causal_conv2d}[op]
    w, y = operands(3, 2, 3, order, (2, 3, 4, 5), device)
    assert torch.autograd.gradcheck(lambda y, w: f(y, w, order), (y, w))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("op", ["inv", "transpose"])
def test_gradgradcheck(order, op, device):
    """Second derivatives are supported: the backward is made of differentiable registered ops."""
    f = {"inv": ic.inv_conv2d, "transpose": ic.inv_conv2d_transpose}[op]
    w, y = operands(2, 2, 2, order, (2, 2, 3, 4), device, seed=1)
    assert torch.autograd.gradgradcheck(lambda y, w: f(y, w, order), (y, w))


@pytest.mark.parametrize("device", DEVICES)
def test_logabsdet_gradcheck(device):
    w, _ = operands(3, 3, 3, "BL", (1, 3, 2, 2), device)
    assert torch.autograd.gradcheck(lambda w: ic.logabsdet(w, 5, 7, "BL"), (w,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_inv_conv2d(transpose, requires_grad, dtype, device):
    w, y = operands(3, 3, 2, "TR", (2, 3, 5, 4), device, dtype=dtype)
    w.requires_grad_(requires_grad)
    y.requires_grad_(requires_grad)
    torch.library.opcheck(torch.ops.invconv_core.inv_conv2d.default, (y, w, "TR", transpose))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_causal_conv2d(device):
    w, x = operands(3, 2, 2, "BR", (2, 3, 5, 4), device)
    torch.library.opcheck(torch.ops.invconv_core.causal_conv2d.default, (x, w, "BR"))


def test_torch_compile_traces_forward_and_backward():
    w, y = operands(4, 3, 3, "TL", (2, 4, 6, 6), dtype=torch.float32)

    def loss(y, w):
        x = ic.inv_conv2d(y, w, "TL")
        return (ic.causal_conv2d(x, w, "BR") ** 2).sum() - ic.logabsdet(w, 6, 6)

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    expected = loss(y, w)
    gy, gw = torch.autograd.grad(expected, (y, w))
    got = compiled(y, w)
    cy, cw = torch.autograd.grad(got, (y, w))
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(cy, gy)
    torch.testing.assert_close(cw, gw)


def test_torch_compile_inductor():
    """The default backend compiles the graph around the custom op (no graph break)."""
    w, y = operands(4, 3, 3, "TL", (2, 4, 6, 6), dtype=torch.float32)
    f = lambda y, w: (ic.inv_conv2d(y, w) ** 2).sum()  # noqa: E731
    expected = torch.autograd.grad(f(y, w), (y, w))
    got = torch.autograd.grad(torch.compile(f, fullgraph=True)(y, w), (y, w))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_torch_compile_dynamic_shapes(dtype):
    """dynamic=True: the backward is traced with symbolic shapes (ops._weight_grad takes the
    conv2d form of the weight gradient there; see its comment). One compiled function serves
    several shapes and matches eager: to float64's round-off in float64; in float32, where the
    compiled graph may reorder sums (the pure-PyTorch fallback's does, by ~70 ulps on one
    gradient entry), as accurately as eager, both measured against float64."""
    torch.manual_seed(0)
    w0 = 0.1 * torch.randn(4, 4, 3, 3, dtype=torch.float64)
    w0[:, :, 2, 2] += torch.eye(4, dtype=torch.float64)
    f = lambda y, w: ic.inv_conv2d(y, w, "TL").square().sum()  # noqa: E731
    compiled = torch.compile(f, fullgraph=True, dynamic=True)
    for shape in ((2, 4, 6, 7), (3, 4, 9, 5), (1, 4, 4, 4)):
        y0 = torch.randn(shape, dtype=torch.float64)
        y, w = (t.to(dtype).requires_grad_(True) for t in (y0, w0))
        got_v = compiled(y, w)
        got = (got_v, *torch.autograd.grad(got_v, (y, w)))
        want_v = f(y, w)
        want = (want_v, *torch.autograd.grad(want_v, (y, w)))
        if dtype == torch.float64:
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b)
            continue
        y64, w64 = (t.clone().requires_grad_(True) for t in (y0, w0))
        ref_v = f(y64, w64)
        ref = (ref_v, *torch.autograd.grad(ref_v, (y64, w64)))
        eps = torch.finfo(dtype).eps
        for a, b, r in zip(got, want, ref):
            err = lambda t: ((t.double() - r).norm() / r.norm()).item()  # noqa: E731
            assert err(a) <= 4 * err(b) + 16 * eps, (err(a), err(b))
