"""nvcc compiles every CUDA source of the package for sm_80 and sm_90, with warnings as
errors, and its kernels neither spill registers nor use local memory (nvcc_check.py). No GPU
needed, only the CUDA toolkit; skipped, visibly, where nvcc is absent. The last test shows the
check rejects what it guards against."""

from __future__ import annotations

import os

import pytest
from nvcc_check import ARCHS, compile_check, cuda_sources, find_nvcc, problems

needs_nvcc = pytest.mark.skipif(find_nvcc() is None, reason="nvcc not found: the CUDA compile "
                                "check needs the CUDA toolkit (PATH, $CUDA_HOME or /usr/local/cuda)")


def test_the_package_has_cuda_sources():
    assert [os.path.basename(s) for s in cuda_sources()] == ["inv_conv2d_cuda.cu"]


@needs_nvcc
@pytest.mark.parametrize("source", cuda_sources(), ids=os.path.basename)
def test_cuda_source_compiles_clean_without_spills_or_local_memory(source):
    res = compile_check(source, ARCHS)
    assert res.returncode == 0, "nvcc failed:\n" + res.output[-6000:]
    # the plan's two kernels for float, double, half, bfloat16 and each architecture; the solve
    # kernel in ten variants of each (wavefront_kernel.cuh's solve_kernel: taps shared or
    # global x image shared, in a ring, global with 32-bit indices; ring or global with 64-bit)
    for name, variants in (("wavefront_solve_kernel", 10), ("lower_inverse_kernel", 1),
                           ("fold_taps_kernel", 1)):
        found = sorted(k.arch for k in res.kernels if name in k.name)
        assert found == sorted(ARCHS * 4 * variants), (name, res.output[-3000:])
    assert problems(res.kernels) == []
    solve = [k for k in res.kernels if "wavefront_solve_kernel" in k.name]
    # 64 registers: 1024 threads a block; the 64-bit-index variants, 512 threads, 128
    assert all(k.barriers >= 1 and 0 < k.registers <= (128 if "ElEE" in k.name else 64) for k in solve)


PLANTED = {
    "warning": "__global__ void unused(float* out) { int x = 0; out[0] = 1.0f; }\n",
    "local memory": """
__global__ void local_array(const int* idx, float* out) {
  float a[256];
  for (int i = 0; i < 256; ++i) a[i] = out[i];
  a[idx[threadIdx.x] & 255] += 1.0f;   // written and read at run-time indices: local memory
  out[threadIdx.x] = a[idx[threadIdx.x + 1] & 255];
}
""",
    "spills": """
__global__ void __launch_bounds__(1024, 2) register_pressure(const float* in, float* out) {
  float acc[48];  // 48 live values, at most 32 registers per thread
#pragma unroll
  for (int k = 0; k < 48; ++k) acc[k] = in[k * 1024 + threadIdx.x];
  for (int r = 0; r < 8; ++r) {
#pragma unroll
    for (int k = 0; k < 48; ++k) acc[k] = acc[k] * acc[(k + r) % 48] + in[k];
  }
  float s = 0;
#pragma unroll
  for (int k = 0; k < 48; ++k) s += acc[k];
  out[threadIdx.x] = s;
}
""",
}


@needs_nvcc
@pytest.mark.parametrize("defect", sorted(PLANTED))
def test_compile_check_rejects_planted_defects(defect, tmp_path):
    src = tmp_path / "planted.cu"
    src.write_text(PLANTED[defect])
    res = compile_check(str(src), ["sm_80"], include_dirs=[])
    if defect == "warning":
        assert res.returncode != 0 and "declared but never referenced" in res.output
    else:
        assert res.returncode == 0, res.output
        expected = "spills" if defect == "spills" else "local memory"
        assert any(expected in p for p in problems(res.kernels)), problems(res.kernels)


def test_cuda_home_is_found_through_a_wrapper_nvcc(tmp_path):
    """Issue 20: torch guesses CUDA_HOME = dirname(dirname(which nvcc)); with /usr/local/bin/nvcc
    a wrapper script (`exec /usr/local/cuda-13.0/bin/nvcc "$@"`) that is /usr/local and the link
    failed (cannot find -lcudart). build_flags.find_cuda_home follows the wrapper."""
    import build_flags

    toolkit = tmp_path / "cuda-13.0"
    (toolkit / "include").mkdir(parents=True)
    (toolkit / "bin").mkdir()
    (toolkit / "include" / "cuda_runtime.h").write_text("")
    (toolkit / "bin" / "nvcc").write_bytes(b"\x7fELF")  # a binary: the real compiler
    wrapper = tmp_path / "bin" / "nvcc"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {toolkit}/bin/nvcc "$@"\n')
    link = tmp_path / "link" / "bin" / "nvcc"
    link.parent.mkdir(parents=True)
    link.symlink_to(toolkit / "bin" / "nvcc")
    which = lambda path: lambda name: str(path)  # noqa: E731
    assert build_flags.find_cuda_home({}, which(wrapper), []) == str(toolkit)
    assert build_flags.find_cuda_home({}, which(link), []) == str(toolkit)
    assert build_flags.find_cuda_home({"CUDA_HOME": "/opt/x"}, which(wrapper), []) == "/opt/x"
    # no nvcc on PATH: the first /usr/local/cuda* that is a toolkit
    assert build_flags.find_cuda_home({}, lambda name: None, [str(tmp_path / "none"), str(toolkit)]) == str(toolkit)
    assert build_flags.find_cuda_home({}, lambda name: None, [str(tmp_path / "none")]) is None
    # a wrapper that execs something else is not taken for a toolkit
    wrapper.write_text("#!/bin/sh\nexec ccache gcc \"$@\"\n")
    assert build_flags.find_cuda_home({}, which(wrapper), []) is None
