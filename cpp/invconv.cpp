// Operator schemas of the invconv_core library and the Python module init (which only reports
// how the core was built).
//
//   causal_conv2d(x, weight, order)           y = T(weight, order) x           (docs/design.md §1)
//   inv_conv2d(y, weight, order, transpose)   x = T^{-1} y, or T^{-T} y if transpose
//
// inv_conv2d has a CPU kernel (cpu/wavefront_solve_cpu.cpp), when built with CUDA a CUDA kernel,
// and an autograd kernel (autograd.cpp) built from these same ops, so it differentiates again;
// its fake (meta) implementation is registered from Python (invconv_core/ops.py).
// causal_conv2d is CompositeImplicitAutograd: pad + masked conv2d, so autograd, every backend
// (oneDNN, cuDNN) and torch.compile see plain ATen ops. Its one implementation is in Python
// (invconv_core/wavefront.py, registered by _loader.py), since the fallback needs it when this
// module cannot be loaded.

#include <ATen/ATen.h>
#include <torch/extension.h>
#include <torch/library.h>

TORCH_LIBRARY(invconv_core, m) {
  m.def("causal_conv2d(Tensor x, Tensor weight, str order=\"TL\") -> Tensor");
  m.def("inv_conv2d(Tensor y, Tensor weight, str order=\"TL\", bool transpose=False) -> Tensor");
}

namespace invconv_core {
const char* cpu_kernel_isa();  // cpu/wavefront_solve_cpu.cpp
}

static pybind11::dict build_info() {
  pybind11::dict info;
#ifdef INVCONV_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
#ifdef _OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
  info["cpu_multiversion"] = "x86-64-v3,default";
#else
  info["cpu_multiversion"] = "none";
#endif
  info["cpu_isa"] = invconv_core::cpu_kernel_isa();  // INVCONV_CPU_ISA=baseline forces the baseline
  info["torch_built_against"] = TORCH_VERSION;
  return info;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "invconv_core compiled core: registers the invconv_core:: operators";
  m.def("build_info", &build_info, "How the compiled core was built");
}
