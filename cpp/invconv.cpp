// Operator schemas of the invconv_core library, the composite causal convolution, and the
// Python module init (which only reports how the core was built).
//
//   causal_conv2d(x, weight, order)           y = T(weight, order) x           (docs/design.md §1)
//   inv_conv2d(y, weight, order, transpose)   x = T^{-1} y, or T^{-T} y if transpose
//
// inv_conv2d has a CPU kernel (cpu/wavefront_solve_cpu.cpp) and, when built with CUDA, a CUDA
// kernel; its autograd formula and fake (meta) implementation are registered from Python
// (invconv_core/ops.py) and are built from these same ops, so they differentiate again.
// causal_conv2d is CompositeImplicitAutograd: pad + masked conv2d, so autograd, every backend
// (oneDNN, cuDNN) and torch.compile see plain ATen ops.

#include <ATen/ATen.h>
#include <torch/extension.h>
#include <torch/library.h>

#include "solve_plan.h"

namespace invconv_core {

// (left, right, top, bottom) padding and the current-pixel tap of each order.
struct OrderGeometry {
  std::vector<int64_t> pad;
  int64_t tap_row, tap_col;
};

static OrderGeometry order_geometry(Order o, int64_t kh, int64_t kw) {
  switch (o) {
    case Order::TL: return {{kw - 1, 0, kh - 1, 0}, kh - 1, kw - 1};
    case Order::TR: return {{0, kw - 1, kh - 1, 0}, kh - 1, 0};
    case Order::BL: return {{kw - 1, 0, 0, kh - 1}, 0, kw - 1};
    case Order::BR: return {{0, kw - 1, 0, kh - 1}, 0, 0};
  }
  return {{0, 0, 0, 0}, 0, 0};  // unreachable
}

at::Tensor causal_conv2d(const at::Tensor& x, const at::Tensor& weight, c10::string_view order) {
  check_operands(x, weight, "x");
  const Order o = parse_order(std::string(order));
  const OrderGeometry geo = order_geometry(o, weight.size(2), weight.size(3));
  // Zero the current-pixel tap above the channel diagonal (c' > c): output channel c of a
  // pixel reads channels c' <= c of that pixel, so T is block lower-triangular. `where`, not a
  // multiplication by the mask: the ignored entries may hold NaN or inf (0 * NaN = NaN).
  at::Tensor keep = at::ones(weight.sizes(), weight.options().dtype(at::kBool));
  at::Tensor current = keep.select(2, geo.tap_row).select(2, geo.tap_col);
  current.copy_(at::ones_like(current).tril());
  const at::Tensor masked = at::where(keep, weight, at::zeros({}, weight.options()));
  if (x.size(2) == 0 || x.size(3) == 0) {
    // No pixels: conv2d rejects the padded (kh-1)-row input, but the answer is simply empty.
    // Multiplying keeps the result attached to both inputs for autograd (zero gradients).
    return (x * masked.sum()).contiguous();
  }
  return at::conv2d(at::constant_pad_nd(x, geo.pad), masked);
}

}  // namespace invconv_core

TORCH_LIBRARY(invconv_core, m) {
  m.def("causal_conv2d(Tensor x, Tensor weight, str order=\"TL\") -> Tensor");
  m.def("inv_conv2d(Tensor y, Tensor weight, str order=\"TL\", bool transpose=False) -> Tensor");
}

TORCH_LIBRARY_IMPL(invconv_core, CompositeImplicitAutograd, m) {
  m.impl("causal_conv2d", &invconv_core::causal_conv2d);
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
  info["torch_built_against"] = TORCH_VERSION;
  return info;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "invconv_core compiled core: registers the invconv_core:: operators";
  m.def("build_info", &build_info, "How the compiled core was built");
}
