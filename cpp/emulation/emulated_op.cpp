// invconv_core._simt: the CUDA kernel of inv_conv2d (cuda/wavefront_kernel.cuh, the source
// nvcc compiles) run on the CPU under the SIMT emulation (simt_emulation.h), as the test-only
// operator
//
//   torch.ops.invconv_simt.inv_conv2d(y, weight, order="TL", transpose=False,
//                                     threads=0, max_blocks=0, shared_limit=-1)
//
// on CPU tensors. Operand checks, the plan kernels (cuda/plan_kernels.cuh) and the kernel
// parameters are those of the CUDA glue (cuda/solve_launch.h); only the launch differs. threads / max_blocks /
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

template <typename scalar_t>
void emulate_solve(const at::Tensor& y, const at::Tensor& weight, Order order, bool transpose,
                   at::Tensor& out, std::size_t shared_limit, int threads, int64_t max_blocks) {
  using acc_t = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;
  // the launches of the CUDA glue (cuda/inv_conv2d_cuda.cu), in the same order
  DevicePlan d = prepare_plan(weight, order, transpose, y.size(2), y.size(3),
                              std::is_same<acc_t, double>::value ? at::kDouble : at::kFloat);
  const scalar_t* w = weight.const_data_ptr<scalar_t>();
  invconv_simt::launch(&cuda_kernels::lower_inverse_kernel<scalar_t>, dim3(d.launch.channel_blocks),
                       dim3(d.launch.threads), 0, w, d.params, d.linv.mutable_data_ptr<double>());
  invconv_simt::launch(&cuda_kernels::fold_taps_kernel<scalar_t, acc_t>,
                       dim3(d.launch.channel_blocks, d.launch.tap_cols, d.launch.tap_rows),
                       dim3(d.launch.threads), 0, w, d.params, d.linv.const_data_ptr<double>(),
                       d.plan.taps.mutable_data_ptr<acc_t>(),
                       d.plan.rhs_transform.mutable_data_ptr<acc_t>());
  PreparedSolve<scalar_t, acc_t> s =
      prepare_solve<scalar_t, acc_t>(y, d.plan, out, shared_limit, threads, max_blocks);
  invconv_simt::launch(&cuda_kernels::wavefront_solve_kernel<scalar_t, acc_t>,
                       dim3(static_cast<unsigned>(s.config.blocks)),
                       dim3(static_cast<unsigned>(s.config.threads)), s.config.shared_bytes,
                       s.params);
}

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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "inv_conv2d_emulated",
                                  [&] {
    emulate_solve<scalar_t>(y, weight, o, transpose, out, limit, n_threads, n_blocks);
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
