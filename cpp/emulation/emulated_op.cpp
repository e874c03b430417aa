// invconv_core._simt: the CUDA kernel of inv_conv2d (cuda/wavefront_kernel.cuh, the source
// nvcc compiles) run on the CPU under the SIMT emulation (simt_emulation.h), as the test-only
// operator
//
//   torch.ops.invconv_simt.inv_conv2d(y, weight, order="TL", transpose=False,
//                                     threads=0, max_blocks=0, shared_limit=-1)
//
// on CPU tensors. Operand checks and the launches (cuda/solve_launch.h: run_solve) are those of
// the CUDA glue; only how a kernel is launched differs. threads / max_blocks /
// shared_limit override the launch limits (0 / 0 / -1: the CUDA build's), so tests reach the
// code paths a GPU takes for larger problems: several images per block, more (pixel, channel)
// pairs than threads, taps or image outside shared memory.
// Slow (a std::thread per CUDA thread): meant for small verification cases.

#include "simt_emulation.h"  // first: the kernel header builds on it

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/extension.h>
#include <torch/library.h>

#include "../cuda/solve_launch.h"
#include "../cuda/wavefront_kernel.cuh"
#include "../solve_plan.h"

namespace invconv_core {
namespace {

at::Tensor inv_conv2d_emulated(const at::Tensor& y, const at::Tensor& weight,
                               c10::string_view order, bool transpose, int64_t threads,
                               int64_t max_blocks, int64_t shared_limit) {
  check_operands(y, weight, "y");
  TORCH_CHECK_VALUE(y.device().is_cpu(), "invconv_simt: the emulation runs on CPU tensors, got y on ",
                    y.device());
  TORCH_CHECK_VALUE(threads >= 0 && threads <= cuda_kernels::kMaxThreads,
                    "invconv_simt: threads must be in [0, ", cuda_kernels::kMaxThreads, "], got ",
                    threads);
  TORCH_CHECK_VALUE(max_blocks >= 0, "invconv_simt: max_blocks must be >= 0, got ", max_blocks);
  const Order o = parse_order(std::string(order));
  at::Tensor out = at::empty(y.sizes(), y.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  const std::size_t limit = shared_limit < 0 ? cuda_kernels::kDefaultSharedLimit
                                             : static_cast<std::size_t>(shared_limit);
  const int n_threads = threads == 0 ? cuda_kernels::kMaxThreads : static_cast<int>(threads);
  const int64_t n_blocks = max_blocks == 0 ? cuda_kernels::kMaxBlocks : max_blocks;
  auto launch = [](auto kernel, dim3 grid, dim3 block, std::size_t shared, const auto&... args) {
    invconv_simt::launch(kernel, grid, block, shared, args...);
  };
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "inv_conv2d_emulated", [&] {
    run_solve<scalar_t>(y, weight, o, transpose, out, limit, n_threads, n_blocks, launch);
  });
  return out;
}

}  // namespace
}  // namespace invconv_core

TORCH_LIBRARY(invconv_simt, m) {
  m.def("inv_conv2d(Tensor y, Tensor weight, str order=\"TL\", bool transpose=False, "
        "int threads=0, int max_blocks=0, int shared_limit=-1) -> Tensor");
}

TORCH_LIBRARY_IMPL(invconv_simt, CPU, m) { m.impl("inv_conv2d", &invconv_core::inv_conv2d_emulated); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "invconv_core's CUDA kernel under the CPU SIMT emulation (test-only operator "
            "torch.ops.invconv_simt.inv_conv2d)";
}
