// The numbers of the SolvePlan (solve_plan.h) formed on the device, torch-free like
// wavefront_kernel.cuh (compiled by nvcc, and by the host compiler under the SIMT emulation),
// from the element functions of ../plan_math.h that the CPU plan runs in loops. Two launches
// instead of a dozen small ATen ops (and no host round trip): the solve of a small batch costs
// tens of microseconds, so the plan's launches would otherwise dominate.
//
//  * lower_inverse_kernel: one thread per column j of L^{-1}, forward substitution down it
//    (a thread reads only what it wrote itself: no barrier);
//  * fold_taps_kernel: one thread per entry of the packed taps and M (plan_math.h's layout for
//    the solve kernel), a dot product of length <= C each: the fold is spread over its
//    (kh kw + 1) G K C output entries, no thread runs a C x C chain.
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

// The packed taps and M (plan_math.h: packed_entry): one thread per entry.
template <typename scalar_t, typename acc_t>
__global__ void fold_taps_kernel(const scalar_t* w, const PlanParams g, const double* linv,
                                 acc_t* packed, std::int64_t n) {
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<std::int64_t>(blockDim.x) * gridDim.x)
    packed[e] = static_cast<acc_t>(packed_entry(w, g, linv, e));
}

// Launch shapes: lower_inverse_kernel, blocks of up to 128 threads over the channels;
// fold_taps_kernel, blocks of 256 over the packed entries; grids capped at CUDA's 65535 (the
// kernels loop).
struct PlanLaunch {
  unsigned channel_blocks, threads, fold_blocks, fold_threads;
  std::int64_t packed_entries;
};

inline PlanLaunch plan_launch(std::int64_t C, std::int64_t kh, std::int64_t kw) {
  PlanLaunch l{};
  l.threads = static_cast<unsigned>(imin(128, (C + 31) / 32 * 32));
  l.channel_blocks = static_cast<unsigned>(imin(65535, (C + l.threads - 1) / l.threads));
  l.packed_entries = packed_size(C, kh, kw);
  l.fold_threads = 256;
  l.fold_blocks = static_cast<unsigned>(imax(1, imin(65535, (l.packed_entries + 255) / 256)));
  return l;
}

}  // namespace cuda_kernels
}  // namespace invconv_core
