"""The op under PyTorch's function transforms and forward-mode AD (issue 24 items 1-3), against
the dense float64 T⁻¹ and reverse-mode autograd: torch.func.jvp / jacfwd / jacrev / grad /
vmap / hessian and forward_ad.make_dual, through the public wrappers and the InvConv2d layer.

Before: jvp and jacfwd returned zeros (compiled core and fallback), make_dual gave no tangent,
jacrev and grad raised, vmap looped per sample with a warning on every call."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD
from cases import ORDERS, operands, to_np
from torch.func import grad, hessian, jacfwd, jacrev, jvp, vmap

import invconv_core as ic
from invconv_core.oracle import DenseProblem

SHAPE = (2, 3, 3, 4)  # N, C, H, W


def _operands(order, seed=0):
    w, y, v = operands(3, 2, 3, order, SHAPE, torch.float64, seed=seed, extra=1)
    return w, y, v


def _dense_inverse(w, order, transpose):
    """T⁻¹ (or T⁻ᵀ) of one image, from the dense oracle, as a (CHW, CHW) array."""
    T = DenseProblem(to_np(w), SHAPE[2], SHAPE[3], order).T
    inv = np.linalg.inv(T)
    return inv.T if transpose else inv


def _apply(M, v):
    n = v.shape[0]
    return (to_np(v).reshape(n, -1) @ M.T).reshape(v.shape)


def _op(transpose):
    return ic.inv_conv2d_transpose if transpose else ic.inv_conv2d


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("transpose", [False, True])
def test_jvp_in_y_is_the_dense_inverse_applied_to_the_tangent(order, transpose):
    w, y, v = _operands(order)
    f = lambda y: _op(transpose)(y, w, order)  # noqa: E731
    out, tangent = jvp(f, (y,), (v,))
    expected = _apply(_dense_inverse(w, order, transpose), v)
    assert float(np.abs(to_np(tangent)).max()) > 0.1  # not the zeros of before
    np.testing.assert_allclose(to_np(tangent), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(to_np(out), _apply(_dense_inverse(w, order, transpose), y), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("transpose", [False, True])
def test_jvp_in_the_weight_matches_the_reverse_mode_jacobian(order, transpose):
    w, y, _ = _operands(order, seed=1)
    w_dot = torch.randn_like(w)
    f = lambda w: _op(transpose)(y, w, order)  # noqa: E731
    _, tangent = jvp(f, (w,), (w_dot,))
    J = torch.autograd.functional.jacobian(f, w)  # reverse mode: the C++ autograd kernel
    expected = (J.reshape(y.numel(), -1) @ w_dot.reshape(-1)).reshape(y.shape)
    assert float(tangent.abs().max()) > 1e-3
    torch.testing.assert_close(tangent, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("transpose", [False, True])
def test_jacfwd_and_jacrev_are_the_dense_inverse(transpose):
    order = "BR"
    w, y, _ = _operands(order, seed=2)
    y1 = y[:1]
    f = lambda y: _op(transpose)(y, w, order)  # noqa: E731
    expected = _dense_inverse(w, order, transpose)
    for jac in (jacfwd, jacrev):
        J = jac(f)(y1).reshape(y1.numel(), y1.numel())
        np.testing.assert_allclose(to_np(J), expected, rtol=1e-10, atol=1e-12, err_msg=jac.__name__)


def test_grad_and_hessian_match_plain_autograd():
    order = "TR"
    w, y, g = _operands(order, seed=3)
    loss = lambda w: (ic.inv_conv2d(y, w, order) * g).sum() + (ic.inv_conv2d(y, w, order) ** 2).sum()  # noqa: E731
    wr = w.clone().requires_grad_()
    expected, = torch.autograd.grad(loss(wr), wr, create_graph=True)
    torch.testing.assert_close(grad(loss)(w), expected.detach(), rtol=1e-10, atol=1e-12)
    # a Hessian-vector product by double backward (the C++ kernel) against torch.func.hessian
    u = torch.randn_like(w)
    hvp, = torch.autograd.grad(expected, wr, u)
    H = hessian(loss)(w).reshape(w.numel(), w.numel())
    torch.testing.assert_close((H @ u.reshape(-1)).reshape(w.shape), hvp, rtol=1e-8, atol=1e-10)


def test_forward_ad_make_dual_gives_the_tangent():
    order = "TL"
    w, y, v = _operands(order, seed=4)
    with fwAD.dual_level():
        x = ic.inv_conv2d(fwAD.make_dual(y, v), w, order)
        tangent = fwAD.unpack_dual(x).tangent
    assert tangent is not None
    np.testing.assert_allclose(to_np(tangent), _apply(_dense_inverse(w, order, False), v), rtol=1e-10, atol=1e-12)


def test_the_raw_op_refuses_forward_ad_instead_of_dropping_the_tangent():
    w, y, v = _operands("TL", seed=5)
    if not ic.backend_info()["compiled"]:
        pytest.skip("the compiled core's autograd kernel")
    with fwAD.dual_level():
        with pytest.raises(RuntimeError, match="forward-mode AD .* is not supported; call invconv_core.inv_conv2d"):
            torch.ops.invconv_core.inv_conv2d(fwAD.make_dual(y, v), w, "TL", False)


@pytest.mark.parametrize("transpose", [False, True])
def test_vmap_has_a_batching_rule(transpose):
    """No per-sample fallback (it warned on every call): a vmapped y joins the batch, a vmapped
    weight is solved per weight; both equal the loop."""
    order = "BL"
    w, y, _ = _operands(order, seed=6)
    ys = torch.stack([y, 2 * y, -y])
    ws = torch.stack([w, w * 1.1, w * 0.9])
    op = _op(transpose)
    # with functorch's per-sample fallback (a C++ warning on every call) switched off, an op
    # without a batching rule raises
    fallback = torch._C._functorch._is_vmap_fallback_enabled()
    torch._C._functorch._set_vmap_fallback_enabled(False)
    try:
        by_y = vmap(lambda y: op(y, w, order))(ys)
        by_w = vmap(lambda w: op(y, w, order))(ws)
        by_both = vmap(lambda y, w: op(y, w, order), in_dims=(1, 0))(ys.transpose(0, 1), ws)
    finally:
        torch._C._functorch._set_vmap_fallback_enabled(fallback)
    # the compiled core solves an image to the same bits in any batch; the fallback's einsum
    # may round differently at another batch size
    tol = dict(rtol=0, atol=0) if ic.backend_info()["compiled"] else dict(rtol=1e-12, atol=1e-14)
    for i in range(3):
        torch.testing.assert_close(by_y[i], op(ys[i], w, order), **tol)
        torch.testing.assert_close(by_w[i], op(y, ws[i], order), **tol)
        torch.testing.assert_close(by_both[i], op(ys[i], ws[i], order), **tol)


def test_jvp_through_the_invconv2d_layer():
    """The layer (data→latent z = T⁻¹ x in Inverse-Flow placement) has a non-zero tangent, the
    dense one."""
    torch.manual_seed(0)
    from invconv_core.flows import InvConv2d
    layer = InvConv2d(3, kernel_size=3, placement="inverse").double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    v = torch.randn_like(x)
    (z, _), (z_dot, ld_dot) = jvp(lambda x: layer(x), (x,), (v,))
    J = torch.autograd.functional.jacobian(lambda x: layer(x)[0], x).reshape(x.numel(), x.numel())
    assert float(z_dot.detach().abs().max()) > 0.1
    torch.testing.assert_close(z_dot, (J @ v.reshape(-1)).reshape(x.shape), rtol=1e-10, atol=1e-12)
