"""The compiled core against the independent pure-PyTorch wavefront (and the dense oracle where
the case is small), over the code paths of the compiled kernel: vector widths and channel
blocks (C from 1 to 48), both parallel schedules, every order, kernels larger than the image,
half types, memory layouts, empty batches."""

from __future__ import annotations

import math
import numpy as np
import pytest
import torch
from cases import (DEVICES, ORDERS, SOLVERS, make_weight, operands, rel_err, solve, solve_tolerance,
                   solver_device, to_np)
from invconv_core.oracle import DenseProblem

import invconv_core as ic
from invconv_core._geometry import OPPOSITE
from invconv_core.wavefront import wavefront_solve


def weight_and_input(C, kh, kw, order, shape, dtype=torch.float64, device="cpu", seed=0):
    return operands(C, kh, kw, order, shape, dtype, device, seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("C", [1, 2, 3, 4, 5, 7, 8, 9, 12, 16, 17, 24, 25, 33, 48])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("transpose", [False, True])
def test_channel_blocks_match_dense(C, dtype, transpose, device):
    """Each channel count takes another mix of vector width, block count and tail lanes."""
    order = ORDERS[C % 4]
    w, y = weight_and_input(C, 3, 2, order, (2, C, 4, 5), dtype, device, seed=C)
    dense = DenseProblem(to_np(w), 4, 5, order)
    got = ic.inv_conv2d_transpose(y, w, order) if transpose else ic.inv_conv2d(y, w, order)
    expected = dense.solve_transpose(to_np(y)) if transpose else dense.solve(to_np(y))
    assert rel_err(to_np(got), expected) <= solve_tolerance(dense.cond(), C * 6, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("W", [1, 3, 8, 9, 31, 32, 33, 47])
@pytest.mark.parametrize("k", [(1, 1), (3, 1), (1, 4), (3, 3), (2, 9)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_single_channel_row_split_matches_dense(W, k, dtype, device):
    """C = 1 splits each row into a correlation with the rows above, vectorised over pixels in
    tiles of 4 vectors, 1 vector and a scalar tail, and a recurrence along the row: the widths
    here reach every mix of tiles (8 float64 or 16 float32 lanes per two vectors)."""
    kh, kw = k
    order = ORDERS[W % 4]
    w, y = weight_and_input(1, kh, kw, order, (2, 1, 3, W), dtype, device, seed=W + 10 * kh + kw)
    dense = DenseProblem(to_np(w), 3, W, order)
    tol = solve_tolerance(dense.cond(), kh * kw, dtype)
    assert rel_err(to_np(ic.inv_conv2d(y, w, order)), dense.solve(to_np(y))) <= tol
    got_t = ic.inv_conv2d_transpose(y, w, order)
    assert rel_err(to_np(got_t), dense.solve_transpose(to_np(y))) <= tol


def _corner(t: torch.Tensor, corner: str, h: int, w: int) -> torch.Tensor:
    """The h×w block of t at `corner` (an order's name: the side its pixels read from)."""
    H, W = t.shape[-2:]
    rows = slice(0, h) if corner[0] == "T" else slice(H - h, H)
    cols = slice(0, w) if corner[1] == "L" else slice(W - w, W)
    return t[..., rows, cols]


@pytest.mark.parametrize("C", [1, 2, 3, 8, 12])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("transpose", [False, True])
def test_solving_a_crop_gives_the_crop_bit_for_bit(C, dtype, order, transpose):
    """A pixel depends only on the pixels on the side of its order (T^T: the opposite side), so
    solving the block at that corner must give exactly that block of the full solution. In the
    cropped image the same pixel sits elsewhere in the kernel's vector tiles, scalar tails and
    row spans (C = 1 vectorises over pixels): the arithmetic must not depend on that."""
    w, y = weight_and_input(C, 3, 5, order, (2, C, 9, 53), dtype, seed=C)
    corner = OPPOSITE[order] if transpose else order
    full = torch.ops.invconv_core.inv_conv2d(y, w, order, transpose)
    for h, width in [(9, 1), (4, 7), (9, 13), (9, 33), (5, 40), (9, 47)]:
        crop = torch.ops.invconv_core.inv_conv2d(_corner(y, corner, h, width).contiguous(), w,
                                                 order, transpose)
        assert torch.equal(crop, _corner(full, corner, h, width))


@pytest.mark.parametrize("C", [2, 5, 12, 17, 48])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("order", ORDERS)
def test_an_image_solves_to_the_same_bits_alone_and_in_any_batch(C, dtype, order):
    """The kernel solves the same pixel of up to 4 images at once (sharing each tap load), and a
    lone image in bands of 4 rows, each row a column behind the one above; groups skip the taps
    that read only zero padding, bands at the edges hold fewer rows. Each channel of a pixel is
    still one chain of multiply-adds in a fixed order, so an image must come out the same to the
    bit alone, in a batch of any size, at any thread count. (C = 2, 5, 12, 17, 48: one, two,
    three and six vectors per pixel, float64 twice as many.)"""
    B = 7
    w, y = weight_and_input(C, 3, 3, order, (B, C, 6, 9), dtype, seed=C)
    before = torch.get_num_threads()
    try:
        for transpose in (False, True):
            torch.set_num_threads(1)
            alone = torch.cat([torch.ops.invconv_core.inv_conv2d(y[b:b + 1], w, order, transpose)
                               for b in range(B)])
            for threads in (1, 2):
                torch.set_num_threads(threads)
                for n in (2, 3, 5, 7):
                    got = torch.ops.invconv_core.inv_conv2d(y[:n], w, order, transpose)
                    assert torch.equal(got, alone[:n]), (transpose, threads, n)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [2, 4])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("C, kh, kw, H, W", [(6, 3, 4, 96, 100), (1, 16, 17, 120, 130)])
def test_pipelined_wavefront_equals_raster_bit_for_bit(threads, batch, order, C, kh, kw, H, W):
    """batch >= threads (or little work): whole images in raster order per thread; otherwise the
    pipelined wavefront over rows, whose spans start and stop anywhere in a row. Each pixel is
    computed by the same arithmetic in both, so the results must be identical to the bit."""
    w, y = weight_and_input(C, kh, kw, order, (batch, C, H, W), torch.float32, seed=batch)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        raster = [torch.ops.invconv_core.inv_conv2d(y, w, order, t) for t in (False, True)]
        torch.set_num_threads(threads)
        pipelined = [torch.ops.invconv_core.inv_conv2d(y, w, order, t) for t in (False, True)]
    finally:
        torch.set_num_threads(before)
    for a, b in zip(raster, pipelined):
        assert torch.equal(a, b)


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("batch", [1, 2, 3, 5])
@pytest.mark.parametrize("order", ORDERS)
def test_schedules_agree_with_wavefront(threads, batch, order):
    """Every thread count and batch size equals the pure-PyTorch wavefront."""
    w, y = weight_and_input(6, 3, 4, order, (batch, 6, 9, 11), seed=batch)
    # two float64 solves, each within the forward-error bound of the exact solution
    tol = 2 * solve_tolerance(DenseProblem(to_np(w), 9, 11, order).cond(), 72, torch.float64)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for transpose in (False, True):
            got = torch.ops.invconv_core.inv_conv2d(y, w, order, transpose)
            ref = wavefront_solve(y, w, order, transpose)
            assert rel_err(to_np(got), to_np(ref)) <= tol
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k", [(1, 1), (1, 9), (9, 1), (8, 8), (40, 3), (5, 40)])
@pytest.mark.parametrize("order", ORDERS)
def test_kernels_larger_than_image(k, order, device):
    kh, kw = k
    w, y = weight_and_input(3, kh, kw, order, (2, 3, 5, 4), device=device, seed=kh * 100 + kw)
    dense = DenseProblem(to_np(w), 5, 4, order)
    x = ic.inv_conv2d(y, w, order)
    tol = solve_tolerance(dense.cond(), 3 * kh * kw, torch.float64)
    assert rel_err(to_np(x), dense.solve(to_np(y))) <= tol
    assert rel_err(to_np(ic.causal_conv2d(x, w, order)), to_np(y)) <= dense.cond() * tol


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("transpose", [False, True])
def test_half_types_accumulate_in_float32(dtype, order, solver, transpose):
    """Every implementation (compiled CPU core, CUDA kernel, its emulation, the pure-PyTorch
    fallback) takes float16/bfloat16, solves in float32 and returns the half type."""
    w, y = weight_and_input(5, 3, 3, order, (3, 5, 8, 7), torch.float32, solver_device(solver))
    w, y = w.to(dtype), y.to(dtype)
    # the oracle solves the exactly-representable half inputs in float64
    dense = DenseProblem(to_np(w), 8, 7, order)
    x = solve(solver, y, w, order, transpose)
    assert x.dtype == dtype
    expected = dense.solve_transpose(to_np(y)) if transpose else dense.solve(to_np(y))
    assert rel_err(to_np(x), expected) <= solve_tolerance(dense.cond(), 45, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["channels_last", "transposed_hw", "sliced", "expanded_weight"])
@pytest.mark.parametrize("C", [4, 20])
def test_memory_layouts(layout, device, C):
    """The layout of the operands must not change a single bit of the result (C = 20: the plan's
    folded taps by BLAS, from the weight read through its strides)."""
    w, y = weight_and_input(C, 3, 3, "TL", (3, C, 9, 9), device=device)
    if layout == "channels_last":
        y2 = y.to(memory_format=torch.channels_last)
        w2 = w.to(memory_format=torch.channels_last)
    elif layout == "transposed_hw":
        y2, w2 = y.transpose(2, 3).contiguous().transpose(2, 3), w
    elif layout == "sliced":
        big = torch.zeros(6, 2 * C, 9, 18, dtype=y.dtype, device=device)
        big[::2, ::2, :, ::2] = y
        y2, w2 = big[::2, ::2, :, ::2], w
    else:  # weight as a non-contiguous view of a larger tensor
        big = torch.zeros(C, C, 3, 6, dtype=w.dtype, device=device)
        big[..., ::2] = w
        y2, w2 = y, big[..., ::2]
    assert not (y2.is_contiguous() and w2.is_contiguous())
    for f in (ic.inv_conv2d, wavefront_solve, ic.inv_conv2d_transpose):
        got = f(y2, w2)
        assert got.dtype == y.dtype and got.device == y.device
        assert torch.equal(got, f(y, w))
    assert torch.allclose(ic.causal_conv2d(y2, w2), ic.causal_conv2d(y, w), rtol=0, atol=1e-14)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["inv", "causal", "transpose"])
def test_empty_batch(op, device):
    w, _ = weight_and_input(3, 2, 2, "TL", (1, 3, 4, 4), device=device)
    y = torch.zeros(0, 3, 4, 4, dtype=w.dtype, device=device, requires_grad=True)
    wg = w.clone().requires_grad_(True)
    f = {"inv": ic.inv_conv2d, "causal": ic.causal_conv2d, "transpose": ic.inv_conv2d_transpose}[op]
    out = f(y, wg)
    assert out.shape == (0, 3, 4, 4)
    out.sum().backward()
    assert y.grad.shape == y.shape and torch.equal(wg.grad, torch.zeros_like(w))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("junk", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_entries_above_the_diagonal_are_ignored(junk, device):
    """README: entries of the current tap above the channel diagonal are ignored by both
    operators, whatever they hold (a product with a 0/1 mask would turn NaN into NaN)."""
    causal = ic.causal_conv2d
    for order in ORDERS:
        w, x = weight_and_input(3, 3, 2, order, (2, 3, 5, 4), device=device)
        a, b = ic.current_tap(order, 3, 2)
        clean = w.clone()
        clean[:, :, a, b] = clean[:, :, a, b].tril()
        w[0, 2, a, b] = junk
        w[1, 2, a, b] = junk
        w = w.requires_grad_(True)
        y = causal(x, w, order)
        assert torch.isfinite(y).all()
        torch.testing.assert_close(y, causal(x, clean, order), rtol=0, atol=0)
        assert torch.isfinite(ic.inv_conv2d(y, w, order)).all()
        y.sum().backward()
        assert torch.isfinite(w.grad).all() and (w.grad[0, 2, a, b] == 0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["inv", "causal", "transpose"])
@pytest.mark.parametrize("shape", [(2, 3, 0, 4), (2, 3, 4, 0), (1, 3, 0, 0)])
def test_empty_image(op, shape, device):
    """No pixels: every operator returns an empty result of the input's shape (conv2d alone
    would reject the padded (kh-1)-row input), and the backward runs."""
    w, _ = weight_and_input(3, 2, 2, "TL", (1, 3, 4, 4), device=device)
    y = torch.zeros(shape, dtype=w.dtype, device=device, requires_grad=True)
    wg = w.clone().requires_grad_(True)
    f = {"inv": ic.inv_conv2d, "causal": ic.causal_conv2d, "transpose": ic.inv_conv2d_transpose}[op]
    out = f(y, wg)
    assert out.shape == shape and out.dtype == y.dtype
    out.sum().backward()
    assert y.grad.shape == y.shape and torch.equal(wg.grad, torch.zeros_like(w))


def test_forward_is_deterministic():
    w, y = weight_and_input(12, 3, 3, "BR", (4, 12, 16, 16), torch.float32)
    a = ic.inv_conv2d(y, w, "BR")
    b = ic.inv_conv2d(y, w, "BR")
    assert torch.equal(a, b)


def test_wavefront_fallback_matches_compiled_at_flow_shape():
    w, y = weight_and_input(12, 3, 3, "TR", (8, 12, 12, 12), torch.float32, seed=3)
    tol = solve_tolerance(DenseProblem(to_np(w), 12, 12, "TR").cond(), 108, torch.float32)
    a = ic.inv_conv2d(y, w, "TR")
    b = wavefront_solve(y, w, "TR")
    assert rel_err(to_np(a), to_np(b)) <= 2 * tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("seed", range(1, 4))
def test_ill_conditioned_current_tap_stays_within_the_bound(dtype, order, seed):
    """The solver folds L⁻¹ of the current tap into the taps; with a poorly conditioned L
    (small diagonal, large lower entries) the error must still follow cond(T)·n·u."""
    rng = np.random.default_rng(100 + seed)
    C, kh, kw = 4, 3, 3
    w = make_weight(rng, C, kh, kw, order)
    a, b = ic.current_tap(order, kh, kw)
    w[:, :, a, b] = 2.0 * np.tril(rng.standard_normal((C, C)), -1) + np.diag(rng.uniform(0.5, 1.0, C))
    dense = DenseProblem(w, 4, 4, order)
    tol = solve_tolerance(dense.cond(), C * kh * kw, dtype)
    # the case is what it claims to be: far worse conditioned than the random cases, yet not so
    # ill-conditioned that the bound becomes vacuous
    assert 1e2 < dense.cond() < 1e4 and tol < 0.1
    wt = torch.tensor(w, dtype=dtype)
    y = torch.tensor(rng.standard_normal((2, C, 4, 4)), dtype=dtype)
    for got, expected in ((ic.inv_conv2d(y, wt, order), dense.solve(to_np(y))),
                          (ic.inv_conv2d_transpose(y, wt, order), dense.solve_transpose(to_np(y)))):
        assert rel_err(to_np(got), expected) <= tol


def test_inverse_residual_reports_conditioning():
    """Small for a healthy weight; large or not finite (overflow) when the current tap is
    nearly singular -- either way it flags the weight instead of passing silently."""
    w, y = weight_and_input(3, 3, 3, "TL", (2, 3, 6, 6), torch.float32)
    healthy = ic.inverse_residual(y, w)
    assert healthy.shape == (2,) and torch.all(healthy < 1e-5)
    bad = w.clone()
    bad[:, :, 2, 2] = torch.eye(3) * 1e-2 + torch.tril(torch.ones(3, 3), -1)  # cond(L) ~ 1e4
    flagged = ic.inverse_residual(y, bad)
    assert torch.all(~torch.isfinite(flagged) | (flagged > 1e-3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_logabsdet_of_a_half_weight_is_accumulated_in_float32(dtype):
    """Issue 22 item 7: C = 12, diagonal 0.5, 128² was -inf in float16 (float32: -136278.3)."""
    w = torch.zeros(12, 12, 3, 3)
    w[:, :, 2, 2] = 0.5 * torch.eye(12)
    expected = 12 * 128 * 128 * math.log(0.5)
    got = ic.logabsdet(w.to(dtype), 128, 128)
    assert got.dtype == torch.float32 and math.isclose(float(got), expected, rel_tol=1e-6), float(got)
    wg = w.to(dtype).requires_grad_()
    ic.logabsdet(wg, 8, 8).backward()
    assert wg.grad.dtype == dtype and float(wg.grad[0, 0, 2, 2]) == 64 / 0.5


# ----------------------------------------------------------------------------- non-finite input

@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("transpose", [False, True])
def test_a_nan_stays_in_the_channels_that_read_it_the_issue_case(solver, transpose):
    """Issue 22 item 6: 1×1 kernel, C = 2, w = [[2, 0], [0.5, 4]], y = [1, NaN]: channel 0 does
    not depend on channel 1 (compiled core before: [nan, nan]; exact: [0.5, nan])."""
    device = solver_device(solver)
    w = torch.tensor([[2.0, 0.0], [0.5, 4.0]], dtype=torch.float64, device=device).view(2, 2, 1, 1)
    y = torch.tensor([1.0, math.nan], dtype=torch.float64, device=device).view(1, 2, 1, 1)
    if transpose:  # T^T is upper-triangular: channel 1 does not depend on channel 0
        y = y.flip(1)
    x = solve(solver, y, w, "TL", transpose).flatten().tolist()
    finite = x[1] if transpose else x[0]
    assert finite == (0.25 if transpose else 0.5) and math.isnan(x[0] if transpose else x[1]), x


def _dependence(T: np.ndarray) -> np.ndarray:
    """reach[i, j]: entry i of T^{-1} y depends on y_j -- the transitive closure of T's
    structural nonzeros (x_i reads y_i and the x_k with T[i, k] != 0)."""
    reach = (T != 0) | np.eye(len(T), dtype=bool)
    while True:
        wider = reach | ((reach.astype(np.int64) @ reach.astype(np.int64)) > 0)
        if np.array_equal(wider, reach):
            return reach
        reach = wider


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("C", [2, 5, 13])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_entries_of_y_reach_only_what_depends_on_them(solver, C, dtype, bad):
    """Every solver, both directions, the four orders: with a few entries of y non-finite, an
    output entry is non-finite exactly where it depends on one of them (the structure of the
    dense T^{-1}), and every other entry equals the dense solve with those entries set to 0."""
    device = solver_device(solver)
    rng = np.random.default_rng(C)
    for k, order in enumerate(ORDERS):
        transpose = bool(k % 2)
        H, W = 3, 4
        w, y = operands(C, 2, 3, order, (2, C, H, W), torch.float64, seed=C + k)
        flat = y.clone().view(-1)
        where = rng.choice(flat.numel(), size=2, replace=False)
        clean = flat.clone()
        clean[where] = 0.0
        flat[where] = bad
        dense = DenseProblem(to_np(w), H, W, order)
        reach = _dependence(dense.T)
        if transpose:
            reach = reach.T
        bad_mask = np.zeros(y.numel(), bool)
        bad_mask[where] = True
        per_image = y[0].numel()
        poisoned = np.concatenate([reach @ bad_mask[b * per_image:(b + 1) * per_image]
                                   for b in range(2)]) > 0
        x = solve(solver, flat.view_as(y).to(dtype).to(device), w.to(dtype).to(device), order, transpose)
        x = to_np(x).reshape(-1)
        np.testing.assert_array_equal(~np.isfinite(x), poisoned, err_msg=f"{order} transpose={transpose}")
        expected = (dense.solve_transpose if transpose else dense.solve)(to_np(clean.view_as(y))).reshape(-1)
        tol = solve_tolerance(dense.cond(), C * 6, dtype)
        assert rel_err(x[~poisoned], expected[~poisoned]) <= tol, (order, transpose)
