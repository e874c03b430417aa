"""Build of the compiled core (invconv_core._C).

The CPU sources are always built. The CUDA sources (cpp/cuda/*.cu) are added when a CUDA
toolkit is found and the installed torch is a CUDA build, unless INVCONV_FORCE_CPU=1.
TORCH_CUDA_ARCH_LIST is honoured by torch's BuildExtension. DEBUG=1 builds with -O0 -g.

Install with ``pip install --no-build-isolation -e .``: an isolated build would download a
separate (multi-GB) torch instead of building against the one installed.
"""

import glob
import os

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))


def _want_cuda() -> bool:
    if os.environ.get("INVCONV_FORCE_CPU", "0") == "1":
        return False
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None


def _extension():
    debug = os.environ.get("DEBUG", "0") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    sources = sorted(glob.glob(os.path.join("cpp", "*.cpp")))
    sources += sorted(glob.glob(os.path.join("cpp", "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join("cpp", "cuda", "*.cu")))
    cxx = opt + ["-std=c++20", "-fopenmp", "-ffp-contract=fast", "-Wno-psabi"]
    kwargs = dict(extra_link_args=["-fopenmp"])
    if _want_cuda() and cuda_sources:
        return CUDAExtension(
            "invconv_core._C",
            sources + cuda_sources,
            define_macros=[("INVCONV_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": opt + ["-std=c++17", "--use_fast_math"]},
            **kwargs,
        )
    return CppExtension("invconv_core._C", sources, extra_compile_args={"cxx": cxx}, **kwargs)


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
