// The numbers of the SolvePlan (solve_plan.h), element by element, torch-free and usable on the
// host and in CUDA device code: the CPU plan (solve_plan.cpp) runs these functions in plain
// loops, the CUDA plan kernels (cuda/plan_kernels.cuh) one column or tap per thread -- one
// definition of the plan's arithmetic for every backend.
//
//   M = L^{-1}                (rhs_transform; lower-triangular, canonical channel order)
//   taps_{a,b} = L^{-1} W_{a,b}
//
// for the canonical TL weight v of the plan: make_plan's transpose, flips and crop applied as an
// index map into the caller's weight, in float64.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define INVCONV_HOST_DEVICE __host__ __device__
#else
#define INVCONV_HOST_DEVICE
#endif

namespace invconv_core {
namespace cuda_kernels {

INVCONV_HOST_DEVICE inline std::int64_t imin(std::int64_t a, std::int64_t b) { return a < b ? a : b; }
INVCONV_HOST_DEVICE inline std::int64_t imax(std::int64_t a, std::int64_t b) { return a > b ? a : b; }

// Element strides of a 4-D (image, channel, row, column) view: element (b, c, i, j) is
// ptr[b*sb + c*sc + i*sh + j*sw]. Flips are a moved base pointer and a negated stride.
struct View4 {
  std::int64_t sb, sc, sh, sw;
  INVCONV_HOST_DEVICE std::int64_t at(std::int64_t b, std::int64_t c, std::int64_t i,
                                      std::int64_t j) const {
    return b * sb + c * sc + i * sh + j * sw;
  }
};

struct PlanParams {
  View4 ws;                   // element strides of the weight (out channel, in channel, row, column)
  std::int64_t C, KH, KW;     // the weight's size
  std::int64_t kh, kw;        // the cropped kernel of the plan
  int transpose;              // the adjoint: v[c][c'][a][b] = w[C-1-c'][C-1-c][KH-1-a][KW-1-b]
  int flip_rows, flip_cols;   // flips of the canonical frame (of the opposite order when transposed)
};

// Element offset in the caller's weight of entry (c, c2, a, b) of the canonical TL weight,
// a < kh, b < kw: make_plan's transpose, flips and crop (solve_plan.cpp) as an index map. It is
// affine in (c, c2, a, b), so a loop may also walk it with the differences of its values.
INVCONV_HOST_DEVICE inline std::int64_t canonical_offset(const PlanParams& g, std::int64_t c,
                                                         std::int64_t c2, std::int64_t a,
                                                         std::int64_t b) {
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
  return g.ws.at(out, in, row, col);
}

// Entry (c, c2, a, b) of the canonical TL weight, in float64.
template <typename scalar_t>
INVCONV_HOST_DEVICE inline double canonical_weight(const scalar_t* w, const PlanParams& g,
                                                   std::int64_t c, std::int64_t c2,
                                                   std::int64_t a, std::int64_t b) {
  return static_cast<double>(w[canonical_offset(g, c, c2, a, b)]);
}

// Column j of linv = L^{-1} (C x C, row-major, float64), L = the current tap's lower triangle,
// by forward substitution; reads only column j of linv. A zero on L's diagonal gives inf/NaN
// (the system is singular).
template <typename scalar_t>
INVCONV_HOST_DEVICE inline void lower_inverse_column(const scalar_t* w, const PlanParams& g,
                                                     std::int64_t j, double* linv) {
  const std::int64_t C = g.C, a = g.kh - 1, b = g.kw - 1;
  for (std::int64_t i = 0; i < j; ++i) linv[i * C + j] = 0.0;
  for (std::int64_t i = j; i < C; ++i) {
    double s = i == j ? 1.0 : 0.0;
    for (std::int64_t m = j; m < i; ++m) s -= canonical_weight(w, g, i, m, a, b) * linv[m * C + j];
    linv[i * C + j] = s / canonical_weight(w, g, i, i, a, b);
  }
}

// Entry (c2, c) of tap (a, b) of the folded taps, (L^{-1} v_{a,b})[c][c2] =
// sum_{m <= c} linv[c][m] v(m, c2, a, b) (0 for the current tap, which the solvers never read).
template <typename scalar_t>
INVCONV_HOST_DEVICE inline double fold_tap_entry(const scalar_t* w, const PlanParams& g,
                                                 const double* linv, std::int64_t a,
                                                 std::int64_t b, std::int64_t c, std::int64_t c2) {
  if (a == g.kh - 1 && b == g.kw - 1) return 0.0;
  const double* l = linv + c * g.C;
  double s = 0.0;
  for (std::int64_t m = 0; m <= c; ++m) s += l[m] * canonical_weight(w, g, m, c2, a, b);
  return s;
}

// Output channel c of tap (a, b), the CPU plan's layout: taps[a][b][c2][c] for every c2.
template <typename scalar_t, typename acc_t>
INVCONV_HOST_DEVICE inline void fold_tap_column(const scalar_t* w, const PlanParams& g,
                                                const double* linv, std::int64_t a, std::int64_t b,
                                                std::int64_t c, acc_t* taps) {
  const std::int64_t C = g.C;
  acc_t* t = taps + (a * g.kw + b) * C * C + c;
  for (std::int64_t c2 = 0; c2 < C; ++c2)
    t[c2 * C] = static_cast<acc_t>(fold_tap_entry(w, g, linv, a, b, c, c2));
}

// The CUDA solve kernel's layout of the taps and M ("packed"): block t = a * kw + b holds tap
// (a, b), block kh * kw holds M, and entry (c2, c) of a block -- the weight of input channel c2 in
// output channel c, (L^{-1} v_{a,b})[c][c2] or M[c][c2] -- is at
//     ((t * G + c / K) * C + c2) * K + c % K,      K = kChannelsPerThread, G = ceil(C / K),
// zero for the padding channels C <= c < G * K. A thread of the kernel solves the K channels of
// one group of a pixel: their K weights of one input channel are one vector load, and those of
// consecutive input channels are consecutive vectors (offsets known at compile time).
constexpr int kChannelsPerThread = 4;

INVCONV_HOST_DEVICE inline std::int64_t channel_groups(std::int64_t C) {
  return (C + kChannelsPerThread - 1) / kChannelsPerThread;
}

INVCONV_HOST_DEVICE inline std::int64_t packed_size(std::int64_t C, std::int64_t kh, std::int64_t kw) {
  return (kh * kw + 1) * channel_groups(C) * C * kChannelsPerThread;
}

// Where entry (c2, c) of block t (tap t = a * kw + b, or M at t = kh * kw) is in the packed
// layout; packed_entry below is its inverse.
INVCONV_HOST_DEVICE inline std::int64_t packed_offset(std::int64_t t, std::int64_t c2,
                                                      std::int64_t c, std::int64_t C) {
  const std::int64_t K = kChannelsPerThread;
  return ((t * channel_groups(C) + c / K) * C + c2) * K + c % K;
}

// Packed entry e (0 <= e < packed_size): the folded tap, M's entry, or a padding zero.
template <typename scalar_t>
INVCONV_HOST_DEVICE inline double packed_entry(const scalar_t* w, const PlanParams& g,
                                               const double* linv, std::int64_t e) {
  const std::int64_t C = g.C, K = kChannelsPerThread, G = channel_groups(C);
  const std::int64_t lane = e % K, c2 = (e / K) % C, group = (e / (K * C)) % G;
  const std::int64_t t = e / (K * C * G), c = group * K + lane;
  if (c >= C) return 0.0;
  if (t == g.kh * g.kw) return c2 <= c ? linv[c * C + c2] : 0.0;  // M, lower-triangular
  return fold_tap_entry(w, g, linv, t / g.kw, t % g.kw, c, c2);
}

// Row c of M: rhs[c][c2] = linv[c][c2], lower-triangular in the canonical channel order (the
// solvers read the adjoint's right-hand side through a channel-reversed view, so that channel c
// of a pixel reads channels c2 <= c of it and nothing else: a NaN in channel 1 of y_p stays out
// of channel 0 of x_p, as in exact substitution).
template <typename acc_t>
INVCONV_HOST_DEVICE inline void rhs_row(const PlanParams& g, const double* linv, std::int64_t c,
                                        acc_t* rhs) {
  const std::int64_t C = g.C;
  for (std::int64_t c2 = 0; c2 < C; ++c2) rhs[c * C + c2] = static_cast<acc_t>(linv[c * C + c2]);
}

}  // namespace cuda_kernels
}  // namespace invconv_core
