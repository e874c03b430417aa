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
// diagonal, K = kChannelsPerThread channels a thread -- or, for batches that leave the device's
// SMs idle, several blocks solve an image in bands of rows, handing their boundary rows on
// through global memory (kImageBand, solve_band). One launch per solve; no host
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
#include "device_atomic.cuh"  // DeviceAtomicRef: the bands' progress flags

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
// The banded kernels (kImageBand) at most 512 too: a band's block aims at kBandThreads + the
// comm warps, and at 64 registers its extra state (band bounds, halo pointers, the tap walk)
// spilled (test_cuda_compile.py / the SASS profile check spills).
constexpr int kMaxThreadsBand = 512;
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
//  * kImageGlobal: the whole image in the global scratch (neither fits);
//  * kImageBand: the image split into bands of rows, one block each (batches too small to fill
//    the device): a band's rows and the kh - 1 rows above it (its halo) in shared memory, the
//    halo copied from the band above through the global scratch as that band publishes its
//    progress; each (pixel, channel group) pair of a diagonal solved by `split` threads, one
//    share of the taps each, their partial sums added in shared memory (solve_band).
constexpr int kImageGlobal = 0;
constexpr int kImageShared = 1;
constexpr int kImageRing = 2;
constexpr int kImageBand = 3;

// kImageBand: threads that share one pair's taps, at most (k = 3: one tap each); the comm warps,
// which solve nothing -- copier warps for the halo (their waits on the band above; each lane
// holds up to kHaloPerLane values in registers between loading and storing them: enough
// copiers for the kh - 1 rows x C channels of a diagonal) and one publishing warp (a release
// store: a device-scope fence, hundreds of cycles) -- so neither stands on the pairs' path nor
// on the other's; the threads a band's block aims at (its rows are chosen for it: about a warp
// a scheduler of pairs: the dependent chain rather than issue the limit, by bench/sass_model.py
// --bands).
constexpr int kMaxSplit = 8;
constexpr int kWarp = 32;
constexpr int kHaloPerLane = 4;
constexpr int kBandThreads = 128;

// The comm threads of a band's block: the copier warps and the publishing warp.
INVCONV_HOST_DEVICE inline std::int64_t band_comm_threads(std::int64_t C, std::int64_t kh) {
  const std::int64_t halo_values = (kh - 1) * C, per_warp = kWarp * kHaloPerLane;
  return (imax(1, (halo_values + per_warp - 1) / per_warp) + 1) * kWarp;
}

// The __launch_bounds__ of a solve-kernel variant (the image's placement, the index width): the
// most threads launch_config gives it; run_solve checks every launch against it, on the GPU and
// under the emulation alike (which cannot see the bound itself).
INVCONV_HOST_DEVICE constexpr int solve_launch_bound(int image, bool wide_index) {
  return image == kImageBand ? kMaxThreadsBand : wide_index ? kMaxThreadsWide : kMaxThreads;
}

template <typename scalar_t, typename acc_t>
struct SolveParams {
  const scalar_t* y;     // right-hand side, canonical (flipped) view `ys`
  View4 ys;
  scalar_t* out;         // result, canonical view `os` (channel axis reversed for the adjoint)
  View4 os;
  const acc_t* packed;   // the taps and M in plan_math.h's packed layout (packed_size entries)
  acc_t* scratch;        // [B][H][W][C]: the solved images (kImageGlobal) or z (kImageRing);
                         // kImageBand: [B][bands][kh - 1][W][C], each band's last kh - 1 rows
  std::int64_t B, C, H, W, kh, kw;
  // kImageBand only: `bands` bands of `band_rows` rows per image (the last may be shorter);
  // progress[b * bands + r]: the anti-diagonals band r of image b has finished (all before
  // it), then one ticket counter; zeroed before the launch.
  int* progress;
  std::int64_t bands, band_rows;
  int split, compute_threads;  // threads per pair; threads that solve pairs (the rest: the two comm warps)
};

struct LaunchConfig {
  std::int64_t blocks;
  int threads;
  std::size_t shared_bytes;
  bool taps_in_shared;   // the packed taps and M staged in shared memory
  int image;             // where the solved image lives: kImageGlobal, kImageShared, kImageRing
  bool wide_index;       // 64-bit offsets (some offset of the launch does not fit 32 bits)
  // kImageBand: bands per image (blocks = B * bands), rows per band, threads per pair, threads
  // that solve pairs (threads - kCommThreads); otherwise 1, H, 1, threads
  std::int64_t bands, band_rows;
  int split, compute_threads;
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

// The kernel's policy: the choices its named steps make that a test may replace. The
// production policy is the only one the package compiles; verification/ plants one defect at a
// time by compiling with -DINVCONV_PLANTED_KERNEL=<name>, which takes a policy derived from
// this one out of the test-only header cpp/testing/planted_kernel.h (a sanitizer or the SASS
// profile must then fail). No planted code is in this file.
struct KernelPolicy {
  // Offsets into images and the packed taps: the index type of the instantiation (int32
  // whenever fits_32bit_index). The channel, tap row and tap column counters are int on every
  // path: C, kh, kw fit (a weight of C >= 2^31 channels has C^2 entries).
  template <typename index_t>
  using Offset = index_t;
  using Counter = int;

  // The anti-diagonals the ring keeps: all the taps of a diagonal read (launch_config sizes
  // shared memory with it; the kernel's ring arithmetic uses kh + kw - 1).
  static constexpr std::int64_t ring_diagonals(std::int64_t kh, std::int64_t kw) { return kh + kw - 1; }

  // Whether the taps / the image are read from shared memory: a template argument, so each
  // instantiation has one kind of load (LDS or LDG), never a generic one.
  template <typename scalar_t, typename acc_t>
  __device__ __forceinline__ static constexpr bool in_shared(bool in_shared, const SolveParams<scalar_t, acc_t>&) {
    return in_shared;
  }

  // The dot product of one tap: the K output channels of a thread over all C input channels,
  // each neighbour value feeding K FMAs, the K weights one vector load. Input channels per
  // unrolled step: 8 in float32 (32 FMAs), 4 in float64 (more spilled at 64 registers); the
  // emulation's host compiler ignores the pragma.
  template <typename acc_t, typename J>
  __device__ __forceinline__ static void tap_dot(acc_t (&acc)[kChannelsPerThread], const acc_t* t,
                                                 const acc_t* xn, J Ci) {
    [[maybe_unused]] constexpr int kUnroll = sizeof(acc_t) == 4 ? 8 : 4;
#pragma unroll kUnroll
    for (J c2 = 0; c2 < Ci; ++c2) {
      const acc_t xv = xn[c2];
      const Lanes<acc_t> tv = load_lanes(t + c2 * kChannelsPerThread);
#pragma unroll
      for (int l = 0; l < kChannelsPerThread; ++l) acc[l] += tv.v[l] * xv;
    }
  }

  // Between two anti-diagonals: diagonal d is solved before d + 1 reads it.
  __device__ __forceinline__ static void diagonal_barrier() { __syncthreads(); }

  // kImageBand: between a pair's threads leaving their partial sums and the one adding them.
  __device__ __forceinline__ static void reduction_barrier() { __syncthreads(); }

  // kImageBand: the block's next band, from the launch's ticket counter (the order blocks come
  // to it: a band's predecessor is always taken by a block already running).
  __device__ __forceinline__ static int take_band(int* counter, unsigned /*taken_before*/) {
    return atomicAdd(counter, 1);
  }

  // kImageBand: a band's progress between blocks: published with release (everything the band
  // wrote before is visible to whoever reads the value), read with acquire.
  __device__ __forceinline__ static void publish_progress(int* flag, int value) {
    DeviceAtomicRef<int>(*flag).store(value, order::release);
  }
  __device__ __forceinline__ static int read_progress(int* flag) {
    return DeviceAtomicRef<int>(*flag).load(order::acquire);
  }
};

#if defined(INVCONV_PLANTED_KERNEL)
#include "../testing/planted_kernel.h"  // test-only: ActivePolicy = the planted policy
#else
using ActivePolicy = KernelPolicy;
#endif

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
                                  std::int64_t max_blocks = kMaxBlocks, bool wide_index = false,
                                  int sm_count = 0, std::int64_t band_rows = 0);

// The launch of one solve. The image split into bands (kImageBand: band_config) when the batch
// leaves at least half of the device's `sm_count` multiprocessors idle, or when `band_rows` asks
// for bands of that many rows (tests); otherwise one block per image (at most max_blocks, each
// then solving several images in turn), as many threads as the widest anti-diagonal has (pixel,
// channel group) pairs (a multiple of 32, at most max_threads), shared memory for the packed
// taps and then the image -- or else the ring of its last anti-diagonals -- as far as
// `shared_limit` bytes allow (the whole image never on the 64-bit path: an image that needs
// 64-bit offsets is far beyond any shared memory). Used by the CUDA glue and the emulation alike.
inline LaunchConfig one_block_per_image(std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W,
                                        std::int64_t kh, std::int64_t kw, std::size_t acc_size,
                                        std::size_t shared_limit, int max_threads,
                                        std::int64_t max_blocks, bool wide_index) {
  LaunchConfig cfg{};
  cfg.blocks = imax(1, imin(B, max_blocks));
  const std::int64_t widest = imin(H, W) * channel_groups(C);  // pairs of the widest diagonal
  const std::int64_t warps = (widest + 31) / 32;
  if (wide_index && max_threads > kMaxThreadsWide) max_threads = kMaxThreadsWide;
  cfg.threads = static_cast<int>(imax(1, imin(warps * 32, max_threads)));
  const std::size_t taps_bytes = static_cast<std::size_t>(packed_size(C, kh, kw)) * acc_size;
  const std::size_t image_bytes = static_cast<std::size_t>(H * W * C) * acc_size;
  const std::size_t ring_bytes =
      static_cast<std::size_t>(ActivePolicy::ring_diagonals(kh, kw) * H * C) * acc_size;
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
  cfg.bands = 1, cfg.band_rows = H, cfg.split = 1, cfg.compute_threads = cfg.threads;
  return cfg;
}

// kImageBand's shared memory: the packed taps (when staged), the partial sums of the pairs'
// threads, the band's rows and its halo, one int (the block's ticket).
inline std::size_t band_shared_bytes(std::int64_t C, std::int64_t W, std::int64_t kh, std::int64_t kw,
                                     std::int64_t band_rows, int compute_threads, std::size_t acc_size,
                                     bool taps_in_shared) {
  const std::int64_t values = (taps_in_shared ? packed_size(C, kh, kw) : 0) +
                              compute_threads * kChannelsPerThread + (kh - 1 + band_rows) * W * C;
  return static_cast<std::size_t>(values) * acc_size + sizeof(int);
}

// The band launch, or `fallback` where bands do not serve: no taps besides the current pixel
// (nothing to wait for), 64-bit offsets, fewer than two bands' worth of rows (unless asked
// for), a band (at least kh - 1 rows: its halo lies in the band above alone) that does not fit
// shared memory, too few threads for a warp of pairs and the comm warps. Rows per
// band: enough bands to give every idle multiprocessor one, but at least the rows that give the
// block about kBandThreads threads, and no more than the threads allow.
inline LaunchConfig band_config(std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W,
                                std::int64_t kh, std::int64_t kw, std::size_t acc_size,
                                std::size_t shared_limit, int max_threads, std::int64_t max_blocks,
                                int sm_count, std::int64_t band_rows, const LaunchConfig& fallback) {
  const std::int64_t taps = kh * kw - 1, halo = kh - 1, G = channel_groups(C);
  const std::int64_t comm = band_comm_threads(C, kh);
  max_threads = static_cast<int>(imin(max_threads, kMaxThreadsBand));
  if (fallback.wide_index || taps < 1 || max_threads < comm + kWarp) return fallback;
  const std::int64_t S = imin(kMaxSplit, taps);
  const std::int64_t max_pairs = (max_threads - comm) / S;  // per round of a diagonal
  std::int64_t h = band_rows;
  if (h <= 0) {
    if (sm_count <= 0 || 2 * B > sm_count) return fallback;
    const std::int64_t fill = (H + sm_count / B - 1) / (sm_count / B);
    h = imax(fill, imax(1, kBandThreads / (S * G)));
    if (imin(h, W) * G > max_pairs) h = imax(1, max_pairs / G);
  }
  h = imax(h, imax(halo, 1));
  auto compute_for = [&](std::int64_t rows) {
    const std::int64_t pairs = imin(imin(rows, W) * G, max_pairs);
    return static_cast<int>(imin(((pairs * S + 31) / 32) * 32, max_threads - comm));
  };
  bool taps_shared = true;
  auto fits = [&](std::int64_t rows) {
    return band_shared_bytes(C, W, kh, kw, rows, compute_for(rows), acc_size, taps_shared) <= shared_limit;
  };
  if (!fits(imax(halo, 1))) taps_shared = false;
  while (h > imax(halo, 1) && !fits(h)) h = imax(imax(halo, 1), h / 2);
  if (!fits(h)) return fallback;
  const std::int64_t bands = (H + h - 1) / h;
  if (bands < 2 && band_rows <= 0) return fallback;
  LaunchConfig cfg = fallback;
  cfg.image = kImageBand;
  cfg.bands = bands, cfg.band_rows = h, cfg.split = static_cast<int>(S);
  cfg.compute_threads = compute_for(h);
  cfg.threads = static_cast<int>(cfg.compute_threads + comm);
  cfg.blocks = imax(1, imin(B * bands, max_blocks));  // a block takes band after band (tickets)
  cfg.taps_in_shared = taps_shared;
  cfg.shared_bytes = band_shared_bytes(C, W, kh, kw, h, cfg.compute_threads, acc_size, taps_shared);
  return cfg;
}

inline LaunchConfig launch_config(std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W,
                                  std::int64_t kh, std::int64_t kw, std::size_t acc_size,
                                  std::size_t shared_limit, int max_threads, std::int64_t max_blocks,
                                  bool wide_index, int sm_count, std::int64_t band_rows) {
  const LaunchConfig one = one_block_per_image(B, C, H, W, kh, kw, acc_size, shared_limit,
                                               max_threads, max_blocks, wide_index);
  return band_config(B, C, H, W, kh, kw, acc_size, shared_limit, max_threads, max_blocks, sm_count,
                     band_rows, one);
}

// The global buffers a launch needs besides y, out and the packed taps, in values: the scratch
// (acc_t) and the progress flags with the ticket counter (int, zeroed).
inline std::int64_t scratch_values(const LaunchConfig& cfg, std::int64_t B, std::int64_t C,
                                   std::int64_t H, std::int64_t W, std::int64_t kh) {
  if (cfg.image == kImageShared) return 0;
  if (cfg.image == kImageBand) return B * cfg.bands * (kh - 1) * W * C;
  return B * H * W * C;
}

inline std::int64_t progress_values(const LaunchConfig& cfg, std::int64_t B) {
  return cfg.image == kImageBand ? B * cfg.bands + 1 : 0;
}


// Thread t's walk over a row-major index space of rows of n: it starts at (t / n, t % n) and
// steps blockDim.x entries at a time, (blockDim.x / n, blockDim.x % n), the carry done by hand
// (no division in the loop: a 64-bit one is a called subroutine on the GPU). 32-bit division
// suffices: a thread index and the block size are below 1024.
struct Walk {
  unsigned first_major, first_minor, step_major, step_minor;
};

template <typename I>
__device__ __forceinline__ Walk block_walk(I n) {
  const unsigned nu = n > static_cast<I>(blockDim.x) ? blockDim.x + 1u : static_cast<unsigned>(n);
  return Walk{threadIdx.x / nu, threadIdx.x % nu, blockDim.x / nu, blockDim.x % nu};
}

// The sizes of one solve in the offset type I and the counter type J of the instantiation.
template <typename I, typename J>
struct Dims {
  J Ci, khi, kwi;         // counters: channels, tap rows, tap columns
  I C, H, W, kh, kw, G;   // G = channel groups of K
  I tap_len, n_packed;    // one tap's packed entries; all taps and M
};

template <typename I, typename J, typename scalar_t, typename acc_t>
__device__ __forceinline__ Dims<I, J> solve_dims(const SolveParams<scalar_t, acc_t>& p) {
  constexpr int K = kChannelsPerThread;
  Dims<I, J> d;
  d.Ci = static_cast<J>(p.C), d.khi = static_cast<J>(p.kh), d.kwi = static_cast<J>(p.kw);
  d.C = static_cast<I>(p.C), d.H = static_cast<I>(p.H), d.W = static_cast<I>(p.W);
  d.kh = static_cast<I>(p.kh), d.kw = static_cast<I>(p.kw);
  d.G = (d.C + K - 1) / K, d.tap_len = d.G * d.C * K, d.n_packed = (d.kh * d.kw + 1) * d.tap_len;
  return d;
}

// Pass (1) of an image: z = M y at every pixel of rows [row0, row_end), into xs (the storage of
// row row0) -- independent pixels, all threads, so the right-hand side's global loads never
// wait on the wavefront; group by group, the strides read where used (fewer live registers).
// Channel c reads only the right-hand side channels c2 <= c of its own pixel (M is
// lower-triangular: a NaN of a later channel stays out of it).
template <typename I, typename J, typename scalar_t, typename acc_t>
__device__ __forceinline__ void right_hand_side(const SolveParams<scalar_t, acc_t>& p, I b, const Dims<I, J>& d,
                                                const Walk& px, const acc_t* m_packed, acc_t* xs,
                                                I row0, I row_end) {
  constexpr int K = kChannelsPerThread;
  const scalar_t* const yb = p.y + b * static_cast<I>(p.ys.sb) + row0 * static_cast<I>(p.ys.sh);
  const I ysc = static_cast<I>(p.ys.sc), ysh = static_cast<I>(p.ys.sh), ysw = static_cast<I>(p.ys.sw);
  const I rows = row_end - row0;
  for (I g = 0; g < d.G; ++g) {
    const I c0 = g * K, c_end = d.C < c0 + K ? d.C : c0 + K;
    const acc_t* const mg = m_packed + g * (d.C * K);
    for (I i = px.first_major, j = px.first_minor; i < rows; i += px.step_major, j += px.step_minor) {
      if (j >= d.W) { j -= d.W; ++i; if (i >= rows) break; }
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
      acc_t* const xp = xs + (i * d.W + j) * d.C + c0;
#pragma unroll
      for (int k = 0; k < K; ++k)
        if (c0 + k < d.C) xp[k] = z[k];
    }
  }
}

// One (pixel, channel group) pair of an anti-diagonal: its K channels
//     x = z - (sum over the taps t != current of W'_t x_{p - t}),
// the neighbours' sum first and z read last (no FMA waits for its load). Taps reaching above
// row 0 or left of column 0 read the zero padding: skipped. With the ring, a neighbour on
// diagonal d - back sits in slot (d - back) % R, and the solution goes into the ring and to
// the output at once; otherwise it overwrites z in xs.
template <typename Policy, bool kRing, typename I, typename J, typename scalar_t, typename acc_t>
__device__ __forceinline__ void solve_pair(const Dims<I, J>& d, const acc_t* packed, acc_t* xs, acc_t* ring,
                                           I slot, I R, I i, I j, I g, scalar_t* ob, I osc, I osh, I osw) {
  constexpr int K = kChannelsPerThread;
  const I c0 = g * K;
  acc_t* const xp = xs + (i * d.W + j) * d.C + c0;  // z, and (not kRing) the solution
  acc_t acc[K];
#pragma unroll
  for (int l = 0; l < K; ++l) acc[l] = acc_t(0);
  for (J a = d.kh - 1 - i > 0 ? static_cast<J>(d.kh - 1 - i) : 0; a < d.khi; ++a) {
    const I ii = i - (d.khi - 1 - a);
    const J b_end = (a == d.khi - 1) ? d.kwi - 1 : d.kwi;  // not the current pixel
    for (J bb = d.kw - 1 - j > 0 ? static_cast<J>(d.kw - 1 - j) : 0; bb < b_end; ++bb) {
      const acc_t* const t = packed + ((a * d.kw + bb) * d.G + g) * (d.C * K);
      const acc_t* xn;
      if (kRing) {  // the neighbour's diagonal d - back, back in [1, R - 1]
        const I back = (d.khi - 1 - a) + (d.kwi - 1 - bb);
        xn = ring + ((slot >= back ? slot - back : slot - back + R) * d.H + ii) * d.C;
      } else {
        xn = xs + (ii * d.W + j - (d.kw - 1 - bb)) * d.C;
      }
      Policy::tap_dot(acc, t, xn, d.Ci);
    }
  }
  if (kRing) {
    acc_t* const rp = ring + (slot * d.H + i) * d.C + c0;
#pragma unroll
    for (int l = 0; l < K; ++l)
      if (c0 + l < d.C) {
        const acc_t x = xp[l] - acc[l];
        rp[l] = x;
        ob[(c0 + l) * osc + i * osh + j * osw] = static_cast<scalar_t>(x);
      }
  } else {
#pragma unroll
    for (int l = 0; l < K; ++l)
      if (c0 + l < d.C) xp[l] = xp[l] - acc[l];
  }
}

// Pass (2) of an image: the H + W - 1 anti-diagonals in order, the pairs of each spread over
// the threads, one barrier between two diagonals.
template <typename Policy, bool kRing, typename I, typename J, typename scalar_t, typename acc_t>
__device__ __forceinline__ void solve_diagonals(const SolveParams<scalar_t, acc_t>& p, I b, const Dims<I, J>& d,
                                                const Walk& pairs, const acc_t* packed, acc_t* xs, acc_t* ring) {
  scalar_t* const ob = p.out + b * static_cast<I>(p.os.sb);
  const I osc = static_cast<I>(p.os.sc), osh = static_cast<I>(p.os.sh), osw = static_cast<I>(p.os.sw);
  const I R = d.kh + d.kw - 1;  // ring slots: diagonals d - (R - 1) .. d
  I slot = 0;                   // diagonal % R, carried
  for (I diag = 0; diag < d.H + d.W - 1; ++diag, slot = slot + 1 == R ? 0 : slot + 1) {
    const I i_lo = diag - (d.W - 1) > 0 ? diag - (d.W - 1) : 0;
    const I pixels = (d.H - 1 < diag ? d.H - 1 : diag) - i_lo + 1;
    for (I k = pairs.first_major, g = pairs.first_minor; k < pixels; k += pairs.step_major, g += pairs.step_minor) {
      if (g >= d.G) { g -= d.G; ++k; if (k >= pixels) break; }
      const I i = i_lo + k;
      solve_pair<Policy, kRing>(d, packed, xs, ring, slot, R, i, diag - i, g, ob, osc, osh, osw);
    }
    Policy::diagonal_barrier();
  }
}

// Pass (3) of an image: the solved image from xs to the output, in its dtype, threads along
// rows (with the ring, pass (2) wrote it already).
template <typename I, typename J, typename scalar_t, typename acc_t>
__device__ __forceinline__ void write_output(const SolveParams<scalar_t, acc_t>& p, I b, const Dims<I, J>& d,
                                             const Walk& px, const acc_t* xs) {
  scalar_t* const ob = p.out + b * static_cast<I>(p.os.sb);
  const I osc = static_cast<I>(p.os.sc), osh = static_cast<I>(p.os.sh), osw = static_cast<I>(p.os.sw);
  for (I c = 0; c < d.C; ++c)
    for (I i = px.first_major, j = px.first_minor; i < d.H; i += px.step_major, j += px.step_minor) {
      if (j >= d.W) { j -= d.W; ++i; if (i >= d.H) break; }
      ob[c * osc + i * osh + j * osw] = static_cast<scalar_t>(xs[(i * d.W + j) * d.C + c]);
    }
}

// kImageBand: the block's bands. The block takes a ticket (tickets go out in the order blocks
// take them, whatever the scheduler's order) and solves band r = ticket % bands of image
// ticket / bands, then takes the next ticket, until all are taken: a band waits only on the
// band above, whose ticket is smaller, so a running block holds it -- no launch needs all its
// blocks resident at once (or a grid of one block per band), and none can deadlock.
//
// Shared memory after the taps: red (the pairs' partial sums, K per thread), then the band's
// image: the kh - 1 halo rows above the band, then its own rows [i0, i1), then the ticket.
// Pass (1) puts z = M y in the band's rows. Pass (2) walks the global anti-diagonals D the band
// has pixels on; per diagonal:
//  * the comm warps (the last band_comm_threads threads): lane 0 of the last publishes that the
//    band finished every diagonal before D (a release store of progress[b][r]); the copiers
//    store the above band's values on diagonal D into the halo rows (read only from D + 1 on),
//    loaded into registers during D - 1, then poll the band above until it finished D + 1
//    (acquire loads, the value kept: one poll answers for every diagonal it covers) and load
//    its values on D + 1 -- so a band trails the one above by two diagonals, and the halo's
//    L2 latency overlaps a whole diagonal;
//  * the other threads, `split` to a pair: thread s of a pair sums its taps s, s + split, ...
//    (the taps' order fixed) and leaves its K partial sums in red; a barrier; thread s adds the
//    pair's split partial sums of channel c0 + s (and c0 + s + split, ...) in s order and
//    writes x = z - sum into the band, to the output and, in the band's last kh - 1 rows, to
//    the global scratch for the band below; a barrier (the diagonal's: what it wrote is read
//    from D + 1 on).
// More pairs than the threads hold: rounds, each with its two barriers (uniform over the block).
// The sum's order differs from the one-block kernel's (taps in order): within rounding of it,
// not bit-identical.
template <typename Policy, typename I, typename J, typename scalar_t, typename acc_t>
__device__ __forceinline__ void solve_band(const SolveParams<scalar_t, acc_t>& p, const Dims<I, J>& d,
                                           const acc_t* packed, const acc_t* m_packed, acc_t* after_taps) {
  constexpr int K = kChannelsPerThread;
  const I S = static_cast<I>(p.split), h = static_cast<I>(p.band_rows), bands = static_cast<I>(p.bands);
  const I hh = d.kh - 1, row_len = d.W * d.C;
  const unsigned compute = static_cast<unsigned>(p.compute_threads), tid = threadIdx.x;
  acc_t* const red = after_taps;
  acc_t* const band = red + compute * K;                       // row i0 - hh
  int* const ticket_slot = reinterpret_cast<int*>(band + (hh + h) * row_len);
  for (unsigned taken = 0;; ++taken) {  // a band per ticket, until every band is taken
    if (tid == 0) *ticket_slot = Policy::take_band(p.progress + p.B * p.bands, taken);
    __syncthreads();  // the ticket, and the staged taps, visible
    const I ticket = static_cast<I>(*ticket_slot), b = ticket / bands, r = ticket - b * bands;
    if (b >= static_cast<I>(p.B)) return;
    __syncthreads();  // every thread has read the ticket before the next one is written
    const I i0 = r * h, i1 = i0 + h < d.H ? i0 + h : d.H;
    acc_t* const own = band + hh * row_len;                      // row i0
    int* const mine = p.progress + (b * bands + r);
    int* const above = mine - 1;                                 // only read when r > 0
    const bool has_above = r > 0 && hh > 0, has_below = r + 1 < bands && hh > 0;
    const acc_t* const halo_in = has_above ? p.scratch + (b * bands + r - 1) * hh * row_len : nullptr;
    acc_t* const halo_out = has_below ? p.scratch + (b * bands + r) * hh * row_len : nullptr;
    scalar_t* const ob = p.out + b * static_cast<I>(p.os.sb);
    const I osc = static_cast<I>(p.os.sc), osh = static_cast<I>(p.os.sh), osw = static_cast<I>(p.os.sw);

    // the comm warps: the copiers (after the pairs' threads) move the above band's values on a
    // diagonal into the halo rows -- loaded into registers (held) one diagonal ahead, once the
    // band above has finished that diagonal (ready: the last progress read), stored the next;
    // lane 0 of the last warp publishes
    const I copiers = static_cast<I>(blockDim.x) - static_cast<I>(compute) - kWarp;  // threads
    const bool copier = has_above && tid >= compute && static_cast<I>(tid) < static_cast<I>(compute) + copiers;
    const bool publisher = tid == blockDim.x - kWarp;
    const I lane = static_cast<I>(tid) - static_cast<I>(compute);
    const I last_halo = i0 + d.W - 2;  // the halo's last diagonal: (i0 - 1, W - 1)
    int ready = 0;
    acc_t held[kHaloPerLane] = {};  // (every entry read is loaded first: halo_offset decides both)
    // this lane's m-th halo value on diagonal `diag`: (halo row rr, channel c) for entry
    // e = lane + m * copiers; its offset, the same in the scratch and in the band's halo rows,
    // or -1 where the entry or its column is off the halo
    auto halo_offset = [&](int m, I diag) -> I {
      const I e = lane + m * copiers, rr = e / d.C, c = e - rr * d.C, jj = diag - (i0 - hh + rr);
      return e < hh * d.C && jj >= 0 && jj < d.W ? (rr * d.W + jj) * d.C + c : I(-1);
    };
    auto load_halo = [&](I diag) {
      while (ready <= diag) {
        ready = Policy::read_progress(above);
        if (ready <= diag) spin_pause();
      }
#pragma unroll
      for (int m = 0; m < kHaloPerLane; ++m)
        if (const I o = halo_offset(m, diag); o >= 0) held[m] = halo_in[o];
    };
    auto store_halo = [&](I diag) {
#pragma unroll
      for (int m = 0; m < kHaloPerLane; ++m)
        if (const I o = halo_offset(m, diag); o >= 0) band[o] = held[m];
    };
    if (copier) {  // the halo on the diagonals before the band's first, i0; then i0's, held
      for (I diag = i0 - hh > 0 ? i0 - hh : 0; diag < i0; ++diag) load_halo(diag), store_halo(diag);
      if (i0 <= last_halo) load_halo(i0);
    }
    right_hand_side(p, b, d, block_walk(d.W), m_packed, own, i0, i1);
    __syncthreads();  // z and the first halo written

    // this thread's pair slot, its share of the taps: (a, bb) = divmod(s, kw), stepping S taps
    const J s = static_cast<J>(tid % p.split), q0 = static_cast<J>(tid / p.split);
    const I pair_slots = static_cast<I>(compute / p.split);
    const bool solves = static_cast<I>(tid) < pair_slots * S;
    const J taps = d.khi * d.kwi - 1, step_a = static_cast<J>(S) / d.kwi, step_b = static_cast<J>(S) % d.kwi;
    const Walk slots{static_cast<unsigned>(q0 / d.G), static_cast<unsigned>(q0 % d.G),
                     static_cast<unsigned>(pair_slots / d.G), static_cast<unsigned>(pair_slots % d.G)};
    const I last = i1 - 1 + d.W - 1;
    for (I diag = i0; diag <= last; ++diag) {
      if (publisher && diag > i0) Policy::publish_progress(mine, static_cast<int>(diag));
      if (copier && diag <= last_halo) {  // diagonal diag's halo, read from diag + 1 on; the next, held
        store_halo(diag);
        if (diag + 1 <= last_halo) load_halo(diag + 1);
      }
      const I i_lo = diag - (d.W - 1) > i0 ? diag - (d.W - 1) : i0;
      const I pixels = (i1 - 1 < diag ? i1 - 1 : diag) - i_lo + 1;
      I k = slots.first_major, g = slots.first_minor;
      for (I base = 0; base < pixels * d.G; base += pair_slots) {
        const bool active = solves && k < pixels;
        const I i = i_lo + k, j = diag - i, c0 = g * K;
        acc_t acc[K];
#pragma unroll
        for (int l = 0; l < K; ++l) acc[l] = acc_t(0);
        if (active) {
          J a = static_cast<J>(s / d.kwi), bb = static_cast<J>(s % d.kwi);
          for (J t = s; t < taps; t += static_cast<J>(S), a += step_a, bb += step_b) {
            if (bb >= d.kwi) { bb -= d.kwi; ++a; }
            const I ii = i - (d.khi - 1 - a), jj = j - (d.kwi - 1 - bb);
            if (ii < 0 || jj < 0) continue;  // the zero padding
            Policy::tap_dot(acc, packed + ((a * d.kw + bb) * d.G + g) * (d.C * K),
                            band + ((ii - i0 + hh) * d.W + jj) * d.C, d.Ci);
          }
          acc_t* const mine_red = red + tid * K;
#pragma unroll
          for (int l = 0; l < K; ++l) mine_red[l] = acc[l];
        }
        Policy::reduction_barrier();
        if (active) {  // thread s finishes channels c0 + s, c0 + s + S, ... of the pair: z - sum
          const acc_t* const pair_red = red + (static_cast<I>(tid) - s) * K;
          for (J l = s; l < K && c0 + l < d.C; l += static_cast<J>(S)) {
            acc_t sum = acc_t(0);
            for (I t = 0; t < S; ++t) sum += pair_red[t * K + l];
            acc_t* const xp = own + ((i - i0) * d.W + j) * d.C + c0 + l;
            const acc_t x = *xp - sum;
            *xp = x;
            if (has_below && i >= i1 - hh) halo_out[((i - (i1 - hh)) * d.W + j) * d.C + c0 + l] = x;
            ob[(c0 + l) * osc + i * osh + j * osw] = static_cast<scalar_t>(x);
          }
        }
        Policy::diagonal_barrier();
        k += slots.step_major, g += slots.step_minor;
        if (g >= d.G) { g -= d.G; ++k; }
      }
    }
    if (publisher) Policy::publish_progress(mine, static_cast<int>(last + 1));
  }
}

// The solve of one launch. Template parameters: where the packed taps and the image live
// (shared or global memory, kImage*: separate code, so the compiler emits LDS / LDG, never
// generic loads), the index type (int32 whenever fits_32bit_index; int64 otherwise) and the
// policy (KernelPolicy; a test build plants a defect through it).
//
// The block stages the packed taps in shared memory (kTapsShared), then per image: (1) z = M y
// (right_hand_side), (2) the anti-diagonals (solve_diagonals, solve_pair), (3) the output
// (write_output).
template <typename scalar_t, typename acc_t, bool kTapsShared, int kImage, typename index_t,
          typename Policy = ActivePolicy>
__global__ void __launch_bounds__(solve_launch_bound(kImage, sizeof(index_t) == 8), kMinBlocksPerSM)
    wavefront_solve_kernel(const SolveParams<scalar_t, acc_t> p) {
  using I = typename Policy::template Offset<index_t>;
  using J = typename Policy::Counter;
  constexpr bool kRing = kImage == kImageRing;
  const Dims<I, J> d = solve_dims<I, J>(p);
  acc_t* const shared = reinterpret_cast<acc_t*>(dynamic_shared_bytes());
  if (kTapsShared)
    for (I e = threadIdx.x; e < d.n_packed; e += blockDim.x) shared[e] = p.packed[e];
  const acc_t* const packed = Policy::in_shared(kTapsShared, p) ? shared : p.packed;
  const acc_t* const m_packed = packed + d.kh * d.kw * d.tap_len;
  if constexpr (kImage == kImageBand) {
    solve_band<Policy>(p, d, packed, m_packed, shared + (kTapsShared ? d.n_packed : 0));
    return;
  }
  const Walk pairs = block_walk(d.G), pixels = block_walk(d.W);

  for (I b = blockIdx.x; b < static_cast<I>(p.B); b += gridDim.x) {
    // the image (kImageShared, kImageGlobal) or z (kImageRing) at xs; the ring after the taps
    acc_t* const on_chip = shared + (kTapsShared ? d.n_packed : 0);
    acc_t* const xs = Policy::in_shared(kImage == kImageShared, p) ? on_chip : p.scratch + b * (d.H * d.W * d.C);
    // staged taps visible (first image); the previous image is written out
    __syncthreads();
    right_hand_side(p, b, d, pixels, m_packed, xs, I(0), d.H);
    __syncthreads();  // every z written before a pixel reads it
    solve_diagonals<Policy, kRing>(p, b, d, pairs, packed, xs, on_chip);
    if (!kRing) write_output(p, b, d, pixels, xs);
  }
}

template <typename scalar_t, typename acc_t>
using SolveKernel = void (*)(const SolveParams<scalar_t, acc_t>);


// The instantiation a launch configuration runs (the CUDA glue, the emulation and the race
// check pick it here): int32 indices with taps shared or global and the image shared, in a
// ring, global or in bands; int64 with the image in a ring or global.
template <typename scalar_t, typename acc_t, bool kTapsShared, typename index_t>
inline SolveKernel<scalar_t, acc_t> solve_kernel_for_image(int image) {
  if (image == kImageRing) return &wavefront_solve_kernel<scalar_t, acc_t, kTapsShared, kImageRing, index_t>;
  if (image == kImageGlobal) return &wavefront_solve_kernel<scalar_t, acc_t, kTapsShared, kImageGlobal, index_t>;
  if constexpr (sizeof(index_t) == 4)
    return image == kImageBand ? &wavefront_solve_kernel<scalar_t, acc_t, kTapsShared, kImageBand, index_t>
                               : &wavefront_solve_kernel<scalar_t, acc_t, kTapsShared, kImageShared, index_t>;
  else  // launch_config never puts an image (or a band) in shared memory with 64-bit offsets
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
