// The numbers of the SolvePlan (solve_plan.h) formed on the device, torch-free like
// wavefront_kernel.cuh (compiled by nvcc, and by the host compiler under the SIMT emulation),
// from the element functions of ../plan_math.h that the CPU plan runs in loops. Two launches
// instead of a dozen small ATen ops (and no host round trip): the solve of a small batch costs
// tens of microseconds, so the plan's launches would otherwise dominate.
//
//  * lower_inverse_kernel: one thread per column j of L^{-1}, forward substitution down it
//    (a thread reads only what it wrote itself: no barrier);
//  * fold_taps_kernel: one thread per (tap row a, tap column b, output channel c), C dot
//    products of length c + 1 (L^{-1} is lower triangular).
#pragma once

#include <cstdint>

#include "../plan_math.h"
#include "wavefront_kernel.cuh"

namespace invconv_core {
namespace cuda_kernels {

// linv[i][j] (C x C, row-major, float64) = (L^{-1})[i][j]: one thread per column j.
template <typename scalar_t>
__global__ void lower_inverse_kernel(const scalar_t* w, const PlanParams g, double* linv) {
  for (std::int64_t j = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; j < g.C;
       j += static_cast<std::int64_t>(blockDim.x) * gridDim.x)
    lower_inverse_column(w, g, j, linv);
}

// taps = L^{-1} W_{a,b} and rhs (plan_math.h): one thread per (a, b, output channel c).
template <typename scalar_t, typename acc_t>
__global__ void fold_taps_kernel(const scalar_t* w, const PlanParams g, const double* linv,
                                 acc_t* taps, acc_t* rhs) {
  for (std::int64_t a = blockIdx.z; a < g.kh; a += gridDim.z)
    for (std::int64_t b = blockIdx.y; b < g.kw; b += gridDim.y)
      for (std::int64_t c = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
           c < g.C; c += static_cast<std::int64_t>(blockDim.x) * gridDim.x)
      {
        fold_tap_column(w, g, linv, a, b, c, taps);
        if (a == 0 && b == 0) rhs_row(g, linv, c, rhs);
      }
}

// Launch shapes: blocks of up to 128 threads over the channels; fold_taps_kernel adds grid
// dimensions over the tap columns (y) and rows (z), capped at CUDA's 65535 (the kernels loop).
struct PlanLaunch {
  unsigned channel_blocks, threads, tap_cols, tap_rows;
};

inline PlanLaunch plan_launch(std::int64_t C, std::int64_t kh, std::int64_t kw) {
  PlanLaunch l{};
  l.threads = static_cast<unsigned>(imin(128, (C + 31) / 32 * 32));
  l.channel_blocks = static_cast<unsigned>(imin(65535, (C + l.threads - 1) / l.threads));
  l.tap_cols = static_cast<unsigned>(imin(65535, kw));
  l.tap_rows = static_cast<unsigned>(imin(65535, kh));
  return l;
}

}  // namespace cuda_kernels
}  // namespace invconv_core
