"""Compiler flags of the C++/CUDA sources, in one place for the three builds that use them:
setup.py (the package), the nvcc compile check (verification/test_cuda_compile.py) and the
ThreadSanitizer driver of the emulated kernel (verification/test_cuda_emulation.py).

Plain data and small functions only: setup.py imports it before torch's build helpers run.
"""

from __future__ import annotations

import os

HERE = os.path.dirname(os.path.abspath(__file__))
CPP_DIR = os.path.join(HERE, "cpp")

# The host C++ of the compiled core. -ffp-contract=fast: FMA contraction; the CPU kernel's
# results are still bit-identical across thread counts and schedules (one fixed summation order).
CXX = ["-std=c++20", "-fopenmp", "-ffp-contract=fast", "-Wno-psabi"]
# nvcc, on top of torch's own (cpp_extension adds -std and the half-operator defines). No
# --use_fast_math: it flushes denormals to zero, and the solver needs no fast intrinsics.
NVCC: list[str] = []
# The SIMT emulation of the CUDA kernel (std::barrier: C++20; a std::thread per CUDA thread).
# -Wno-unknown-pragmas: the kernel's `#pragma unroll` lines are nvcc's; the host compiler of the
# emulation does not know them, and an unrolling hint changes nothing a test of it checks.
EMULATION_CXX = ["-std=c++20", "-pthread", "-Wno-unknown-pragmas"]
# INVCONV_WERROR=1 (set by tox): every warning of the host build is an error, so the C++ stays
# warning-free (verification/test_cuda_compile.py shows that the flag fails a planted warning).
WERROR = ["-Wall", "-Werror"]


def werror_flags() -> list[str]:
    return WERROR if os.environ.get("INVCONV_WERROR", "0") == "1" else []


def opt_flags(debug: bool) -> list[str]:
    return ["-O0", "-g"] if debug else ["-O3"]


# What torch.utils.cpp_extension passes to nvcc for a CUDA extension, for a compile check that
# calls nvcc directly (on a CPU build of torch, cpp_extension has no CUDA_HOME and will not).
TORCH_NVCC_DEFINES = [
    "-D__CUDA_NO_HALF_OPERATORS__",
    "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-D__CUDA_NO_HALF2_OPERATORS__",
    "--expt-relaxed-constexpr",
]


def nvcc_check_command(source: str, output: str, archs: list[str], include_dirs: list[str],
                       std: str = "c++20") -> list[str]:
    """nvcc command compiling one .cu of the package to an object, with warnings as errors and
    the per-kernel resource report (registers, shared memory, stack, spills) on stderr.

    archs: e.g. ["sm_80", "sm_90"]. include_dirs: torch's include paths.
    ``-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE``: a CPU wheel of torch lacks
    c10/cuda/impl/cuda_cmake_macros.h, which only a CUDA build generates.
    """
    cmd = ["nvcc", "-c", source, "-o", output, f"-std={std}", "-O3", "-Xcompiler", "-fPIC",
           "-D_GLIBCXX_USE_CXX11_ABI=1", "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE",
           "-DTORCH_EXTENSION_NAME=_C", "-DINVCONV_WITH_CUDA",
           "-Werror", "all-warnings", "--resource-usage", *TORCH_NVCC_DEFINES, *NVCC]
    for arch in archs:
        cmd += [f"-gencode=arch=compute_{arch[3:]},code={arch}"]
    for inc in include_dirs:
        cmd += ["-isystem", inc]
    return cmd


def nvcc_cubin_command(source: str, output: str, arch: str, include_dirs: list[str],
                       defines: list[str] = (), std: str = "c++20") -> list[str]:
    """nvcc command compiling one .cu to a cubin for one architecture (e.g. "sm_90"), for the
    SASS profile (verification/sass_profile.py): the flags of :func:`nvcc_check_command`, with
    ``-cubin`` instead of an object, and extra ``-D`` defines (the planted counter-examples)."""
    cmd = nvcc_check_command(source, output, [arch], include_dirs, std)
    cmd[cmd.index("-c")] = "-cubin"
    cmd[cmd.index("-Werror"):cmd.index("-Werror") + 2] = []  # a planted variant may warn
    return cmd + [f"-D{d}" for d in defines]


def find_cuda_tool(name: str) -> str | None:
    """A CUDA toolkit program (nvcc, compute-sanitizer): on PATH, else in $CUDA_HOME/bin or
    /usr/local/cuda/bin; None if absent."""
    import shutil
    found = shutil.which(name)
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), find_cuda_home(), "/usr/local/cuda"):
        if root and os.access(os.path.join(root, "bin", name), os.X_OK):
            return os.path.join(root, "bin", name)
    return None


def _is_toolkit(root: str) -> bool:
    return os.path.isfile(os.path.join(root, "include", "cuda_runtime.h")) and \
        os.path.isfile(os.path.join(root, "bin", "nvcc"))


def _wrapped_nvcc(path: str) -> str | None:
    """The nvcc a small wrapper script execs (``exec /usr/local/cuda-13.0/bin/nvcc "$@"``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None  # a binary: the real nvcc
    import re
    found = re.search(rb"(/[^\s\"']*/bin/nvcc)\b", head)
    return found.group(1).decode() if found else None


def find_cuda_home(environ=None, which=None, candidates=None) -> str | None:
    """The CUDA toolkit to build with: ``CUDA_HOME`` (or ``CUDA_PATH``) when set; else the
    toolkit of the ``nvcc`` on PATH -- through symlinks, and through a wrapper script that execs
    another nvcc (torch's own guess, ``dirname(dirname(which nvcc))``, made ``/usr/local`` of
    ``/usr/local/bin/nvcc`` and the link failed with ``cannot find -lcudart``); else the first
    ``/usr/local/cuda*`` holding ``include/cuda_runtime.h`` and ``bin/nvcc``. None when there is
    no toolkit."""
    import glob
    import shutil

    environ = os.environ if environ is None else environ
    for name in ("CUDA_HOME", "CUDA_PATH"):
        if environ.get(name):
            return environ[name]
    nvcc = (which or shutil.which)("nvcc")
    seen = set()
    while nvcc and nvcc not in seen:
        seen.add(nvcc)
        real = os.path.realpath(nvcc)
        root = os.path.dirname(os.path.dirname(real))
        if _is_toolkit(root):
            return root
        nvcc = _wrapped_nvcc(real)
    roots = candidates if candidates is not None else \
        ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    return next((r for r in roots if _is_toolkit(r)), None)


def ensure_cuda_home() -> str | None:
    """Sets ``CUDA_HOME`` from :func:`find_cuda_home` when unset -- before
    ``torch.utils.cpp_extension`` is imported, which reads it once -- and returns it."""
    home = find_cuda_home()
    if home and not os.environ.get("CUDA_HOME"):
        os.environ["CUDA_HOME"] = home
    return home


def _arch_number(flag: str) -> str | None:
    """``sm_90`` -> ``9.0``, ``sm_100a`` -> ``10.0a``, ``sm_120`` -> ``12.0`` (None for
    ``compute_*`` entries and anything else)."""
    import re
    m = re.fullmatch(r"sm_(\d+)(\d)([a-z]?)", flag.strip())
    return f"{m.group(1)}.{m.group(2)}{m.group(3)}" if m else None


def default_cuda_arch_list(torch_arch_flags: list[str], nvcc_archs: list[str] | None) -> str | None:
    """The TORCH_CUDA_ARCH_LIST to build for when no GPU is visible and none is set (a wheel
    or container build, a login node; torch's own guess fails there with ``IndexError`` in
    ``_get_cuda_arch_flags``): the architectures the installed torch was built for
    (``torch_arch_flags``, e.g. ``["sm_80", "sm_90"]``), those the toolkit's nvcc can compile
    when it says (``nvcc_archs``, e.g. ``["sm_75", "sm_80", ...]``), plus PTX of the newest so
    that newer GPUs JIT it. None when nothing is left."""
    wanted = [a for a in (_arch_number(f) for f in torch_arch_flags) if a]
    if nvcc_archs is not None:
        can = {_arch_number(f) for f in nvcc_archs}
        wanted = [a for a in wanted if a in can]
    if not wanted:
        return None
    unique = sorted(set(wanted), key=lambda a: (float(a.rstrip("abcdefghijklmnopqrstuvwxyz")), a))
    unique[-1] += "+PTX"
    return ";".join(unique)


def nvcc_gpu_archs(nvcc: str | None) -> list[str] | None:
    """``nvcc --list-gpu-code`` (sm_* entries), None when it cannot say."""
    import subprocess
    if not nvcc:
        return None
    try:
        out = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    archs = [a for a in out.stdout.split() if a.startswith("sm_")]
    return archs if out.returncode == 0 and archs else None


def choose_cuda_arch_list(environ, gpu_visible: bool, torch_arch_flags: list[str],
                          nvcc: str | None) -> str | None:
    """Sets ``environ["TORCH_CUDA_ARCH_LIST"]`` when it is unset and no GPU is visible
    (:func:`default_cuda_arch_list`) and returns the line the build prints (None: nothing to
    choose). SystemExit with one line when nothing can be chosen."""
    if environ.get("TORCH_CUDA_ARCH_LIST") or gpu_visible:
        return None
    chosen = default_cuda_arch_list(torch_arch_flags, nvcc_gpu_archs(nvcc))
    if chosen is None:
        raise SystemExit("invconv_core: no GPU is visible and TORCH_CUDA_ARCH_LIST is not set, and "
                         "the installed torch names no architecture this CUDA toolkit compiles: set "
                         "TORCH_CUDA_ARCH_LIST (e.g. TORCH_CUDA_ARCH_LIST='9.0+PTX'), or "
                         "INVCONV_FORCE_CPU=1 for a CPU-only build")
    environ["TORCH_CUDA_ARCH_LIST"] = chosen
    return (f"invconv_core: no GPU is visible; building the CUDA kernels for "
            f"TORCH_CUDA_ARCH_LIST={chosen!r} (the installed torch's architectures that this nvcc "
            f"compiles; set TORCH_CUDA_ARCH_LIST to override)")
