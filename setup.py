"""Build of the compiled core (invconv_core._C) and of the CUDA kernel's CPU emulation
(invconv_core._simt, a test-only operator; cpp/emulation/).

The CPU sources are always built. The CUDA sources (cpp/cuda/*.cu) are added when a CUDA
toolkit is found and the installed torch is a CUDA build, unless INVCONV_FORCE_CPU=1.
TORCH_CUDA_ARCH_LIST is honoured by torch's BuildExtension; when it is unset and no GPU is
visible (a wheel or container build), the architectures the installed torch was built for are
chosen (build_flags.default_cuda_arch_list) and printed. DEBUG=1 builds with -O0 -g;
INVCONV_WERROR=1 makes every host-compiler warning an error (tox sets it).

Install with ``pip install --no-build-isolation -e .``: an isolated build would download a
separate (multi-GB) torch instead of building against the one installed.
"""

import glob
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import build_flags  # noqa: E402  (the flags, shared with the compile checks)

# torch's cpp_extension reads CUDA_HOME once, at import, and guesses it from `which nvcc`,
# wrongly when that nvcc is a wrapper script (/usr/local/bin/nvcc -> CUDA_HOME=/usr/local)
build_flags.ensure_cuda_home()

import torch  # noqa: E402
from setuptools import setup  # noqa: E402
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _want_cuda() -> bool:
    if os.environ.get("INVCONV_FORCE_CPU", "0") == "1":
        return False
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None


def _choose_cuda_archs() -> None:
    """Without a visible GPU and without TORCH_CUDA_ARCH_LIST, torch's cpp_extension cannot
    guess the architectures (IndexError in _get_cuda_arch_flags): build_flags chooses them."""
    try:
        flags = torch._C._cuda_getArchFlags().split()
    except (AttributeError, RuntimeError):
        flags = []
    message = build_flags.choose_cuda_arch_list(os.environ, torch.cuda.is_available(), flags,
                                                os.path.join(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else None)
    if message:
        print(message, flush=True)


def _extensions():
    debug = os.environ.get("DEBUG", "0") == "1"
    opt = build_flags.opt_flags(debug)
    sources = sorted(glob.glob(os.path.join("cpp", "*.cpp")))
    sources += sorted(glob.glob(os.path.join("cpp", "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join("cpp", "cuda", "*.cu")))
    cxx = opt + build_flags.CXX + build_flags.werror_flags()
    kwargs = dict(extra_link_args=["-fopenmp"])
    if _want_cuda() and cuda_sources:
        _choose_cuda_archs()
        core = CUDAExtension(
            "invconv_core._C",
            sources + cuda_sources,
            define_macros=[("INVCONV_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": opt + build_flags.NVCC},
            **kwargs,
        )
    else:
        core = CppExtension("invconv_core._C", sources, extra_compile_args={"cxx": cxx}, **kwargs)
    # The CUDA kernel's source run on the CPU under the SIMT emulation: a test-only operator
    # (torch.ops.invconv_simt.inv_conv2d) that verifies the kernel on machines without a GPU.
    emulation = CppExtension(
        "invconv_core._simt",
        [os.path.join("cpp", "emulation", "emulated_op.cpp"), os.path.join("cpp", "solve_plan.cpp")],
        extra_compile_args={"cxx": opt + build_flags.EMULATION_CXX + build_flags.werror_flags()},
        extra_link_args=["-pthread"],
    )
    return [core, emulation]


setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
