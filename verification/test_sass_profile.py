"""The CUDA solve kernel's machine code, without a GPU (issue 20): nvcc compiles
cpp/cuda/inv_conv2d_cuda.cu for sm_90, nvdisasm disassembles it, and sass_profile.py reads the
loops back. For the float32 and float64 solve kernels, every path (taps and image in shared or
global memory, 32- and 64-bit indices):

  * no generic loads or stores in the hot loop (the work of one anti-diagonal);
  * at least 30 % FMA in the innermost loop (the dot product over input channels);
  * no local memory, no spills;
  * on the 32-bit-index path, no 64-bit integer arithmetic in the innermost loop beyond forming
    each global stream's address (none at all with taps and image in shared memory).

Each assertion is shown to fail on a planted counter-example: a compile switch of the kernel
(wavefront_kernel.cuh) that restores the defect. Skipped, visibly, without nvcc or nvdisasm
(the test environment installs nvidia-cuda-nvdisasm from the registry)."""

from __future__ import annotations

import pytest
from nvcc_check import find_nvcc
from sass_profile import (MIN_FMA_SHARE, Mix, find_disassembler, parse_sass, profile,
                          solve_kernels, violations)

needs_tools = pytest.mark.skipif(
    find_nvcc() is None or find_disassembler("nvdisasm") is None,
    reason="the SASS profile needs nvcc (CUDA toolkit) and nvdisasm (pip install nvidia-cuda-nvdisasm)")


@pytest.fixture(scope="module")
def sm90():
    return profile(arch="sm_90")


@needs_tools
def test_solve_kernels_pass_the_profile(sm90):
    assert violations(sm90) == []
    for acc in ("float", "double"):
        kernels = solve_kernels(sm90, acc)
        # int32: taps shared or global x image shared, in a ring, global, in bands; int64: taps
        # shared or global x image in a ring or global
        assert len(kernels) == 12, [k.short for k in kernels]
        for k in kernels:
            assert k.innermost["fma_share"] >= MIN_FMA_SHARE
            assert k.hot_loop["generic_ld"] == k.hot_loop["generic_st"] == 0
        # taps and image on chip, 32-bit offsets: shared loads only, no 64-bit arithmetic at all
        # in the hot loop, and the dot product's loads are LDS (the taps as 16-byte vectors)
        on_chip = next(k for k in kernels if "true, 1, int>" in k.short)
        assert on_chip.hot_loop["wide_int"] == 0 and on_chip.hot_loop["ldg"] == 0
        assert on_chip.innermost["lds"] > 0 and on_chip.innermost["fma"] >= 8
        # the ring of diagonals: the dot product reads shared memory only
        ring = next(k for k in kernels if "true, 2, int>" in k.short)
        assert ring.innermost["ldg"] == 0 and ring.innermost["wide_int"] == 0
        # bands (several blocks an image): a thread's share of the taps reads the band and the
        # staged taps from shared memory only, no 64-bit arithmetic -- the halo's global loads
        # are the comm warp's, outside the hot loop
        band = next(k for k in kernels if "true, 3, int>" in k.short)
        assert band.hot_loop["ldg"] == 0 and band.hot_loop["wide_int"] == 0
        assert band.innermost["lds"] > 0 and band.innermost["fma"] >= 8


# the planted policies of cpp/testing/planted_kernel.h, by the violation each must produce
PLANTS = {
    "generic": "INVCONV_PLANTED_KERNEL=PlantedRuntimePointerChoice",
    "64-bit": "INVCONV_PLANTED_KERNEL=PlantedWideIndex",
    "fma": "INVCONV_PLANTED_KERNEL=PlantedOneFmaPerLoad",
}


@needs_tools
@pytest.mark.parametrize("kind", sorted(PLANTS))
def test_the_profile_catches_a_planted_defect(kind):
    found = violations(profile(arch="sm_90", defines=[PLANTS[kind]]))
    assert any(v.startswith(kind + ":") for v in found), found


# --- the reader of the machine code, on a hand-written listing (no toolkit needed) ------------

LISTING = """
//--------------------- .text._Z6kernelPf --------------------------
.text._Z6kernelPf:
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_0:
        /*0010*/                   LDG.E R2, desc[UR4][R4.64] ;
.L_x_1:
        /*0020*/                   LDS.128 R8, [R3+0x10] ;
        /*0030*/                   FFMA R0, R8, R9, R0 ;
        /*0040*/                   IADD3.X R5, R5, RZ, RZ, P0, !PT ;
        /*0050*/              @P0 BRA `(.L_x_1) ;
        /*0060*/                   LD.E R6, [R4.64] ;
        /*0070*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0080*/                   ISETP.GE.U32.AND.EX P1, PT, R7, RZ, PT, P1 ;
        /*0090*/              @!P1 BRA `(.L_x_0) ;
        /*00a0*/                   NOP ;
        /*00b0*/                   EXIT ;
"""


def test_the_reader_finds_loops_and_counts_by_kind():
    fn = parse_sass(LISTING)["_Z6kernelPf"]
    assert [(lp.start, lp.end) for lp in fn.loops] == [(0x10, 0x90)]
    inner = fn.loops[0].children
    assert [(lp.start, lp.end) for lp in inner] == [(0x20, 0x50)]
    mix = Mix.of(fn.body(inner[0]))
    assert (mix.instructions, mix.fma, mix.lds, mix.wide_int) == (4, 1, 1, 1)
    outer = Mix.of(fn.body(fn.loops[0]))
    assert (outer.ldg, outer.generic_ld, outer.bar, outer.wide_int) == (1, 1, 1, 2)
    assert Mix.of(fn.instrs).instructions == 11  # the NOP is padding, not counted
