// The numbers of the SolvePlan (solve_plan.h) formed on the device, torch-free like
// wavefront_kernel.cuh (compiled by nvcc, and by the host compiler under the SIMT emulation),
// from the element functions of ../plan_math.h that the CPU plan runs in loops. Two launches
// instead of a dozen small ATen ops (and no host round trip): the solve of a small batch costs
// tens of microseconds, so the plan's launches would otherwise dominate.
//
//  * lower_inverse_kernel: L^{-1} by forward substitution, every column at once in one block:
//    C + 1 barriers deep instead of a C^2/2-long dependent chain per column (its former form);
//  * fold_taps_kernel: one thread per entry of the packed taps and M (plan_math.h's layout for
//    the solve kernel), a dot product of length <= C each: the fold is spread over its
//    (kh kw + 1) G K C output entries, no thread runs a C x C chain. It also zeroes the banded
//    solve's progress flags (a launch fewer per small-batch solve).
#pragma once

#include <cstdint>

#include "../plan_math.h"
#include "wavefront_kernel.cuh"

namespace invconv_core {
namespace cuda_kernels {

// linv[i][j] (C x C, row-major, float64) = (L^{-1})[i][j], one block, one barrier per step.
// Step k eliminates row k from the rows below, s_ij -= L_ik (s_kj / L_kk) for i > k, j <= k (the
// (C - 1 - k)(k + 1) updates spread over the threads), and stores row k - 1 divided by its
// diagonal (x_{k-1,j} = s_{k-1,j} / L_{k-1,k-1}: no thread reads row k - 1 in step k). Every
// entry sees lower_inverse_column's operations (plan_math.h, the CPU plan's) in the same order --
// s = delta_ij, minus L_im x_mj for m = j .. i - 1, divided by L_ii; the quotient recomputed by
// each thread is the same IEEE division -- so the result is the CPU plan's to the bit. Depth:
// C steps of one division, one FMA and one barrier, instead of a column's C^2 / 2 dependent
// FMAs in one thread (the division chain is what the same-bits rule cannot shorten: a blocked
// inverse of O(log C) depth would sum in another order). The work array is shared memory when
// the C x C doubles fit (kShared), else linv itself (__syncthreads() orders a block's global
// memory accesses as well).
template <typename scalar_t, bool kShared>
__global__ void lower_inverse_kernel(const scalar_t* w, const PlanParams g, double* linv) {
  const std::int64_t C = g.C, a = g.kh - 1, b = g.kw - 1;
  double* const s = kShared ? reinterpret_cast<double*>(dynamic_shared_bytes()) : linv;
  for (std::int64_t e = threadIdx.x; e < C * C; e += blockDim.x) s[e] = e / C == e % C ? 1.0 : 0.0;
  __syncthreads();
  for (std::int64_t k = 0; k <= C; ++k) {
    const std::int64_t width = k + 1, updates = k < C ? (C - 1 - k) * width : 0;
    const double diagonal = k < C ? canonical_weight(w, g, k, k, a, b) : 0.0;
    for (std::int64_t e = threadIdx.x; e < updates + k; e += blockDim.x) {
      if (e < updates) {
        const std::int64_t i = k + 1 + e / width, j = e % width;
        s[i * C + j] -= canonical_weight(w, g, i, k, a, b) * (s[k * C + j] / diagonal);
      } else {  // row k - 1 is final: store its x
        const std::int64_t j = e - updates;
        s[(k - 1) * C + j] /= canonical_weight(w, g, k - 1, k - 1, a, b);
      }
    }
    __syncthreads();
  }
  if (kShared)
    for (std::int64_t e = threadIdx.x; e < C * C; e += blockDim.x) linv[e] = s[e];
}

// The packed taps and M (plan_math.h: packed_entry): one thread per entry.
template <typename scalar_t, typename acc_t>
__global__ void fold_taps_kernel(const scalar_t* w, const PlanParams g, const double* linv,
                                 acc_t* packed, std::int64_t n, int* clear, std::int64_t n_clear) {
  const std::int64_t first = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const std::int64_t step = static_cast<std::int64_t>(blockDim.x) * gridDim.x;
  for (std::int64_t e = first; e < n; e += step) packed[e] = static_cast<acc_t>(packed_entry(w, g, linv, e));
  // the solve's progress flags and ticket counter (kImageBand), zeroed here: no launch of its own
  for (std::int64_t e = first; e < n_clear; e += step) clear[e] = 0;
}

// Launch shapes: lower_inverse_kernel, one block with a thread per update of its widest step
// (C^2 / 4, a multiple of 32, at most 1024), its work array in shared memory up to the 48 KiB
// every device gives without an opt-in (C <= 78); fold_taps_kernel, blocks of 256 over the
// packed entries, grids capped at CUDA's 65535 (the kernels loop).
struct PlanLaunch {
  unsigned channel_blocks, threads, fold_blocks, fold_threads;
  std::size_t inverse_shared_bytes;  // 0: lower_inverse_kernel<scalar_t, false>
  std::int64_t packed_entries;
};

inline PlanLaunch plan_launch(std::int64_t C, std::int64_t kh, std::int64_t kw) {
  PlanLaunch l{};
  const std::int64_t widest = imax(C, (C * C + 3) / 4);
  l.threads = static_cast<unsigned>(imin(1024, (widest + 31) / 32 * 32));
  l.channel_blocks = 1;
  const std::size_t bytes = static_cast<std::size_t>(C * C) * sizeof(double);
  l.inverse_shared_bytes = bytes <= kDefaultSharedLimit ? bytes : 0;
  l.packed_entries = packed_size(C, kh, kw);
  l.fold_threads = 256;
  l.fold_blocks = static_cast<unsigned>(imax(1, imin(65535, (l.packed_entries + 255) / 256)));
  return l;
}

}  // namespace cuda_kernels
}  // namespace invconv_core
