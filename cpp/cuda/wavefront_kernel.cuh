// The CUDA kernel of invconv_core::inv_conv2d, in a header free of torch: raw pointers,
// element strides and sizes, templated on the stored and the accumulation scalar type.
//
// The same source is compiled twice:
//  * by nvcc, for the GPU (cuda/inv_conv2d_cuda.cu is the glue: dtype dispatch, device guard,
//    stream, launch);
//  * by the host compiler, after emulation/simt_emulation.h, which models the CUDA thread model
//    on the CPU (a std::thread per CUDA thread, a std::barrier per __syncthreads()), so the
//    kernel is checked against the dense oracle and under ThreadSanitizer on machines without
//    a GPU (docs/design.md §5).
//
// It solves the canonical problem of solve_plan.h: a top-left causal solve where pixel (i, j)
// of the (flipped) image is
//     x_p = M y_p - sum_{taps t != current} W'_t x_{p - t}         (W'_t = L^{-1} W_t, M = L^{-1})
// so, once the earlier anti-diagonals are solved, every (pixel, channel) pair of anti-diagonal
// d = i + j is independent. One thread block solves whole images: it stages the taps (and the
// image, while it fits) in shared memory and walks the H + W - 1 anti-diagonals with one
// __syncthreads() each, its threads spread over the (pixel, channel) pairs of the diagonal.
// One launch per solve; no host synchronisation.
#pragma once

#include <cstddef>
#include <cstdint>

#if !defined(__CUDACC__) && !defined(INVCONV_SIMT_EMULATION)
#error "wavefront_kernel.cuh: compile with nvcc, or include emulation/simt_emulation.h first"
#endif

#include "../plan_math.h"  // View4, imin/imax, INVCONV_HOST_DEVICE

namespace invconv_core {
namespace cuda_kernels {

// Threads per block at most (CUDA's limit: one image of B = 1 then gets up to 1024 (pixel,
// channel) pairs of a diagonal solved at once), and the kernel is compiled for it
// (__launch_bounds__), which caps it at 64 registers per thread. (With __launch_bounds__(256)
// alone ptxas of CUDA 13 spilled the float64 kernel for sm_80 at 48 registers; without bounds
// it unrolled to 140+ registers. test_cuda_compile.py checks spills.)
constexpr int kMaxThreads = 1024;
constexpr int kMinBlocksPerSM = 1;
// Dynamic shared memory a block may use without opting in to more (every GPU since sm_30).
constexpr std::size_t kDefaultSharedLimit = 48 * 1024;
// Blocks per launch at most; a block solves images b, b + gridDim.x, ... (any batch size).
constexpr std::int64_t kMaxBlocks = 65535;

template <typename scalar_t, typename acc_t>
struct SolveParams {
  const scalar_t* y;  // right-hand side, canonical (flipped) view `ys`
  View4 ys;
  scalar_t* out;      // result, canonical view `os` (channel axis reversed for the adjoint)
  View4 os;
  const acc_t* taps;  // [kh][kw][C'][C]: taps[a][b][c'][c] = (L^{-1} W_{a,b})[c][c']
  const acc_t* rhs;   // [C][C']: M = L^{-1}, lower-triangular (canonical channel order, as `ys`)
  acc_t* scratch;     // solved values in acc_t, view `ss`; unused when the image is in shared
  View4 ss;
  std::int64_t B, C, H, W, kh, kw;
  int taps_in_shared;   // stage taps and M in shared memory
  int image_in_shared;  // keep the solved image of the block in shared memory
};

struct LaunchConfig {
  std::int64_t blocks;
  int threads;
  std::size_t shared_bytes;
  bool taps_in_shared;
  bool image_in_shared;
};

// The launch of one solve: one block per image (at most max_blocks, each then solving several
// images in turn), as many threads as the widest anti-diagonal has (pixel, channel) pairs
// (a multiple of 32, at most max_threads), shared memory for the taps and then the image as
// far as `shared_limit` bytes allow. Used by the CUDA glue and the emulation alike.
inline LaunchConfig launch_config(std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W,
                                  std::int64_t kh, std::int64_t kw, std::size_t acc_size,
                                  std::size_t shared_limit = kDefaultSharedLimit,
                                  int max_threads = kMaxThreads,
                                  std::int64_t max_blocks = kMaxBlocks) {
  LaunchConfig cfg{};
  cfg.blocks = imax(1, imin(B, max_blocks));
  const std::int64_t widest = imin(H, W) * C;  // (pixel, channel) pairs of the widest diagonal
  const std::int64_t warps = (widest + 31) / 32;
  cfg.threads = static_cast<int>(imax(1, imin(warps * 32, max_threads)));
  const std::size_t taps_bytes = static_cast<std::size_t>((kh * kw + 1) * C * C) * acc_size;
  const std::size_t image_bytes = static_cast<std::size_t>(H * W * C) * acc_size;
  std::size_t used = 0;
  cfg.taps_in_shared = taps_bytes <= shared_limit;
  if (cfg.taps_in_shared) used += taps_bytes;
  cfg.image_in_shared = used + image_bytes <= shared_limit;
  if (cfg.image_in_shared) used += image_bytes;
  cfg.shared_bytes = used;
  return cfg;
}

#if defined(__CUDACC__)
__device__ inline unsigned char* dynamic_shared_bytes() {
  extern __shared__ __align__(16) unsigned char invconv_dynamic_shared[];
  return invconv_dynamic_shared;
}
#endif

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kMaxThreads, kMinBlocksPerSM)
    wavefront_solve_kernel(const SolveParams<scalar_t, acc_t> p) {
  acc_t* const shared = reinterpret_cast<acc_t*>(dynamic_shared_bytes());
  const std::int64_t C = p.C, H = p.H, W = p.W, kh = p.kh, kw = p.kw;
  const std::int64_t n_taps = kh * kw * C * C;
  const acc_t* taps = p.taps;
  const acc_t* rhs = p.rhs;
  acc_t* image = shared;  // the block's solved image, when it is kept in shared memory
  if (p.taps_in_shared) {
    for (std::int64_t k = threadIdx.x; k < n_taps; k += blockDim.x) shared[k] = p.taps[k];
    for (std::int64_t k = threadIdx.x; k < C * C; k += blockDim.x) shared[n_taps + k] = p.rhs[k];
    taps = shared;
    rhs = shared + n_taps;
    image = shared + n_taps + C * C;
  }
  // solved value (b, c, i, j): image[(i*W + j)*C + c] in shared memory, else scratch
  const View4 xv = p.image_in_shared ? View4{0, 1, W * C, C} : p.ss;
  acc_t* const xs = p.image_in_shared ? image : p.scratch;

  // Thread t starts at pair t = (pixel t / C, channel t % C) of a diagonal and steps
  // blockDim.x pairs at a time, carried by hand: no 64-bit division in the loop (a called
  // subroutine on the GPU, whose call would spill registers). 32-bit division suffices here:
  // a thread index and the block size are below 1024.
  const unsigned Cu = C > static_cast<std::int64_t>(blockDim.x) ? blockDim.x + 1u
                                                                 : static_cast<unsigned>(C);
  const std::int64_t first_pixel = threadIdx.x / Cu, first_channel = threadIdx.x % Cu;
  const std::int64_t step_pixels = blockDim.x / Cu, step_channels = blockDim.x % Cu;

  for (std::int64_t b = blockIdx.x; b < p.B; b += gridDim.x) {
    // Staged taps are visible to all (first image); the previous image is no longer read.
    __syncthreads();
    for (std::int64_t d = 0; d < H + W - 1; ++d) {
      const std::int64_t i_lo = imax(0, d - (W - 1));
      const std::int64_t pixels = imin(H - 1, d) - i_lo + 1;  // on diagonal d
      for (std::int64_t k = first_pixel, c = first_channel; k < pixels;
           k += step_pixels, c += step_channels) {
        if (c >= C) { c -= C; ++k; if (k >= pixels) break; }
        const std::int64_t i = i_lo + k, j = d - i;
        acc_t acc = acc_t(0);
        const scalar_t* yp = p.y + p.ys.at(b, 0, i, j);
        const acc_t* m = rhs + c * C;
        // M is lower-triangular: channel c reads channels <= c of y_p only (the zeros above the
        // diagonal would turn a NaN of a later channel into this one's)
        for (std::int64_t c2 = 0; c2 <= c; ++c2) acc += m[c2] * static_cast<acc_t>(yp[c2 * p.ys.sc]);
        // taps reaching above row 0 or left of column 0 read the zero padding: skipped
        for (std::int64_t a = imax(0, kh - 1 - i); a < kh; ++a) {
          const std::int64_t ii = i - (kh - 1 - a);
          const std::int64_t b_end = (a == kh - 1) ? kw - 1 : kw;  // not the current pixel
          for (std::int64_t bb = imax(0, kw - 1 - j); bb < b_end; ++bb) {
            const acc_t* t = taps + (a * kw + bb) * C * C + c;
            const acc_t* xn = xs + xv.at(b, 0, ii, j - (kw - 1 - bb));
            for (std::int64_t c2 = 0; c2 < C; ++c2) acc -= t[c2 * C] * xn[c2 * xv.sc];
          }
        }
        xs[xv.at(b, c, i, j)] = acc;
        p.out[p.os.at(b, c, i, j)] = static_cast<scalar_t>(acc);
      }
#ifndef INVCONV_PLANT_MISSING_DIAGONAL_BARRIER  // test-only: proves the race check can fail
      __syncthreads();  // diagonal d is solved before d + 1 reads it
#endif
    }
  }
}

}  // namespace cuda_kernels
}  // namespace invconv_core
