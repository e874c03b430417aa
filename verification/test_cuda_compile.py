"""nvcc compiles every CUDA source of the package for sm_80 and sm_90, with warnings as
errors, and its kernels neither spill registers nor use local memory (nvcc_check.py). No GPU
needed, only the CUDA toolkit; skipped, visibly, where nvcc is absent. The last test shows the
check rejects what it guards against."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

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
    # kernel in twelve variants of each (wavefront_kernel.cuh's solve_kernel: taps shared or
    # global x image shared, in a ring, global, in bands with 32-bit indices; ring or global
    # with 64-bit)
    for name, variants in (("wavefront_solve_kernel", 12), ("lower_inverse_kernel", 2),
                           ("fold_taps_kernel", 1)):
        found = sorted(k.arch for k in res.kernels if name in k.name)
        assert found == sorted(ARCHS * 4 * variants), (name, res.output[-3000:])
    assert problems(res.kernels) == []
    solve = [k for k in res.kernels if "wavefront_solve_kernel" in k.name]
    # 64 registers: 1024 threads a block; the 64-bit-index variants and the band variants, 512
    # threads, 128 (their mangled template arguments: ..., image Li<n>E, then index type l
    # (long) or i (int), then the policy; bands are image 3)
    wide, band = re.compile(r"ELi\dEl"), re.compile(r"ELi3Ei")
    bound512 = lambda name: wide.search(name) or band.search(name)  # noqa: E731
    assert all(k.barriers >= 1 and 0 < k.registers <= (128 if bound512(k.name) else 64) for k in solve)
    assert sum(bool(wide.search(k.name)) for k in solve) == len(ARCHS) * 4 * 4
    assert sum(bool(band.search(k.name)) for k in solve) == len(ARCHS) * 4 * 2


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
    """Torch guesses CUDA_HOME = dirname(dirname(which nvcc)); with /usr/local/bin/nvcc
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


def test_without_a_visible_gpu_the_build_chooses_torchs_architectures(tmp_path):
    """A CUDA build where no GPU is visible (a container or wheel build)
    crashed in torch's _get_cuda_arch_flags (IndexError) unless TORCH_CUDA_ARCH_LIST was set.
    Now the build chooses the installed torch's architectures that the toolkit's nvcc compiles,
    PTX for the newest, and says so; a set TORCH_CUDA_ARCH_LIST or a visible GPU is left alone.
    A fake toolkit's nvcc answers --list-gpu-code as nvcc 13 does (no sm_50/sm_60/sm_70)."""
    import build_flags

    toolkit = tmp_path / "cuda-13.0"
    (toolkit / "bin").mkdir(parents=True)
    nvcc = toolkit / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\n[ \"$1\" = --list-gpu-code ] && echo 'sm_75\nsm_80\nsm_86\nsm_90\nsm_100\nsm_120'\n")
    nvcc.chmod(0o755)
    torch_flags = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120",
                   "compute_120"]
    env = {}
    line = build_flags.choose_cuda_arch_list(env, False, torch_flags, str(nvcc))
    assert env["TORCH_CUDA_ARCH_LIST"] == "7.5;8.0;8.6;9.0;10.0;12.0+PTX"
    assert "no GPU is visible" in line and "7.5;8.0;8.6;9.0;10.0;12.0+PTX" in line and "override" in line
    assert build_flags.choose_cuda_arch_list({"TORCH_CUDA_ARCH_LIST": "9.0"}, False, torch_flags, str(nvcc)) is None
    env = {}
    assert build_flags.choose_cuda_arch_list(env, True, torch_flags, str(nvcc)) is None and not env
    # nvcc that cannot say: torch's list as it is; nothing in common: one line, not a traceback
    assert build_flags.default_cuda_arch_list(["sm_90a", "sm_80"], None) == "8.0;9.0a+PTX"
    with pytest.raises(SystemExit, match="set TORCH_CUDA_ARCH_LIST"):
        build_flags.choose_cuda_arch_list({}, False, ["sm_50"], str(nvcc))


def _compile_host(source, flags, tmp_path):
    return subprocess.run(["g++", "-c", str(source), "-o", str(tmp_path / "x.o"), *flags],
                          capture_output=True, text=True)


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++")
def test_werror_build_flags_fail_a_planted_warning(tmp_path):
    """The host build is warning-free, and tox builds it with INVCONV_WERROR=1
    (build_flags.werror_flags) so that a new warning fails the install. The gate can fail: the
    planted -Wmaybe-uninitialized (the kind wavefront_kernels.h had: a value set only on one
    branch) is an error under those flags, and compiles without them."""
    import build_flags

    src = tmp_path / "planted.cpp"
    src.write_text("int g(int);\nint f(bool masked) {\n  int lane;\n  if (masked) lane = g(1);\n"
                   "  return g(lane);\n}\n")
    flags = build_flags.opt_flags(False) + build_flags.CXX
    assert _compile_host(src, flags, tmp_path).returncode == 0
    res = _compile_host(src, flags + build_flags.WERROR, tmp_path)
    assert res.returncode != 0 and "uninitialized" in res.stderr, res.stderr
    assert build_flags.werror_flags() == (build_flags.WERROR if os.environ.get("INVCONV_WERROR") == "1" else [])
