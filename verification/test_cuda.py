"""The CUDA kernels on a GPU: what the dense-oracle and implementation tests (parametrised over
DEVICES and SOLVERS) do not cover -- the build, the stream, no host synchronisation, batches
past one launch's blocks, 64-bit indexing, devices. Collected everywhere, skipped without a GPU.
(Without a GPU the kernel's source is verified under the SIMT emulation: test_cuda_emulation.py.)"""

from __future__ import annotations

import pytest
import torch
from cases import ORDERS, needs_gpu, operands, rel_err, to_np

import invconv_core as ic

pytestmark = needs_gpu


def test_the_build_has_cuda_kernels():
    """On a GPU machine the compiled core must carry the CUDA kernels (not the slow fallback)."""
    assert ic.backend_info()["cuda"] is True, ic.backend_info()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("order", ORDERS)
def test_cuda_agrees_with_the_cpu_core(dtype, order):
    w, y = operands(5, 3, 3, order, (3, 5, 20, 17), dtype, seed=2)
    cpu = ic.inv_conv2d(y.float(), w.float(), order)
    got = ic.inv_conv2d(y.cuda(), w.cuda(), order)
    assert got.dtype == dtype and got.device.type == "cuda"
    tol = {torch.float32: 1e-5, torch.float64: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    assert rel_err(to_np(got), to_np(cpu)) <= tol


@pytest.mark.parametrize("shape, where", [
    ((2, 12, 32, 32), "shared"),    # 55 KB of float32 image: on chip only with the opt-in
    ((1, 48, 8, 8), "shared"),      # 92 KB of taps: likewise
    ((1, 4, 200, 160), "ring"),     # 512 KB of image: a ring of its last diagonals
    ((1, 48, 256, 8), "global")])   # even the ring is past the opt-in beside the taps
@pytest.mark.parametrize("transpose", [False, True])
def test_every_place_of_the_image_agrees_with_the_cpu_core(shape, where, transpose, monkeypatch):
    """docs/design.md §5: the image in shared memory (past 48 KiB: the opt-in), as a ring of
    diagonals, in global memory -- on the GPU, against the CPU core, float32 and float64. (One
    block per image: INVCONV_CUDA_BANDS=0, else these small batches are solved in bands.)"""
    monkeypatch.setenv("INVCONV_CUDA_BANDS", "0")
    B, C, H, W = shape
    # (the same source under the emulation: at most 5e-7 and 9e-16 from the CPU core here)
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        w, y = operands(C, 3, 3, "TL", shape, dtype, seed=C)
        solve = ic.inv_conv2d_transpose if transpose else ic.inv_conv2d
        got = solve(y.cuda(), w.cuda(), "TL")
        assert rel_err(to_np(got), to_np(solve(y, w, "TL"))) <= tol, (dtype, where)


@pytest.mark.parametrize("shape", [(1, 4, 256, 256), (8, 12, 64, 64), (1, 48, 40, 24), (2, 3, 70, 9)])
@pytest.mark.parametrize("transpose", [False, True])
def test_small_batches_solved_in_bands_agree_with_the_cpu_core(shape, transpose, monkeypatch):
    """A batch that leaves half the SMs idle is split into bands of rows over several blocks
    (kImageBand: tickets, progress flags between blocks, the halo through global memory):
    against the CPU core and against one block per image (INVCONV_CUDA_BANDS=0), float32 and
    float64 (the split sums' order differs from one block's: within rounding)."""
    if torch.cuda.get_device_properties(0).multi_processor_count < 2 * shape[0]:
        pytest.skip("this GPU has too few SMs for bands at this batch")
    solve = ic.inv_conv2d_transpose if transpose else ic.inv_conv2d
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        w, y = operands(shape[1], 3, 3, "BR", shape, dtype, seed=shape[2])
        banded = solve(y.cuda(), w.cuda(), "BR")
        monkeypatch.setenv("INVCONV_CUDA_BANDS", "0")
        one_block = solve(y.cuda(), w.cuda(), "BR")
        monkeypatch.delenv("INVCONV_CUDA_BANDS")
        assert rel_err(to_np(banded), to_np(solve(y, w, "BR"))) <= tol, dtype
        assert rel_err(to_np(banded), to_np(one_block)) <= tol, dtype


def test_no_host_synchronisation_in_forward_and_backward():
    w, y = operands(4, 3, 3, "TL", (2, 4, 16, 16), torch.float32, "cuda", requires_grad=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        x = ic.inv_conv2d(y, w)
        gy, gw = torch.autograd.grad(x.sum(), (y, w))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(gy).all() and torch.isfinite(gw).all()


def test_runs_on_the_current_stream():
    w, y = operands(3, 3, 3, "BR", (4, 3, 32, 32), torch.float32, "cuda")
    ref = ic.inv_conv2d(y, w, "BR")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = ic.inv_conv2d(y, w, "BR")
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(got, ref)


def test_more_images_than_blocks_of_one_launch():
    """B > 65535 (the kernel's block cap): blocks solve several images each."""
    w, y = operands(2, 2, 2, "TL", (70000, 2, 3, 3), torch.float64, seed=4)
    got = ic.inv_conv2d(y.cuda(), w.cuda())
    assert rel_err(to_np(got), to_np(ic.inv_conv2d(y, w))) <= 1e-12


def test_64_bit_indexing_past_2_31_elements():
    """B·C·H·W > 2³¹: a 1×2 kernel (rows independent), so the last row, far past 2³¹, is checked
    against a CPU solve of that row alone."""
    if torch.cuda.get_device_properties(0).total_memory < 24 * 2**30:
        pytest.skip("needs 24 GiB of GPU memory")
    H = W = 46341  # H·W = 2,147,488,281 > 2³¹
    w = torch.tensor([[[[0.3, 1.5]]]], device="cuda")
    y = torch.ones(1, 1, H, W, device="cuda")
    y[0, 0, -1] = torch.linspace(-1, 1, W, device="cuda")
    x = ic.inv_conv2d(y, w)
    last = ic.inv_conv2d(y[:, :, -1:].cpu(), w.cpu())
    assert rel_err(to_np(x[:, :, -1:]), to_np(last)) <= 1e-5
    del x, y


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_tensors_on_different_gpus_are_an_error():
    w, y = operands(2, 3, 3, "TL", (1, 2, 4, 4), torch.float32)
    with pytest.raises(ValueError, match="same device"):
        ic.inv_conv2d(y.to("cuda:0"), w.to("cuda:1"))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_gpu_uses_its_own_device():
    w, y = operands(3, 3, 3, "TR", (2, 3, 9, 9), torch.float32)
    got = ic.inv_conv2d(y.to("cuda:1"), w.to("cuda:1"), "TR")
    assert got.device == torch.device("cuda:1")
    assert rel_err(to_np(got), to_np(ic.inv_conv2d(y, w, "TR"))) <= 1e-5
