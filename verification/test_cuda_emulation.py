"""The CUDA kernel (cpp/cuda/wavefront_kernel.cuh) without a GPU: its source run on the CPU
under the SIMT emulation (cpp/emulation/), against the compiled CPU core and the dense oracle
over the launch configurations a GPU takes for larger problems, and under ThreadSanitizer.
(The dense-oracle property tests of test_dense_oracle.py run it too: `-k emulated`.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import torch
from cases import ORDERS, emulated_inv_conv2d, operands, rel_err, solve_tolerance, to_np
from invconv_core.oracle import DenseProblem

import invconv_core as ic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Launch limits that send the kernel down each of its paths: fewer threads than (pixel, channel)
# pairs on a diagonal, one block solving every image in turn, taps and image in global memory,
# taps in shared memory but the image in global memory.
# The 64-bit-index kernel (taken on a GPU only when an offset needs it) on small problems too,
# with the taps in shared memory or not; and an sm_90's opted-in 227 KiB of shared memory.
LAUNCHES = {
    "default": {},
    "32-threads": {"threads": 32},
    "one-block": {"max_blocks": 1},
    "no-shared": {"shared_limit": 0},
    "taps-only-shared": {"shared_limit": 4000},
    "opted-in-shared": {"shared_limit": 227 * 1024},
    "wide-index": {"wide_index": True},
    "wide-index-no-shared": {"wide_index": True, "shared_limit": 0},
    "ring": "ring",  # room for the taps and the ring of diagonals, not the image (_ring_limit)
    "wide-index-ring": "ring+wide",
    # bands of rows over several blocks (kImageBand): of 2 rows (the halo of a 3-row kernel);
    # of 3 rows with 32 threads solving pairs (several rounds a diagonal); of 2 rows with the
    # taps left in global memory (C = 48: 129 KB of taps, 12,000 bytes of shared memory)
    "bands": {"band_rows": 2},
    "bands-rounds": {"band_rows": 3, "threads": 96},
    "bands-taps-global": {"band_rows": 2, "shared_limit": 12000},
}


def _ring_limit(C, kh, kw, H, acc_size):
    """Shared memory for the packed taps and the ring of kh + kw - 1 diagonals (plan_math.h's
    packed size; wavefront_kernel.cuh's launch_config)."""
    G = -(-C // 4)
    return ((kh * kw + 1) * G * C * 4 + (kh + kw - 1) * H * C) * acc_size


def _launch_args(launch, C, kh, kw, H, dtype):
    spec = LAUNCHES[launch]
    if isinstance(spec, dict):
        return spec
    acc = 8 if dtype == torch.float64 else 4
    # two blocks for three images: one block reuses its ring for a second image
    return {"shared_limit": _ring_limit(C, kh, kw, H, acc), "wide_index": spec.endswith("wide"),
            "max_blocks": 2}


def _solve_ref(y, w, order, transpose):
    return (ic.inv_conv2d_transpose if transpose else ic.inv_conv2d)(y, w, order)


@pytest.mark.parametrize("launch", sorted(LAUNCHES))
@pytest.mark.parametrize("C", [1, 5, 13, 48])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("transpose", [False, True])
def test_emulated_kernel_agrees_with_cpu_core_and_dense(launch, C, dtype, transpose):
    order = ORDERS[C % 4]
    H, W = (3, 4) if C == 48 else (5, 6)
    w, y = operands(C, 3, 2, order, (3, C, H, W), dtype, seed=C)
    args = _launch_args(launch, C, 3, 2, H, dtype)
    if LAUNCHES[launch] in ("ring", "ring+wide") and 3 + 2 - 1 < W:  # (a ring smaller than the image)
        from invconv_core import _simt  # the ring it is meant to reach
        assert _simt.launch_config(3, C, H, W, 3, 2, dtype.itemsize, args["shared_limit"],
                                   args["wide_index"])["image"] == "ring"
    got = emulated_inv_conv2d(y, w, order, transpose, **args)
    dense = DenseProblem(to_np(w), H, W, order)
    tol = solve_tolerance(dense.cond(), C * 6, dtype)
    expected = dense.solve_transpose(to_np(y)) if transpose else dense.solve(to_np(y))
    assert got.dtype == dtype and got.shape == y.shape and got.is_contiguous()
    assert rel_err(to_np(got), expected) <= tol
    assert rel_err(to_np(got), to_np(_solve_ref(y, w, order, transpose))) <= 2 * tol


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("launch", ["default", "no-shared", "ring"])
@pytest.mark.parametrize("order", ORDERS)
def test_emulated_kernel_half_types_accumulate_in_float32(dtype, launch, order):
    """Stored as half, solved in float32 (the scratch image stays float32 when it is not in
    shared memory): only the final rounding to the half type differs from a float32 solve."""
    C = 4
    w, y = operands(C, 3, 3, order, (2, C, 6, 7), dtype, seed=7)
    got = emulated_inv_conv2d(y, w, order, **_launch_args(launch, C, 3, 3, 6, torch.float32))
    assert got.dtype == dtype
    dense = DenseProblem(to_np(w), 6, 7, order)
    assert rel_err(to_np(got), dense.solve(to_np(y))) <= solve_tolerance(dense.cond(), C * 9, dtype)
    ref32 = emulated_inv_conv2d(y.float(), w.float(), order).to(dtype)
    assert rel_err(to_np(got), to_np(ref32)) <= 2 * solve_tolerance(dense.cond(), C * 9, dtype)


@pytest.mark.parametrize("transpose", [False, True])
def test_emulated_kernel_reads_strided_inputs_and_weights_through_their_strides(transpose):
    w, y = operands(6, 3, 3, "BR", (3, 6, 7, 5), torch.float64, seed=3)
    ref = emulated_inv_conv2d(y, w, "BR", transpose)
    big = torch.zeros(3, 12, 7, 10, dtype=torch.float64)
    big[:, ::2, :, ::2] = y
    for variant in (y.to(memory_format=torch.channels_last), big[:, ::2, :, ::2], y.transpose(2, 3).contiguous().transpose(2, 3)):
        assert not variant.is_contiguous()
        assert torch.equal(emulated_inv_conv2d(variant, w, "BR", transpose), ref)
    # the plan kernels read the weight through its strides too
    w_big = torch.zeros(6, 12, 3, 6, dtype=torch.float64)
    w_big[:, ::2, :, ::2] = w
    for weight in (w.to(memory_format=torch.channels_last), w_big[:, ::2, :, ::2], w.permute(1, 0, 3, 2).contiguous().permute(1, 0, 3, 2)):
        assert not weight.is_contiguous()
        assert torch.equal(emulated_inv_conv2d(y, weight, "BR", transpose), ref)


def test_emulated_kernel_empty_batch_and_kernels_larger_than_the_image():
    w, y = operands(3, 9, 7, "TR", (0, 3, 4, 4))
    assert emulated_inv_conv2d(y, w, "TR").shape == (0, 3, 4, 4)
    w, y = operands(3, 9, 7, "TR", (2, 3, 2, 3))
    dense = DenseProblem(to_np(w), 2, 3, "TR")
    assert rel_err(to_np(emulated_inv_conv2d(y, w, "TR")), dense.solve(to_np(y))) <= 1e-12


def test_emulated_kernel_many_images_per_block():
    """Fewer blocks than images: each block solves images b, b + gridDim.x, ... in turn and
    reuses its shared memory for each."""
    w, y = operands(2, 2, 2, "TL", (7, 2, 3, 3), seed=5)
    ref = ic.inv_conv2d(y, w, "TL")
    for blocks in (1, 2, 3, 7):
        assert rel_err(to_np(emulated_inv_conv2d(y, w, "TL", max_blocks=blocks)), to_np(ref)) <= 1e-14


def test_emulated_launch_refused_where_cuda_would_refuse_it():
    """Like a GPU, the emulation refuses an opt-in beyond the device's 227 KiB of dynamic shared
    memory (here a limit raised past it: the taps of C = 48, 3×3, float64, 184 KB, and a 12×12
    image, 55 KB) and more threads than a block has. (A launch above 48 KiB without an opt-in
    is refused too: the self-test of the race-check driver.)"""
    w, y = operands(48, 3, 3, "TL", (1, 48, 12, 12), torch.float64)
    with pytest.raises(ValueError, match="227 KiB"):
        emulated_inv_conv2d(y, w, "TL", shared_limit=1 << 20)
    with pytest.raises(ValueError, match="threads must be in"):
        emulated_inv_conv2d(y, w, "TL", threads=2048)


def _launch(B, C, H, W, k, acc_size, limit, wide=False, sm_count=0):
    from invconv_core import _simt
    return _simt.launch_config(B, C, H, W, k, k, acc_size, limit, wide, sm_count=sm_count)


@pytest.mark.parametrize("shape, where", [
    # the CUDA targets' shapes: the 55 KB image of 12 x 32 x 32 (float32) and the 92 KB of C = 48 taps
    ((2, 12, 32, 32), "image"), ((2, 48, 8, 8), "taps")])
def test_opted_in_shared_memory_keeps_the_issue_shapes_on_chip(shape, where):
    """Both sides of the 48 KiB default: below it the image (or the taps) lives in global
    memory, with the device's opt-in it is on chip -- for float32 and float64 values. The
    float64 solve (twice the bytes: the same sides of the limit) agrees with the compiled CPU
    core (dense-verified itself; a dense solve of 12,288 unknowns would take minutes) either
    way."""
    B, C, H, W = shape
    key = "image_in_shared" if where == "image" else "taps_in_shared"
    for acc_size in (4, 8):
        below, above = _launch(B, C, H, W, 3, acc_size, 48 * 1024), _launch(B, C, H, W, 3, acc_size, 227 * 1024)
        assert not below[key] and above[key] and above["image"] == "shared"
        assert above["shared_bytes"] > 48 * 1024 >= below["shared_bytes"]
    w, y = operands(C, 3, 3, "TL", (1, C, H, W), torch.float64, seed=C)
    expected = to_np(ic.inv_conv2d(y, w, "TL"))
    for limit in (48 * 1024, 227 * 1024):
        assert rel_err(to_np(emulated_inv_conv2d(y, w, "TL", shared_limit=limit)), expected) <= 1e-12


def test_batches_that_leave_the_device_idle_are_split_into_bands():
    """launch_config with an H100's 132 SMs: the issue's small-batch shapes go to bands of rows
    over several blocks (kImageBand), each pair's 8 taps split over 8 threads, a block of about
    kBandThreads threads plus its two comm warps, the band and its halo in the opted-in shared
    memory; a full batch, an unknown device (sm_count 0), the 64-bit path and a 1x1 kernel keep
    one block per image."""
    lim = 227 * 1024
    for (B, C, H, W), rows in (((1, 4, 256, 256), 16), ((8, 12, 64, 64), 5)):
        c = _launch(B, C, H, W, 3, 4, lim, sm_count=132)
        assert c["image"] == "band" and c["split"] == 8 and c["band_rows"] == rows, c
        assert c["bands"] == -(-H // rows) and c["blocks"] == B * c["bands"] <= 132
        # (at most 512: the band variants' __launch_bounds__, which the emulation cannot check)
        assert c["threads"] == c["compute_threads"] + 64 <= 512 and c["shared_bytes"] <= lim
        assert c["taps_in_shared"]
    assert _launch(100, 12, 32, 32, 3, 4, lim, sm_count=132)["image"] == "shared"
    assert _launch(1, 4, 256, 256, 3, 4, lim)["image"] == "ring"
    assert _launch(1, 4, 256, 256, 3, 4, lim, True, sm_count=132)["image"] == "ring"
    assert _launch(1, 4, 256, 256, 1, 4, lim, sm_count=132)["image"] != "band"
    # a band too wide for the default 48 KiB: thinner bands, not none
    c = _launch(1, 4, 256, 256, 3, 4, 48 * 1024, sm_count=132)
    assert c["image"] == "band" and c["band_rows"] <= 16 and c["shared_bytes"] <= 48 * 1024


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("transpose", [False, True])
def test_a_small_batch_on_a_132_sm_device_is_solved_in_bands(dtype, transpose):
    """The band path as a GPU chooses it (sm_count only, no band_rows): one 4 x 40 x 40 image,
    3 bands of 16 rows -- against the compiled CPU core and the one-block-per-image kernel
    (a different order of summation: within rounding, not bit-identical). The flags the fold
    kernel zeroes start at -1 under the emulation (a reused GPU buffer's garbage)."""
    assert _launch(1, 4, 40, 40, 3, dtype.itemsize, 227 * 1024, sm_count=132)["bands"] == 3
    w, y = operands(4, 3, 3, "BR", (1, 4, 40, 40), dtype, seed=11)
    got = emulated_inv_conv2d(y, w, "BR", transpose, sm_count=132, shared_limit=227 * 1024)
    one_block = emulated_inv_conv2d(y, w, "BR", transpose, shared_limit=227 * 1024)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert rel_err(to_np(got), to_np(_solve_ref(y, w, "BR", transpose))) <= tol
    assert rel_err(to_np(got), to_np(one_block)) <= tol


def test_the_64bit_index_path_is_taken_only_when_asked_or_needed():
    small = _launch(100, 12, 16, 16, 3, 4, 227 * 1024)
    assert not small["wide_index"] and small["image"] == "shared"
    wide = _launch(100, 12, 16, 16, 3, 4, 227 * 1024, True)
    assert wide["wide_index"] and wide["image"] == "ring" and wide["taps_in_shared"]
    from invconv_core._simt import fits_32bit_index
    lim = 2**31 - 1
    assert fits_32bit_index(lim - 1, lim - 1, 1, 1, 1, 1, 1, 1)
    assert not fits_32bit_index(lim, 0, 1, 1, 1, 1, 1, 1)      # y's offsets
    assert not fits_32bit_index(0, lim, 1, 1, 1, 1, 1, 1)      # out's
    assert not fits_32bit_index(0, 0, 2**16, 4, 128, 64, 3, 3)  # the scratch images: 2^31 values
    assert fits_32bit_index(0, 0, 2**16 - 1, 4, 128, 64, 3, 3)


# --- ThreadSanitizer -------------------------------------------------------------------------

GXX = shutil.which("g++")
needs_gxx = pytest.mark.skipif(GXX is None, reason="g++ not found: the race check builds a C++ driver")
DRIVER = os.path.join(REPO, "cpp", "emulation", "race_check_driver.cpp")


SANITIZERS = {"thread": ["-fsanitize=thread"],
              "address": ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]}
BUILDS = {**SANITIZERS, "none": []}


def _build_and_run_race_check(tmp_path, *defines, cases=200, sanitizer="thread", mode=None,
                              timeout=300):
    exe = tmp_path / f"check_{sanitizer}"
    build = subprocess.run([GXX, "-std=c++20", "-pthread", "-O1", "-g", *BUILDS[sanitizer],
                            *defines, "-I", os.path.join(REPO, "cpp"), DRIVER, "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-4000:]
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1 exitcode=66",
               ASAN_OPTIONS="detect_leaks=0 exitcode=67", UBSAN_OPTIONS="print_stacktrace=1")
    return subprocess.run([str(exe), str(cases), "1", *([mode] if mode else [])], capture_output=True,
                          text=True, env=env, timeout=timeout)


@needs_gxx
def test_emulated_kernel_is_race_free_under_thread_sanitizer(tmp_path):
    run = _build_and_run_race_check(tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr[-4000:]
    assert "ThreadSanitizer" not in run.stderr
    assert "ok: 200 cases agree" in run.stdout
    # every place the image can live was exercised
    counts = [int(n) for n in re.findall(r"(?:memory|diagonals|bands) (\d+)", run.stdout)]
    assert len(counts) == 4 and min(counts) > 0, run.stdout


@needs_gxx
def test_thread_sanitizer_catches_a_missing_barrier_in_the_emulated_kernel(tmp_path):
    """The check can fail: the kernel without its per-diagonal __syncthreads() (a test-only
    compile switch) is reported as a data race."""
    run = _build_and_run_race_check(tmp_path, "-DINVCONV_PLANTED_KERNEL=PlantedMissingDiagonalBarrier", cases=40)
    assert run.returncode == 66, run.stdout + run.stderr[-2000:]
    assert "WARNING: ThreadSanitizer: data race" in run.stderr
    assert "wavefront_solve_kernel" in run.stderr


@needs_gxx
def test_emulated_kernel_is_clean_under_address_and_undefined_sanitizers(tmp_path):
    """What a GPU traps on and the emulation once could not see. The driver's 200
    random cases (float64, float32 and a 2-byte type; taps and image in shared memory, a ring or
    global memory; 32- and 64-bit offsets; every order's flips and the adjoint's channel
    reversal) under AddressSanitizer + UndefinedBehaviorSanitizer, with dynamic shared memory
    allocated at exactly the launch's byte count and every global buffer at its exact size."""
    run = _build_and_run_race_check(tmp_path, sanitizer="address")
    assert run.returncode == 0, run.stdout + run.stderr[-4000:]
    assert "AddressSanitizer" not in run.stderr and "runtime error" not in run.stderr
    assert "ok: 200 cases agree" in run.stdout
    counts = [int(n) for n in re.findall(r"(?:memory|diagonals|bands) (\d+)", run.stdout)]
    assert len(counts) == 4 and min(counts) > 0, run.stdout


@needs_gxx
def test_address_sanitizer_catches_a_ring_one_diagonal_short(tmp_path):
    """The planted overrun: launch_config sizes the ring for one anti-diagonal fewer than the
    kernel uses (the PlantedShortRing policy); the kernel's writes past the shared buffer are
    reported. (With the emulation's former 16 bytes of slack, and no ASan build, nothing saw
    it.)"""
    run = _build_and_run_race_check(tmp_path, "-DINVCONV_PLANTED_KERNEL=PlantedShortRing", sanitizer="address")
    assert run.returncode == 67, run.stdout + run.stderr[-2000:]
    assert "ERROR: AddressSanitizer: heap-buffer-overflow" in run.stderr
    assert "wavefront_solve_kernel" in run.stderr


@needs_gxx
def test_a_misaligned_vector_load_aborts_as_the_gpu_traps(tmp_path):
    """load_lanes reads 4 weights as one float4 (two double2) on the GPU, which traps on an
    address off a 16-byte boundary; the emulation read p[0..3] at any alignment. Now it checks:
    the packed taps planted one element off (INVCONV_PLANT_MISALIGNED_TAPS) abort naming the
    kernel, the load and the address."""
    run = _build_and_run_race_check(tmp_path, "-DINVCONV_PLANT_MISALIGNED_TAPS", cases=40,
                                    sanitizer="address")
    assert run.returncode in (-6, 134), run.stdout + run.stderr[-2000:]
    assert re.search(r"simt: misaligned address in wavefront_solve_kernel: load_lanes of the packed "
                     r"taps / M: a 16-byte vector access at 0x[0-9a-f]+, \d+ bytes past a 16-byte "
                     r"boundary", run.stderr), run.stderr[-2000:]


# --- the banded kernel (kImageBand): blocks that hand rows to each other ------------------------

@needs_gxx
@pytest.mark.parametrize("sanitizer", sorted(SANITIZERS))
def test_the_banded_kernel_is_clean_under_the_sanitizers(tmp_path, sanitizer):
    """The driver's `bands` mode: every case (float64, float32, a 2-byte type; every order's
    flips and the channel reversal; H = 4..12, bands of 1..6 rows raised to the halo, 96..256
    threads, taps in shared or global memory) split into bands of rows over blocks that run
    two at a time in shuffled order, each band waiting on the progress flag of the band above
    and copying its halo rows through global memory: agrees with the sequential solve, with no
    data race (ThreadSanitizer judges the release/acquire hand-off between blocks) and no
    out-of-bounds or undefined access (ASan + UBSan, shared memory of exactly the launch's
    size)."""
    run = _build_and_run_race_check(tmp_path, sanitizer=sanitizer, cases=60, mode="bands")
    assert run.returncode == 0, run.stdout + run.stderr[-4000:]
    assert "Sanitizer" not in run.stderr and "runtime error" not in run.stderr
    bands = int(re.search(r"in bands (\d+)", run.stdout).group(1))
    assert bands >= 40, run.stdout  # (the rest: 1x1 kernels, which have nothing to wait for)


@needs_gxx
@pytest.mark.parametrize("planted", ["PlantedMissingReductionBarrier", "PlantedRelaxedProgress"])
def test_thread_sanitizer_catches_a_planted_fault_of_the_banded_kernel(tmp_path, planted):
    """The checks above can fail: without the barrier between a pair's threads leaving their
    partial sums and their addition, or with a band's progress published by a relaxed store
    (nothing then orders its halo rows before the flag), ThreadSanitizer reports a data race in
    solve_band -- or, when the threads' timing makes the race real before TSan sees it, a case
    gives a wrong result (exit 1)."""
    run = _build_and_run_race_check(tmp_path, f"-DINVCONV_PLANTED_KERNEL={planted}", cases=60,
                                    mode="bands")
    assert run.returncode in (1, 66), run.stdout + run.stderr[-2000:]
    if run.returncode == 66:
        assert "WARNING: ThreadSanitizer: data race" in run.stderr and "solve_band" in run.stderr
    else:
        assert "disagrees" in run.stdout and "bands=" in run.stdout


@needs_gxx
def test_bands_taken_by_block_index_deadlock_where_tickets_do_not(tmp_path):
    """Why a block takes its band from a ticket: with band = blockIdx.x (PlantedBandByBlockIndex)
    a block can wait on the band above while no running block holds it -- the emulation runs
    two blocks at a time in shuffled order, as a GPU may hold any subset of a grid resident --
    and the launch never finishes. The same cases with tickets finish (the test above)."""
    with pytest.raises(subprocess.TimeoutExpired):
        _build_and_run_race_check(tmp_path, "-DINVCONV_PLANTED_KERNEL=PlantedBandByBlockIndex",
                                  sanitizer="none", cases=40, mode="bands", timeout=30)


INTERBLOCK = os.path.join(REPO, "cpp", "emulation", "interblock_check.cpp")


def _interblock(tmp_path, mode, *defines):
    exe = tmp_path / "interblock"
    build = subprocess.run([GXX, "-std=c++20", "-pthread", "-O1", "-g", "-fsanitize=thread", *defines,
                            "-I", os.path.join(REPO, "cpp"), INTERBLOCK, "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-4000:]
    return subprocess.run([str(exe), mode], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, TSAN_OPTIONS="halt_on_error=1 exitcode=66"))


@needs_gxx
def test_blocks_run_concurrently_and_a_release_acquire_handoff_is_race_free(tmp_path):
    """Blocks once ran one after another, so code whose blocks communicate could not
    be judged. Now resident blocks run at once in a shuffled order, with the inter-block shims
    (DeviceAtomicRef: cuda::atomic_ref on the GPU, std::atomic_ref here): one block publishes a
    row with a release store of a flag, the next waits with acquire loads and reads it -- exact
    and race-free under ThreadSanitizer."""
    run = _interblock(tmp_path, "handoff")
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "ok: 2 blocks handed their rows over" in run.stdout


@needs_gxx
def test_thread_sanitizer_catches_a_relaxed_flag_between_blocks(tmp_path):
    """The planted fault: the flag published with a relaxed store orders nothing; TSan reports
    the row's writes and reads as a data race between the blocks."""
    run = _interblock(tmp_path, "handoff", "-DINVCONV_PLANT_RELAXED_FLAG")
    assert run.returncode == 66, run.stdout + run.stderr[-2000:]
    assert "WARNING: ThreadSanitizer: data race" in run.stderr and "handoff" in run.stderr


@needs_gxx
def test_a_cooperative_launch_beyond_the_resident_blocks_is_refused(tmp_path):
    """Blocks that wait on each other must all be resident at once (the GPU: the occupancy API
    or cudaLaunchCooperativeKernel); the emulation refuses a grid beyond its resident limit
    instead of deadlocking, as the GPU refuses the launch."""
    run = _interblock(tmp_path, "overcommit")
    assert run.returncode == 3, run.stdout + run.stderr[-2000:]
    assert "refused: simt cooperative launch: 3 blocks wait on each other but only 2 can be " \
           "resident at once" in run.stdout


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_the_glue_aligns_what_it_loads_as_vectors_for_any_view(dtype):
    """The CUDA glue reads the caller's tensors element by element and vector-loads only the
    packed taps it allocates itself: a weight and a right-hand side that are views with an odd
    storage offset, sliced and strided, solve correctly under the emulation, whose alignment
    check would abort the process on a misaligned vector load."""
    C, H, W = 5, 4, 6
    w, y = operands(C, 3, 2, "BR", (2, C, H, W), dtype, seed=3)
    w_odd = torch.empty(w.numel() + 1, dtype=dtype)[1:].view(w.shape).copy_(w)
    y_odd = torch.empty(2 * y.numel() + 1, dtype=dtype)[1:].view(2, C, H, 2 * W)[..., ::2].copy_(y)
    assert w_odd.storage_offset() == 1 and y_odd.storage_offset() == 1 and not y_odd.is_contiguous()
    for transpose in (False, True):
        got = emulated_inv_conv2d(y_odd, w_odd, "BR", transpose)
        assert torch.equal(got, emulated_inv_conv2d(y.contiguous(), w.contiguous(), "BR", transpose))


@pytest.mark.parametrize("C", [1, 2, 3, 5, 6, 7, 48])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("transpose", [False, True])
def test_the_plan_kernels_write_every_packed_entry(C, dtype, transpose):
    """Issue 29 item 14: a planted skip of the fold kernel's last packed entry was caught by the
    C = 48 cases alone (for C not a multiple of 4 the last entry is a padding zero that nothing
    reads). Every entry is now read: the plan kernels run under the emulation into buffers
    filled with NaN, and every packed entry must equal what plan_math.h's element functions give
    in plain host loops, for C ≡ 0, 1, 2, 3 (mod 4)."""
    from invconv_core import _simt
    order = ORDERS[C % 4]
    w, _ = operands(C, 3, 2, order, (1, C, 4, 5), dtype, seed=C)
    linv, packed, reference, _ = _simt.device_plan(w, order, transpose, 4, 5)
    assert packed.numel() == (3 * 2 + 1) * -(-C // 4) * 4 * C
    assert not torch.isnan(packed).any(), torch.nonzero(torch.isnan(packed)).flatten().tolist()
    assert torch.equal(packed, reference)
    assert not torch.isnan(linv).any()


@pytest.mark.parametrize("C", [1, 2, 3, 7, 13, 48, 90])
@pytest.mark.parametrize("where", ["shared", "global"])
def test_the_parallel_triangular_inverse_is_the_cpu_plans_to_the_bit(C, where):
    """lower_inverse_kernel was one thread per column (a C²/2-long chain of
    dependent float64 FMAs, ≈ 5 µs at C = 48 by the model); now every column at once in one
    block, 2C barriers deep. Each entry sees the CPU plan's operations in the same order, so
    L⁻¹ equals lower_inverse_column's (plan_math.h, what the CPU plan runs) to the bit -- with
    the work array in shared memory (C ≤ 78) and in global memory (C = 90, or forced) -- and it
    is L⁻¹: L · L⁻¹ = I to float64 round-off."""
    from invconv_core import _simt
    w, _ = operands(C, 2, 2, "TL", (1, C, 3, 3), torch.float64, seed=C)
    linv, _, _, linv_ref = _simt.device_plan(w, "TL", False, 3, 3,
                                              force_global_inverse=where == "global")
    assert torch.equal(linv, linv_ref)
    lower = torch.tril(w[:, :, 1, 1])
    eye = torch.eye(C, dtype=torch.float64)
    assert (lower @ linv - eye).abs().max() <= 64 * C * torch.finfo(torch.float64).eps * \
        torch.linalg.cond(lower)
    assert torch.equal(torch.triu(linv, 1), torch.zeros_like(linv))


@pytest.mark.parametrize("C", [1, 2, 3, 5, 48])
def test_a_fold_grid_one_entry_short_is_caught(C):
    """The planted fault: the fold kernel launched over one entry fewer."""
    from invconv_core import _simt
    w, _ = operands(C, 3, 2, "TL", (1, C, 4, 5), torch.float64, seed=C)
    _, packed, reference, _ = _simt.device_plan(w, "TL", False, 4, 5, skip_last=1)
    assert torch.isnan(packed[-1]) and not torch.isnan(packed[:-1]).any()
    assert not torch.equal(packed, reference)
