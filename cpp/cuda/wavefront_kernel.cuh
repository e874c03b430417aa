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
// __syncthreads() each, its threads spread over the (pixel, channel group) pairs of the
// diagonal, K = kChannelsPerThread channels a thread. One launch per solve; no host
// synchronisation. Its machine code is profiled, without a GPU, by verification/sass_profile.py
// (test_sass_profile.py: LDS/LDG only, 32-bit offsets and >= 30 % FMA in the dot product).
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#if !defined(__CUDACC__) && !defined(INVCONV_SIMT_EMULATION)
#error "wavefront_kernel.cuh: compile with nvcc, or include emulation/simt_emulation.h first"
#endif

#include "../plan_math.h"  // View4, imin/imax, INVCONV_HOST_DEVICE

namespace invconv_core {
namespace cuda_kernels {

// Threads per block at most (CUDA's limit: one image of B = 1 then gets up to 1024 (pixel,
// channel group) pairs of a diagonal solved at once), and the kernel is compiled for it
// (__launch_bounds__), which caps it at 64 registers per thread. (With __launch_bounds__(256)
// alone ptxas of CUDA 13 spilled the float64 kernel for sm_80 at 48 registers; without bounds
// it unrolled to 140+ registers. test_cuda_compile.py checks spills.)
constexpr int kMaxThreads = 1024;
constexpr int kMinBlocksPerSM = 1;
// The 64-bit-index kernels (images beyond 2^31 values: wide diagonals) at most 512, so 128
// registers: their 64-bit offsets spilled the float64 kernel at 64.
constexpr int kMaxThreadsWide = 512;
// Dynamic shared memory a block may use without opting in to more (every GPU since sm_30);
// the CUDA glue raises the limit to the device's opt-in maximum (227 KiB on sm_90).
constexpr std::size_t kDefaultSharedLimit = 48 * 1024;
// Blocks per launch at most; a block solves images b, b + gridDim.x, ... (any batch size).
constexpr std::int64_t kMaxBlocks = 65535;

// Where a block keeps the values it solves:
//  * kImageShared: the whole image in shared memory;
//  * kImageRing: the last kh + kw - 1 anti-diagonals in shared memory (a ring of them, each
//    slot H rows of C values: all a diagonal's taps read), z = M y and nothing else in the
//    global scratch, each solved value written to the output at once -- for images too large
//    for shared memory (B = 1, 4 x 256^2: a 20 KB ring instead of a 1 MB image);
//  * kImageGlobal: the whole image in the global scratch (neither fits).
constexpr int kImageGlobal = 0;
constexpr int kImageShared = 1;
constexpr int kImageRing = 2;

template <typename scalar_t, typename acc_t>
struct SolveParams {
  const scalar_t* y;     // right-hand side, canonical (flipped) view `ys`
  View4 ys;
  scalar_t* out;         // result, canonical view `os` (channel axis reversed for the adjoint)
  View4 os;
  const acc_t* packed;   // the taps and M in plan_math.h's packed layout (packed_size entries)
  acc_t* scratch;        // [B][H][W][C]: the solved images (kImageGlobal) or z (kImageRing)
  std::int64_t B, C, H, W, kh, kw;
};

struct LaunchConfig {
  std::int64_t blocks;
  int threads;
  std::size_t shared_bytes;
  bool taps_in_shared;   // the packed taps and M staged in shared memory
  int image;             // where the solved image lives: kImageGlobal, kImageShared, kImageRing
  bool wide_index;       // 64-bit offsets (some offset of the launch does not fit 32 bits)
};

// The largest element offset of a view of a (B, C, H, W) tensor, |strides| summed.
inline std::int64_t view_extent(const View4& v, std::int64_t B, std::int64_t C, std::int64_t H,
                                std::int64_t W) {
  auto ext = [](std::int64_t n, std::int64_t s) { return (n > 0 ? n - 1 : 0) * (s < 0 ? -s : s); };
  return ext(B, v.sb) + ext(C, v.sc) + ext(H, v.sh) + ext(W, v.sw);
}

// Whether every offset the kernel forms fits a 32-bit index: those of y and out (their views'
// extents), of the scratch images and of the packed taps.
inline bool fits_32bit_index(std::int64_t y_extent, std::int64_t out_extent, std::int64_t B,
                             std::int64_t C, std::int64_t H, std::int64_t W, std::int64_t kh,
                             std::int64_t kw) {
  constexpr std::int64_t lim = 0x7fffffff;
  return y_extent < lim && out_extent < lim && B * H * W * C < lim && packed_size(C, kh, kw) < lim &&
         H + W < lim;
}

// The launch of one solve: one block per image (at most max_blocks, each then solving several
// images in turn), as many threads as the widest anti-diagonal has (pixel, channel group) pairs
// (a multiple of 32, at most max_threads), shared memory for the packed taps and then the image
// -- or else the ring of its last anti-diagonals -- as far as `shared_limit` bytes allow (the
// whole image never on the 64-bit path: an image that needs 64-bit offsets is far beyond any
// shared memory). Used by the CUDA glue and the emulation alike.
inline LaunchConfig launch_config(std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W,
                                  std::int64_t kh, std::int64_t kw, std::size_t acc_size,
                                  std::size_t shared_limit = kDefaultSharedLimit,
                                  int max_threads = kMaxThreads,
                                  std::int64_t max_blocks = kMaxBlocks, bool wide_index = false) {
  LaunchConfig cfg{};
  cfg.blocks = imax(1, imin(B, max_blocks));
  const std::int64_t widest = imin(H, W) * channel_groups(C);  // pairs of the widest diagonal
  const std::int64_t warps = (widest + 31) / 32;
  if (wide_index && max_threads > kMaxThreadsWide) max_threads = kMaxThreadsWide;
  cfg.threads = static_cast<int>(imax(1, imin(warps * 32, max_threads)));
  const std::size_t taps_bytes = static_cast<std::size_t>(packed_size(C, kh, kw)) * acc_size;
  const std::size_t image_bytes = static_cast<std::size_t>(H * W * C) * acc_size;
#if defined(INVCONV_PLANT_SHORT_RING)  // test-only: the ring one anti-diagonal short (ASan test)
  const std::size_t ring_bytes = static_cast<std::size_t>((kh + kw - 2) * H * C) * acc_size;
#else
  const std::size_t ring_bytes = static_cast<std::size_t>((kh + kw - 1) * H * C) * acc_size;
#endif
  std::size_t used = 0;
  cfg.wide_index = wide_index;
  cfg.taps_in_shared = taps_bytes <= shared_limit;
  if (cfg.taps_in_shared) used += taps_bytes;
  if (!wide_index && used + image_bytes <= shared_limit) {
    cfg.image = kImageShared;
    used += image_bytes;
  } else if (ring_bytes < image_bytes && used + ring_bytes <= shared_limit) {
    cfg.image = kImageRing;
    used += ring_bytes;
  } else {
    cfg.image = kImageGlobal;
  }
  cfg.shared_bytes = used;
  return cfg;
}

#if defined(__CUDACC__)
__device__ inline unsigned char* dynamic_shared_bytes() {
  extern __shared__ __align__(16) unsigned char invconv_dynamic_shared[];
  return invconv_dynamic_shared;
}
#endif

// The K = kChannelsPerThread weights of one input channel for a thread's K output channels:
// one 16-byte vector load (float) or two (double); their address is 16-byte aligned (packed
// offsets are multiples of K, the buffers' bases 16-byte aligned).
template <typename acc_t>
struct Lanes {
  acc_t v[kChannelsPerThread];
};

template <typename acc_t>
__device__ __forceinline__ Lanes<acc_t> load_lanes(const acc_t* p) {
  static_assert(kChannelsPerThread == 4, "load_lanes reads 4 values");
#if defined(__CUDACC__)
  if constexpr (sizeof(acc_t) == 4) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    return Lanes<acc_t>{{v.x, v.y, v.z, v.w}};
  } else {
    const double2 lo = reinterpret_cast<const double2*>(p)[0];
    const double2 hi = reinterpret_cast<const double2*>(p)[1];
    return Lanes<acc_t>{{lo.x, lo.y, hi.x, hi.y}};
  }
#else
  invconv_simt::require_aligned(p, 16, "wavefront_solve_kernel: load_lanes of the packed taps / M");
  return Lanes<acc_t>{{p[0], p[1], p[2], p[3]}};
#endif
}

// Test-only compile switches of the SASS profile's planted counter-examples
// (verification/test_sass_profile.py), each restoring one defect the profile guards against:
// INVCONV_PLANT_RUNTIME_POINTER_CHOICE (shared or global chosen at run time: generic loads),
// INVCONV_PLANT_64BIT_INDEX (64-bit offsets and counters on every path),
// INVCONV_PLANT_ONE_FMA_PER_LOAD (the dot product a channel at a time: two loads per FMA).
#if defined(INVCONV_PLANT_RUNTIME_POINTER_CHOICE)
#define INVCONV_SHARED_CHOICE(in_shared) ((in_shared) ? (p.B >= 0) : (p.B < 0))  // run-time
#else
#define INVCONV_SHARED_CHOICE(in_shared) (in_shared)
#endif

// The solve of one launch. Template parameters: where the packed taps and the image live
// (shared or global memory, kImage*: separate code, so the compiler emits LDS / LDG, never
// generic loads) and the index type (int32 whenever fits_32bit_index; int64 otherwise).
//
// Per image: (1) z = M y at every pixel, into the image (the global scratch with the ring) --
// independent pixels, all threads, so the right-hand side's global loads never wait on the
// wavefront; (2) the H + W - 1 anti-diagonals, one __syncthreads() each, each thread solving
// the K channels of a (pixel, channel group) pair: x = z - (sum over the taps of T x_{neighbour}),
// where each neighbour value feeds K FMAs and the K weights are one vector load (z is read
// last: no FMA waits on it); (3) the solved image to the output, threads along rows (the ring
// wrote it in (2)). Channel c reads only the right-hand side channels c2 <= c of its own pixel
// (M is lower-triangular: a NaN of a later channel stays out of it).
template <typename scalar_t, typename acc_t, bool kTapsShared, int kImage, typename index_t>
__global__ void __launch_bounds__(sizeof(index_t) == 8 ? kMaxThreadsWide : kMaxThreads, kMinBlocksPerSM)
    wavefront_solve_kernel(const SolveParams<scalar_t, acc_t> p) {
#if defined(INVCONV_PLANT_64BIT_INDEX)
  using I = std::int64_t;
  using J = std::int64_t;  // the channel and tap counters too
#else
  using I = index_t;
  using J = int;
#endif
  constexpr int K = kChannelsPerThread;
  // Input channels per step of the dot product: 8 in float32 (32 FMAs), 4 in float64 (more
  // spilled at 64 registers); unused by the emulation's host compiler, which ignores the pragma.
  // The channel, tap row and tap column counters are int on every path: C, kh, kw fit (a weight
  // of C >= 2^31 channels has C^2 entries); only offsets into images and the packed taps need
  // 64 bits.
  [[maybe_unused]] constexpr int kUnroll = sizeof(acc_t) == 4 ? 8 : 4;
  const J Ci = static_cast<J>(p.C), khi = static_cast<J>(p.kh), kwi = static_cast<J>(p.kw);
  const I C = static_cast<I>(p.C), H = static_cast<I>(p.H), W = static_cast<I>(p.W);
  const I kh = static_cast<I>(p.kh), kw = static_cast<I>(p.kw);
  const I G = (C + K - 1) / K, tap_len = G * C * K, n_packed = (kh * kw + 1) * tap_len;
  acc_t* const shared = reinterpret_cast<acc_t*>(dynamic_shared_bytes());
  if (kTapsShared)
    for (I e = threadIdx.x; e < n_packed; e += blockDim.x) shared[e] = p.packed[e];
  const acc_t* const packed = INVCONV_SHARED_CHOICE(kTapsShared) ? shared : p.packed;
  const acc_t* const m_packed = packed + kh * kw * tap_len;

  // Thread t starts at pair t = (pixel t / G, group t % G) of a diagonal and steps blockDim.x
  // pairs at a time, carried by hand (no division in the loop: a 64-bit one is a called
  // subroutine on the GPU); likewise pixel t = (row t / W, column t % W) of the image passes.
  // 32-bit division suffices: a thread index and the block size are below 1024.
  const unsigned Gu = G > static_cast<I>(blockDim.x) ? blockDim.x + 1u : static_cast<unsigned>(G);
  const unsigned first_pixel = threadIdx.x / Gu, first_group = threadIdx.x % Gu;
  const unsigned step_pixels = blockDim.x / Gu, step_groups = blockDim.x % Gu;
  const unsigned Wu = W > static_cast<I>(blockDim.x) ? blockDim.x + 1u : static_cast<unsigned>(W);
  const unsigned first_i = threadIdx.x / Wu, first_j = threadIdx.x % Wu;
  const unsigned step_i = blockDim.x / Wu, step_j = blockDim.x % Wu;

  for (I b = blockIdx.x; b < static_cast<I>(p.B); b += gridDim.x) {
    constexpr bool kRing = kImage == kImageRing;
    // the image (kImageShared, kImageGlobal) or z (kImageRing) at xs; the ring after the taps
    acc_t* const on_chip = shared + (kTapsShared ? n_packed : 0);
    acc_t* const xs = INVCONV_SHARED_CHOICE(kImage == kImageShared) ? on_chip
                                                                    : p.scratch + b * (H * W * C);
    acc_t* const ring = on_chip;
    const I R = kh + kw - 1;  // ring slots: diagonals d - (R - 1) .. d
    // staged taps visible (first image); the previous image is written out
    __syncthreads();

    // (1) z = M y, group by group (the strides read where used: fewer live registers)
    const scalar_t* const yb = p.y + b * static_cast<I>(p.ys.sb);
    const I ysc = static_cast<I>(p.ys.sc), ysh = static_cast<I>(p.ys.sh), ysw = static_cast<I>(p.ys.sw);
    for (I g = 0; g < G; ++g) {
      const I c0 = g * K, c_end = C < c0 + K ? C : c0 + K;
      const acc_t* const mg = m_packed + g * (C * K);
      for (I i = first_i, j = first_j; i < H; i += step_i, j += step_j) {
        if (j >= W) { j -= W; ++i; if (i >= H) break; }
        const scalar_t* const yp = yb + i * ysh + j * ysw;
        acc_t z[K];
#pragma unroll
        for (int k = 0; k < K; ++k) z[k] = acc_t(0);
        for (I c2 = 0; c2 < c_end; ++c2) {
          const acc_t yv = static_cast<acc_t>(yp[c2 * ysc]);
          const Lanes<acc_t> m = load_lanes(mg + c2 * K);
#pragma unroll
          for (int k = 0; k < K; ++k)
            if (c2 <= c0 + k) z[k] += m.v[k] * yv;
        }
        acc_t* const xp = xs + (i * W + j) * C + c0;
#pragma unroll
        for (int k = 0; k < K; ++k)
          if (c0 + k < C) xp[k] = z[k];
      }
    }
    __syncthreads();  // every z written before a pixel reads it

    // (2) the anti-diagonals
    scalar_t* const ob = p.out + b * static_cast<I>(p.os.sb);
    const I osc = static_cast<I>(p.os.sc), osh = static_cast<I>(p.os.sh), osw = static_cast<I>(p.os.sw);
    I slot = 0;  // d % R, carried
    for (I d = 0; d < H + W - 1; ++d, slot = slot + 1 == R ? 0 : slot + 1) {
      const I i_lo = d - (W - 1) > 0 ? d - (W - 1) : 0;
      const I pixels = (H - 1 < d ? H - 1 : d) - i_lo + 1;
      for (I k = first_pixel, g = first_group; k < pixels; k += step_pixels, g += step_groups) {
        if (g >= G) { g -= G; ++k; if (k >= pixels) break; }
        const I i = i_lo + k, j = d - i, c0 = g * K;
        acc_t* const xp = xs + (i * W + j) * C + c0;  // z, and (not kRing) the solution
        // the neighbours' sum first, z - sum last: no FMA waits for the load of z
        acc_t acc[K];
#pragma unroll
        for (int l = 0; l < K; ++l) acc[l] = acc_t(0);
        // taps reaching above row 0 or left of column 0 read the zero padding: skipped
        for (J a = kh - 1 - i > 0 ? static_cast<J>(kh - 1 - i) : 0; a < khi; ++a) {
          const I ii = i - (khi - 1 - a);
          const J b_end = (a == khi - 1) ? kwi - 1 : kwi;  // not the current pixel
          for (J bb = kw - 1 - j > 0 ? static_cast<J>(kw - 1 - j) : 0; bb < b_end; ++bb) {
            const acc_t* const t = packed + ((a * kw + bb) * G + g) * (C * K);
            const acc_t* xn;
            if (kRing) {  // the neighbour's diagonal d - back, back in [1, R - 1]
              const I back = (khi - 1 - a) + (kwi - 1 - bb);
              xn = ring + ((slot >= back ? slot - back : slot - back + R) * H + ii) * C;
            } else {
              xn = xs + (ii * W + j - (kw - 1 - bb)) * C;
            }
#if defined(INVCONV_PLANT_ONE_FMA_PER_LOAD)  // test-only: a channel at a time, not unrolled
            for (int l = 0; l < K; ++l)
#pragma unroll 1
              for (J c2 = 0; c2 < Ci; ++c2) acc[l] += t[c2 * K + l] * xn[c2];
#else
#pragma unroll kUnroll
            for (J c2 = 0; c2 < Ci; ++c2) {
              const acc_t xv = xn[c2];
              const Lanes<acc_t> tv = load_lanes(t + c2 * K);
#pragma unroll
              for (int l = 0; l < K; ++l) acc[l] += tv.v[l] * xv;
            }
#endif
          }
        }
        if (kRing) {  // into the ring, and to the output at once
          acc_t* const rp = ring + (slot * H + i) * C + c0;
#pragma unroll
          for (int l = 0; l < K; ++l)
            if (c0 + l < C) {
              const acc_t x = xp[l] - acc[l];
              rp[l] = x;
              ob[(c0 + l) * osc + i * osh + j * osw] = static_cast<scalar_t>(x);
            }
        } else {
#pragma unroll
          for (int l = 0; l < K; ++l)
            if (c0 + l < C) xp[l] = xp[l] - acc[l];
        }
      }
#ifndef INVCONV_PLANT_MISSING_DIAGONAL_BARRIER  // test-only: proves the race check can fail
      __syncthreads();  // diagonal d is solved before d + 1 reads it
#endif
    }

    // (3) to the output, in its dtype (the ring wrote it already)
    if (!kRing) {
      for (I c = 0; c < C; ++c)
        for (I i = first_i, j = first_j; i < H; i += step_i, j += step_j) {
          if (j >= W) { j -= W; ++i; if (i >= H) break; }
          ob[c * osc + i * osh + j * osw] = static_cast<scalar_t>(xs[(i * W + j) * C + c]);
        }
    }
  }
}

#undef INVCONV_SHARED_CHOICE

template <typename scalar_t, typename acc_t>
using SolveKernel = void (*)(const SolveParams<scalar_t, acc_t>);


// The instantiation a launch configuration runs (the CUDA glue, the emulation and the race
// check pick it here): int32 indices with taps shared or global and the image shared, in a
// ring or global; int64 with the image in a ring or global.
template <typename scalar_t, typename acc_t, bool kTapsShared, typename index_t>
inline SolveKernel<scalar_t, acc_t> solve_kernel_for_image(int image) {
  if (image == kImageRing) return &wavefront_solve_kernel<scalar_t, acc_t, kTapsShared, kImageRing, index_t>;
  if (image == kImageGlobal) return &wavefront_solve_kernel<scalar_t, acc_t, kTapsShared, kImageGlobal, index_t>;
  if constexpr (sizeof(index_t) == 4)
    return &wavefront_solve_kernel<scalar_t, acc_t, kTapsShared, kImageShared, index_t>;
  else  // launch_config never puts a whole image in shared memory with 64-bit offsets
    return nullptr;
}

template <typename scalar_t, typename acc_t>
inline SolveKernel<scalar_t, acc_t> solve_kernel(const LaunchConfig& cfg) {
  if (cfg.wide_index)
    return cfg.taps_in_shared ? solve_kernel_for_image<scalar_t, acc_t, true, std::int64_t>(cfg.image)
                              : solve_kernel_for_image<scalar_t, acc_t, false, std::int64_t>(cfg.image);
  return cfg.taps_in_shared ? solve_kernel_for_image<scalar_t, acc_t, true, std::int32_t>(cfg.image)
                            : solve_kernel_for_image<scalar_t, acc_t, false, std::int32_t>(cfg.image);
}

}  // namespace cuda_kernels
}  // namespace invconv_core
