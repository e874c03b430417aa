"""Property tests: forward, input gradient, weight gradient, log-det and round trips of the
operators against dense float64 triangular solves (invconv_core/oracle.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cases import (DEVICES, SOLVERS, UNIT_ROUNDOFF, rel_err, solve, solve_tolerance,
                   solver_device, to_np, weight_grad_bound)
from hypothesis import given

import invconv_core as ic
from invconv_core.oracle import DenseProblem
from invconv_core.selfcheck import Case  # the cases invconv-verify draws, drawn here by Hypothesis
# the package's strategies (users draw the same operands: invconv_core.testing.strategies)
from invconv_core.testing.strategies import cases


def tensors(case: Case, dtype, device):
    w, y, g = case.arrays()
    as_t = lambda a: torch.tensor(a, dtype=dtype, device=device)  # noqa: E731
    return as_t(w), as_t(y), as_t(g)


DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=cases(max_c=48))
def test_forward_matches_dense_solve(case, dtype, solver):
    w, y, _ = tensors(case, dtype, solver_device(solver))
    dense = DenseProblem(to_np(w), case.H, case.W, case.order)
    assert dense.is_lower_in_wavefront_order()  # the oracle's own premise (docs/design.md §1)
    expected = dense.solve(to_np(y))
    x = solve(solver, y, w, case.order)
    assert x.shape == y.shape and x.dtype == dtype and x.device == y.device
    assert rel_err(to_np(x), expected) <= solve_tolerance(dense.cond(), case.terms, dtype)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=cases(max_c=48))
def test_transpose_solve_matches_dense(case, dtype, solver):
    w, _, g = tensors(case, dtype, solver_device(solver))
    dense = DenseProblem(to_np(w), case.H, case.W, case.order)
    expected = dense.solve_transpose(to_np(g))
    got = solve(solver, g, w, case.order, transpose=True)
    assert got.shape == g.shape and got.dtype == dtype and got.device == g.device
    assert rel_err(to_np(got), expected) <= solve_tolerance(dense.cond(), case.terms, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=cases())
def test_gradients_match_dense(case, dtype, device):
    """∂L/∂y = T^{-T} gx and ∂L/∂w = -gyᵀ (∂T/∂w) x for L = <gx, inv_conv2d(y, w)>."""
    w, y, gx = tensors(case, dtype, device)
    w.requires_grad_(True)
    y.requires_grad_(True)
    dense = DenseProblem(to_np(w), case.H, case.W, case.order)
    x_ref = dense.solve(to_np(y))
    gy_ref = dense.solve_transpose(to_np(gx))
    gw_ref = dense.weight_grad(gy_ref, x_ref)

    x = ic.inv_conv2d(y, w, case.order)
    (x * gx).sum().backward()
    tol = solve_tolerance(dense.cond(), case.terms, dtype)
    assert rel_err(to_np(y.grad), gy_ref) <= tol
    # each weight-gradient entry is a sum of gy·x products over the N·H·W pixels
    bound = weight_grad_bound(tol, case.B * case.H * case.W, dtype, gy_ref, x_ref)
    assert w.grad.shape == w.shape
    assert np.abs(to_np(w.grad) - gw_ref).max(initial=0.0) <= bound + 1e-300
    # the entries the mask removes get exactly zero gradient
    a, b = ic.current_tap(case.order, case.kh, case.kw)
    assert torch.all(torch.triu(w.grad[:, :, a, b], 1) == 0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=cases())
def test_causal_conv_matches_dense(case, dtype, device):
    w, x, _ = tensors(case, dtype, device)
    dense = DenseProblem(to_np(w), case.H, case.W, case.order)
    y = ic.causal_conv2d(x, w, case.order)
    expected = dense.apply(to_np(x))
    assert y.shape == x.shape and y.dtype == dtype
    scale = np.abs(dense.T).sum(axis=1).max() * np.abs(to_np(x)).max(initial=0.0)
    assert np.abs(to_np(y) - expected).max(initial=0.0) <= 4 * case.terms * UNIT_ROUNDOFF[dtype] * scale + 1e-300


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=cases(min_b=1))
def test_round_trips(case, dtype, device):
    w, y, x = tensors(case, dtype, device)
    dense = DenseProblem(to_np(w), case.H, case.W, case.order)
    tol = solve_tolerance(dense.cond(), case.terms, dtype)
    back = ic.causal_conv2d(ic.inv_conv2d(y, w, case.order), w, case.order)
    # ‖T x̂ - y‖ ≤ ‖T‖‖x̂ - x‖ ≤ ‖T‖‖T^{-1}‖ tol ‖y‖: the residual is bounded by cond · tol
    assert rel_err(to_np(back), to_np(y)) <= dense.cond() * tol
    again = ic.inv_conv2d(ic.causal_conv2d(x, w, case.order), w, case.order)
    assert rel_err(to_np(again), to_np(x)) <= 2 * tol


@given(case=cases(max_c=3, max_hw=5, max_k=4))
def test_logabsdet_matches_slogdet(case):
    w, _, _ = tensors(case, torch.float64, "cpu")
    dense = DenseProblem(to_np(w), case.H, case.W, case.order)
    got = ic.logabsdet(w, case.H, case.W, case.order)
    assert got.dim() == 0
    n = case.C * case.H * case.W
    assert abs(got.item() - dense.logabsdet()) <= 1e-9 * max(1.0, abs(dense.logabsdet())) + n * 1e-12
