// Host side of one wavefront-kernel solve, shared by the CUDA glue (inv_conv2d_cuda.cu) and
// the CPU emulation of the same kernels (emulation/emulated_op.cpp): the SolvePlan (the CPU
// kernel's geometry, its numbers formed on the device by plan_kernels.cuh), then the solve
// kernel's parameters -- the flipped index maps of the input and the output, the packed taps,
// the scratch image -- and its launch configuration, and the three launches in order
// (run_solve). The caller only dispatches the dtype and says how a kernel is launched.
#pragma once

#include <ATen/ATen.h>

#include <limits>
#include <type_traits>

#include "../solve_plan.h"
#include "plan_kernels.cuh"
#include "wavefront_kernel.cuh"

namespace invconv_core {

// The kernels' accumulation type: float64 for float64 data, float32 for the rest.
template <typename scalar_t>
using kernel_acc_t = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;

// Pointer offset and strides of `t` (N, C, H, W) seen in the canonical TL frame of the plan.
inline cuda_kernels::View4 canonical_view(const at::Tensor& t, const SolvePlan& plan,
                                          bool reverse_channels, int64_t* offset) {
  cuda_kernels::View4 v{t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
  *offset = 0;
  if (reverse_channels) { *offset += (t.size(1) - 1) * v.sc; v.sc = -v.sc; }
  if (plan.flip_rows) { *offset += (t.size(2) - 1) * v.sh; v.sh = -v.sh; }
  if (plan.flip_cols) { *offset += (t.size(3) - 1) * v.sw; v.sw = -v.sw; }
  return v;
}

// The plan of one solve on the weight's device: geometry, and empty tensors for its numbers,
// which lower_inverse_kernel then fold_taps_kernel fill (launched by the caller, in that order,
// on the stream of the solve): L^{-1}, then the taps and M in the solve kernel's packed layout
// (plan_math.h).
struct DevicePlan {
  SolvePlan plan;
  at::Tensor linv;    // (C, C) float64 workspace: L^{-1}
  at::Tensor packed;  // packed_size(C, kh, kw) values of the accumulation dtype
  cuda_kernels::PlanParams params;
  cuda_kernels::PlanLaunch launch;
};

inline DevicePlan prepare_plan(const at::Tensor& weight, Order order, bool transpose,
                               int64_t height, int64_t width, at::ScalarType acc_dtype) {
  DevicePlan d;
  const int64_t C = weight.size(0), KH = weight.size(2), KW = weight.size(3);
  d.plan = plan_geometry(C, KH, KW, order, transpose, height, width);
  const auto opts = weight.options().memory_format(at::MemoryFormat::Contiguous);
  d.packed = at::empty({cuda_kernels::packed_size(C, d.plan.kh, d.plan.kw)}, opts.dtype(acc_dtype));
  d.linv = at::empty({C, C}, opts.dtype(at::kDouble));
  d.params = cuda_kernels::PlanParams{
      cuda_kernels::View4{weight.stride(0), weight.stride(1), weight.stride(2), weight.stride(3)},
      C, KH, KW, d.plan.kh, d.plan.kw, transpose, d.plan.flip_rows, d.plan.flip_cols};
  d.launch = cuda_kernels::plan_launch(C, d.plan.kh, d.plan.kw);
  return d;
}

// Everything one launch needs; the tensors keep the buffers alive until the launch returns
// (on a GPU, the caching allocator keeps them valid for the stream's later work).
template <typename scalar_t, typename acc_t>
struct PreparedSolve {
  cuda_kernels::SolveParams<scalar_t, acc_t> params;
  cuda_kernels::LaunchConfig config;
  at::Tensor scratch;
  at::Tensor progress;  // kImageBand: the bands' progress flags and the ticket counter
};

// y: the right-hand side (any strides); out: a contiguous tensor of y's shape, dtype and
// device (not empty); packed: the plan's packed taps. `shared_limit` (the device's dynamic
// shared memory with its opt-in), `max_threads`, `max_blocks`: the launch limits;
// `force_wide_index`: the 64-bit path even where 32 bits suffice (tests); `sm_count`: the
// device's multiprocessors (a batch that leaves half of them idle is split into bands; 0:
// never); `band_rows` > 0: bands of that many rows whatever the batch (tests).
template <typename scalar_t, typename acc_t>
PreparedSolve<scalar_t, acc_t> prepare_solve(const at::Tensor& y, const SolvePlan& plan,
                                             const at::Tensor& packed, at::Tensor& out,
                                             std::size_t shared_limit, int max_threads,
                                             int64_t max_blocks, bool force_wide_index,
                                             int sm_count, int64_t band_rows) {
  PreparedSolve<scalar_t, acc_t> s;
  const int64_t B = y.size(0), C = y.size(1), H = y.size(2), W = y.size(3);
  auto& p = s.params;
  int64_t off = 0;
  p.ys = canonical_view(y, plan, plan.reverse_channels, &off);  // canonical channels: M is lower-triangular
  p.y = y.const_data_ptr<scalar_t>() + off;
  p.os = canonical_view(out, plan, plan.reverse_channels, &off);
  p.out = out.mutable_data_ptr<scalar_t>() + off;
  p.packed = packed.const_data_ptr<acc_t>();
  p.B = B; p.C = C; p.H = H; p.W = W; p.kh = plan.kh; p.kw = plan.kw;
  const bool wide = force_wide_index ||
      !cuda_kernels::fits_32bit_index(cuda_kernels::view_extent(p.ys, B, C, H, W),
                                      cuda_kernels::view_extent(p.os, B, C, H, W), B, C, H, W,
                                      plan.kh, plan.kw);
  s.config = cuda_kernels::launch_config(B, C, H, W, plan.kh, plan.kw, sizeof(acc_t),
                                         shared_limit, max_threads, max_blocks, wide, sm_count,
                                         band_rows);
  p.scratch = nullptr;
  p.progress = nullptr;
  // the solved values (or z, with the ring; the bands' last rows) in acc_t, canonical channels-last
  const int64_t scratch = cuda_kernels::scratch_values(s.config, B, C, H, W, plan.kh);
  if (scratch > 0) {
    s.scratch = at::empty({scratch}, y.options().dtype(packed.scalar_type()));
#if defined(INVCONV_SIMT_EMULATION)
    s.scratch.fill_(std::numeric_limits<double>::quiet_NaN());  // a value read before written shows
#endif
    p.scratch = s.scratch.template mutable_data_ptr<acc_t>();
  }
  if (const int64_t flags = cuda_kernels::progress_values(s.config, B)) {
    s.progress = at::empty({flags}, y.options().dtype(at::kInt));  // zeroed by fold_taps_kernel
#if defined(INVCONV_SIMT_EMULATION)
    s.progress.fill_(-1);  // as a reused GPU buffer may hold: a flag left unzeroed shows
#endif
    p.progress = s.progress.template mutable_data_ptr<int>();
  }
  p.bands = s.config.bands;
  p.band_rows = s.config.band_rows;
  p.split = s.config.split;
  p.compute_threads = s.config.compute_threads;
  return s;
}

// One solve: the plan's two kernels, then the solve kernel, each run by
// launch(kernel, grid, block, shared_bytes, args...) -- `<<<...>>>` on the current stream in the
// CUDA glue, invconv_simt::launch in the emulation (both opt in to more than 48 KiB of shared
// memory when a launch asks for it) -- so both run the same launches in the same order.
template <typename scalar_t, typename Launch>
void run_solve(const at::Tensor& y, const at::Tensor& weight, Order order, bool transpose,
               at::Tensor& out, std::size_t shared_limit, int max_threads, int64_t max_blocks,
               bool force_wide_index, int sm_count, int64_t band_rows, Launch&& launch) {
  using acc_t = kernel_acc_t<scalar_t>;
  DevicePlan d = prepare_plan(weight, order, transpose, y.size(2), y.size(3),
                              std::is_same<acc_t, double>::value ? at::kDouble : at::kFloat);
  const scalar_t* w = weight.const_data_ptr<scalar_t>();
  PreparedSolve<scalar_t, acc_t> s = prepare_solve<scalar_t, acc_t>(
      y, d.plan, d.packed, out, shared_limit, max_threads, max_blocks, force_wide_index, sm_count,
      band_rows);
  launch(d.launch.inverse_shared_bytes ? &cuda_kernels::lower_inverse_kernel<scalar_t, true>
                                       : &cuda_kernels::lower_inverse_kernel<scalar_t, false>,
         dim3(d.launch.channel_blocks), dim3(d.launch.threads), d.launch.inverse_shared_bytes, w,
         d.params, d.linv.mutable_data_ptr<double>());
  launch(&cuda_kernels::fold_taps_kernel<scalar_t, acc_t>, dim3(d.launch.fold_blocks),
         dim3(d.launch.fold_threads), std::size_t{0}, w, d.params, d.linv.const_data_ptr<double>(),
         d.packed.mutable_data_ptr<acc_t>(), d.launch.packed_entries, s.params.progress,
         cuda_kernels::progress_values(s.config, y.size(0)));
  TORCH_CHECK(s.config.threads <= cuda_kernels::solve_launch_bound(s.config.image, s.config.wide_index),
              "invconv_core: internal error: ", s.config.threads, " threads past the solve kernel's "
              "launch bound ", cuda_kernels::solve_launch_bound(s.config.image, s.config.wide_index));
  launch(cuda_kernels::solve_kernel<scalar_t, acc_t>(s.config),
         dim3(static_cast<unsigned>(s.config.blocks)), dim3(static_cast<unsigned>(s.config.threads)),
         s.config.shared_bytes, s.params);
}

}  // namespace invconv_core
