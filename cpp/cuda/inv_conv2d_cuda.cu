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

#include <algorithm>
#include <cstdlib>
#include <string>

#include "../solve_plan.h"
#include "solve_launch.h"
#include "wavefront_kernel.cuh"

namespace invconv_core {
namespace {

at::Tensor inv_conv2d_cuda(const at::Tensor& y, const at::Tensor& weight, c10::string_view order,
                           bool transpose) {
  check_operands(y, weight, "y");  // also: y and weight on the same device
  TORCH_CHECK_VALUE(y.device().is_cuda(), "invconv_core: the CUDA kernel got y on ", y.device());
  const c10::cuda::CUDAGuard guard(y.device());
  const Order o = parse_order(std::string(order));
  at::Tensor out = at::empty(y.sizes(), y.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(y.device().index()).stream();
  // The device's dynamic shared memory per block with the opt-in (227 KiB on sm_90, 163 KiB on
  // sm_80): the image of 100 x 12 x 32^2 and the taps of C = 48 then stay on chip.
  int optin = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                        y.device().index()));
  const std::size_t shared_limit =
      std::max<std::size_t>(cuda_kernels::kDefaultSharedLimit, static_cast<std::size_t>(optin));
  // Its multiprocessors: a batch that leaves half of them idle is solved in bands of rows, one
  // block each (wavefront_kernel.cuh, kImageBand).
  // INVCONV_CUDA_BANDS=0 in the environment keeps one block per image at every batch size (an
  // escape hatch, and how bench/gpu.py times the two side by side).
  int sm_count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, y.device().index()));
  if (const char* bands = std::getenv("INVCONV_CUDA_BANDS"); bands && std::string(bands) == "0") sm_count = 0;
  auto launch = [stream](auto kernel, dim3 grid, dim3 block, std::size_t shared, auto... args) {
    if (shared > cuda_kernels::kDefaultSharedLimit)  // the opt-in, per kernel
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(shared)));
    kernel<<<grid, block, shared, stream>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "inv_conv2d_cuda", [&] {
    run_solve<scalar_t>(y, weight, o, transpose, out, shared_limit, cuda_kernels::kMaxThreads,
                        cuda_kernels::kMaxBlocks, /*force_wide_index=*/false, sm_count,
                        /*band_rows=*/0, launch);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(invconv_core, CUDA, m) { m.impl("inv_conv2d", &inv_conv2d_cuda); }

}  // namespace invconv_core
