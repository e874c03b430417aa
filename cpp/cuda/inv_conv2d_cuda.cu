// CUDA kernel registration of invconv_core::inv_conv2d: the glue around the torch-free kernels
// of plan_kernels.cuh and wavefront_kernel.cuh -- operand checks, device guard, dtype dispatch,
// and three launches on the current stream: the plan's two (solve_plan.h's geometry, its numbers
// formed on the device) and the solve's one. No host synchronisation.
//
// Includes only what a CUDA build of torch provides without cuBLAS/cuSOLVER headers
// (ATen/cuda/CUDAContext.h would pull those in).

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../solve_plan.h"
#include "solve_launch.h"
#include "wavefront_kernel.cuh"

namespace invconv_core {
namespace {

template <typename scalar_t>
void launch_solve(const at::Tensor& y, const at::Tensor& weight, Order order, bool transpose,
                  at::Tensor& out) {
  using acc_t = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(y.device().index()).stream();
  // the plan: two small kernels on the same stream, before the solve that reads it
  DevicePlan d = prepare_plan(weight, order, transpose, y.size(2), y.size(3),
                              std::is_same<acc_t, double>::value ? at::kDouble : at::kFloat);
  const scalar_t* w = weight.const_data_ptr<scalar_t>();
  cuda_kernels::lower_inverse_kernel<scalar_t>
      <<<d.launch.channel_blocks, d.launch.threads, 0, stream>>>(w, d.params,
                                                                d.linv.mutable_data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  cuda_kernels::fold_taps_kernel<scalar_t, acc_t>
      <<<dim3(d.launch.channel_blocks, d.launch.tap_cols, d.launch.tap_rows), d.launch.threads, 0,
         stream>>>(w, d.params, d.linv.const_data_ptr<double>(),
                   d.plan.taps.mutable_data_ptr<acc_t>(),
                   d.plan.rhs_transform.mutable_data_ptr<acc_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  PreparedSolve<scalar_t, acc_t> s = prepare_solve<scalar_t, acc_t>(
      y, d.plan, out, cuda_kernels::kDefaultSharedLimit, cuda_kernels::kMaxThreads,
      cuda_kernels::kMaxBlocks);
  cuda_kernels::wavefront_solve_kernel<scalar_t, acc_t>
      <<<static_cast<unsigned>(s.config.blocks), s.config.threads, s.config.shared_bytes,
         stream>>>(s.params);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor inv_conv2d_cuda(const at::Tensor& y, const at::Tensor& weight, c10::string_view order,
                           bool transpose) {
  check_operands(y, weight, "y");  // also: y and weight on the same device
  TORCH_CHECK_VALUE(y.device().is_cuda(), "invconv_core: the CUDA kernel got y on ", y.device());
  const c10::cuda::CUDAGuard guard(y.device());
  const Order o = parse_order(std::string(order));
  at::Tensor out = at::empty(y.sizes(), y.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "inv_conv2d_cuda",
                                  [&] { launch_solve<scalar_t>(y, weight, o, transpose, out); });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(invconv_core, CUDA, m) { m.impl("inv_conv2d", &inv_conv2d_cuda); }

}  // namespace invconv_core
