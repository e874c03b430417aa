// The numbers of the SolvePlan (solve_plan.h) formed on the device, torch-free like
// wavefront_kernel.cuh (compiled by nvcc, and by the host compiler under the SIMT emulation):
//
//   M = L^{-1}                (rhs_transform; its columns reversed for the adjoint)
//   taps_{a,b} = L^{-1} W_{a,b}
//
// for the canonical TL weight v of the plan (flips, the adjoint's transposition and the crop
// applied as an index map into the caller's weight), in float64 like the ATen plan of the CPU
// kernel. Two launches instead of the dozen small ATen ops (and no host round trip): the solve
// of a small batch costs tens of microseconds, so the plan's launches would otherwise dominate.
//
//  * lower_inverse_kernel: one thread per column j of L^{-1}, forward substitution down it
//    (a thread reads only what it wrote itself: no barrier);
//  * fold_taps_kernel: one thread per (tap row a, tap column b, output channel c), C dot
//    products of length c + 1 (L^{-1} is lower triangular).
// A zero on the diagonal of L gives inf/NaN entries, as in the ATen plan (the system is singular).
#pragma once

#include <cstdint>

#include "wavefront_kernel.cuh"

namespace invconv_core {
namespace cuda_kernels {

struct PlanParams {
  View4 ws;                   // element strides of the weight (out channel, in channel, row, column)
  std::int64_t C, KH, KW;     // the weight's size
  std::int64_t kh, kw;        // the cropped kernel of the plan
  int transpose;              // the adjoint: v[c][c'][a][b] = w[C-1-c'][C-1-c][KH-1-a][KW-1-b]
  int flip_rows, flip_cols;   // flips of the canonical frame (of the opposite order when transposed)
};

// Entry (c, c2, a, b) of the canonical TL weight, a < kh, b < kw: make_plan's transpose, flips
// and crop (solve_plan.cpp) as an index map.
template <typename scalar_t>
INVCONV_HOST_DEVICE inline double canonical_weight(const scalar_t* w, const PlanParams& g,
                                                   std::int64_t c, std::int64_t c2,
                                                   std::int64_t a, std::int64_t b) {
  std::int64_t row = g.KH - g.kh + a, col = g.KW - g.kw + b;  // the crop keeps the last rows/cols
  if (g.flip_rows) row = g.KH - 1 - row;
  if (g.flip_cols) col = g.KW - 1 - col;
  std::int64_t out = c, in = c2;
  if (g.transpose) {
    out = g.C - 1 - c2;
    in = g.C - 1 - c;
    row = g.KH - 1 - row;
    col = g.KW - 1 - col;
  }
  return static_cast<double>(w[g.ws.at(out, in, row, col)]);
}

// linv[i][j] (C x C, row-major, float64) = (L^{-1})[i][j], L = the current tap's lower triangle.
template <typename scalar_t>
__global__ void lower_inverse_kernel(const scalar_t* w, const PlanParams g, double* linv) {
  const std::int64_t C = g.C, a = g.kh - 1, b = g.kw - 1;
  for (std::int64_t j = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; j < C;
       j += static_cast<std::int64_t>(blockDim.x) * gridDim.x) {
    for (std::int64_t i = 0; i < j; ++i) linv[i * C + j] = 0.0;
    for (std::int64_t i = j; i < C; ++i) {
      double s = i == j ? 1.0 : 0.0;
      for (std::int64_t m = j; m < i; ++m) s -= canonical_weight(w, g, i, m, a, b) * linv[m * C + j];
      linv[i * C + j] = s / canonical_weight(w, g, i, i, a, b);
    }
  }
}

// taps[a][b][c2][c] = sum_m linv[c][m] v(m, c2, a, b) (the current tap's entries, never read
// by the solver, are 0) and rhs[c][c2] = linv[c][c2], or linv[c][C-1-c2] for the adjoint.
template <typename scalar_t, typename acc_t>
__global__ void fold_taps_kernel(const scalar_t* w, const PlanParams g, const double* linv,
                                 acc_t* taps, acc_t* rhs) {
  const std::int64_t C = g.C;
  for (std::int64_t a = blockIdx.z; a < g.kh; a += gridDim.z)
    for (std::int64_t b = blockIdx.y; b < g.kw; b += gridDim.y)
      for (std::int64_t c = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
           c < C; c += static_cast<std::int64_t>(blockDim.x) * gridDim.x) {
        const bool current = a == g.kh - 1 && b == g.kw - 1;
        const double* l = linv + c * C;
        acc_t* t = taps + (a * g.kw + b) * C * C + c;
        for (std::int64_t c2 = 0; c2 < C; ++c2) {
          double s = 0.0;
          if (!current)
            for (std::int64_t m = 0; m <= c; ++m) s += l[m] * canonical_weight(w, g, m, c2, a, b);
          t[c2 * C] = static_cast<acc_t>(s);
        }
        if (a == 0 && b == 0)
          for (std::int64_t c2 = 0; c2 < C; ++c2)
            rhs[c * C + c2] = static_cast<acc_t>(l[g.transpose ? C - 1 - c2 : c2]);
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
