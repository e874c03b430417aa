// Sanitizer driver of the CUDA kernel: runs cuda/wavefront_kernel.cuh under the SIMT emulation
// on random cases -- every instantiation (float64, float32, a 2-byte storage type; taps and
// image in shared or global memory, the ring or bands of rows over several blocks; 32- and
// 64-bit offsets), every order (row and
// column flips of the views) and both directions (the adjoint's channel reversal), buffers of
// exactly their size -- and compares with a sequential solve. Torch-free, so it can be built
// with ThreadSanitizer, or AddressSanitizer + UndefinedBehaviorSanitizer
// (verification/test_cuda_emulation.py builds and runs both):
//
//   g++ -std=c++20 -pthread -O1 -g -fsanitize=thread -Icpp cpp/emulation/race_check_driver.cpp
//   g++ -std=c++20 -pthread -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all ...
//   ./a.out [cases=40] [seed=1] [bands]     (bands: every case split into bands of rows)
//
// Planted counter-examples (test-only): -DINVCONV_PLANTED_KERNEL=PlantedMissingDiagonalBarrier
// (the per-diagonal __syncthreads() removed: TSan reports a data race), =PlantedShortRing
// (the ring one anti-diagonal short: ASan reports the overrun of shared memory),
// INVCONV_PLANT_MISALIGNED_TAPS (the packed taps one element off a 16-byte boundary: the
// emulation's alignment check aborts, as the GPU traps); with `bands`,
// =PlantedMissingReductionBarrier and =PlantedRelaxedProgress (TSan reports the race),
// =PlantedBandByBlockIndex (the launch deadlocks: the caller's timeout).
// Exit status: 0 all cases agree, 1 a case disagrees, 2 the emulation failed its self-test.

#include "simt_emulation.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "../cuda/wavefront_kernel.cuh"

namespace ck = invconv_core::cuda_kernels;

// Self-test of the emulation: a kernel that reads a shared slot no thread wrote must see NaN.
__global__ void read_unwritten_shared(float* out) {
  float* s = reinterpret_cast<float*>(ck::dynamic_shared_bytes());
  if (threadIdx.x == 0) s[0] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];  // slot 1 was never written
}

struct Case {
  std::int64_t B, C, H, W, kh, kw;
  int threads;
  std::int64_t max_blocks;
  std::size_t shared_limit;
  bool wide_index;
  int sm_count;            // > 0: a device of this many multiprocessors (small batches: bands)
  std::int64_t band_rows;  // > 0: bands of this many rows
};

// The taps [kh][kw][C'][C] and M [C][C'] in the kernel's packed layout (plan_math.h).
static std::vector<double> pack(const Case& k, const std::vector<double>& taps,
                                const std::vector<double>& m) {
  const std::int64_t C = k.C;
  std::vector<double> packed(ck::packed_size(C, k.kh, k.kw), 0.0);
  for (std::int64_t t = 0; t <= k.kh * k.kw; ++t)
    for (std::int64_t c2 = 0; c2 < C; ++c2)
      for (std::int64_t c = 0; c < C; ++c)
        packed[ck::packed_offset(t, c2, c, C)] =
            t < k.kh * k.kw ? taps[(t * C + c2) * C + c] : (c2 <= c ? m[c * C + c2] : 0.0);
  return packed;
}

// x_p = M y_p - sum_{t != current} taps_t x_{p-t}, raster order, in double.
static std::vector<double> sequential(const Case& k, const std::vector<double>& y,
                                      const std::vector<double>& taps,
                                      const std::vector<double>& m) {
  const std::int64_t C = k.C, H = k.H, W = k.W;
  std::vector<double> x(y.size(), 0.0);
  auto at = [&](std::int64_t b, std::int64_t c, std::int64_t i, std::int64_t j) {
    return ((b * C + c) * H + i) * W + j;
  };
  for (std::int64_t b = 0; b < k.B; ++b)
    for (std::int64_t i = 0; i < H; ++i)
      for (std::int64_t j = 0; j < W; ++j)
        for (std::int64_t c = 0; c < C; ++c) {
          double acc = 0;
          for (std::int64_t c2 = 0; c2 < C; ++c2) acc += m[c * C + c2] * y[at(b, c2, i, j)];
          for (std::int64_t a = 0; a < k.kh; ++a)
            for (std::int64_t bb = 0; bb < k.kw; ++bb) {
              if (a == k.kh - 1 && bb == k.kw - 1) continue;
              const std::int64_t ii = i - (k.kh - 1 - a), jj = j - (k.kw - 1 - bb);
              if (ii < 0 || jj < 0) continue;
              for (std::int64_t c2 = 0; c2 < C; ++c2)
                acc -= taps[((a * k.kw + bb) * C + c2) * C + c] * x[at(b, c2, ii, jj)];
            }
          x[at(b, c, i, j)] = acc;
        }
  return x;
}

// A 2-byte storage type accumulated in float, like c10::BFloat16 (the top half of a float):
// the element size of the half-type instantiations, without torch.
struct Half16 {
  std::uint16_t bits;
  Half16() = default;
  Half16(float f) {  // NOLINT: converting, as c10's are
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    bits = static_cast<std::uint16_t>(u >> 16);
  }
  operator float() const {
    const std::uint32_t u = static_cast<std::uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

template <typename T>
static double as_double(T v) {
  if constexpr (std::is_same_v<T, Half16>) return static_cast<float>(v);
  else return static_cast<double>(v);
}

// One random case: an order (row and column flips of the canonical view, a moved base pointer
// and negated strides, as the glue forms them) and a direction (the adjoint's channel
// reversal), buffers of exactly their size, the solve kernel under the emulation, and the
// sequential solve of the same canonical problem to compare with.
template <typename scalar_t, typename acc_t, typename Uniform>
static bool run_case(int n, std::mt19937& rng, Uniform& uniform, int* image, bool bands_only) {
  std::normal_distribution<double> normal(0.0, 1.0);
  const int thread_choices[] = {32, 64, 256};
  // no shared memory, the default 48 KiB, what an sm_90 opts in to, taps only (tiny)
  const std::size_t shared_choices[] = {0, ck::kDefaultSharedLimit, 227 * 1024, 1500};
  Case k{uniform(1, 3), uniform(1, 9), uniform(1, 6), uniform(1, 6), uniform(1, 4), uniform(1, 4),
         thread_choices[uniform(0, 2)], uniform(1, 3), shared_choices[uniform(0, 3)],
         uniform(0, 3) == 0, 0, 0};
  if (bands_only) {  // several bands an image; now and then a halo of more values than a copier
    k.H = uniform(4, 12);  // warp holds (kHaloPerLane each of its lanes): several copier warps
    if (uniform(0, 3) == 0) k.C = uniform(0, 1) ? 48 : 20;
  }
  switch (bands_only ? 0 : uniform(0, 3)) {  // bands: asked for by rows (any height, one band too), or by a device
    case 0:  // (the comm warps and one warp of pairs: at least 96 threads, the band in shared memory)
      k.band_rows = uniform(1, 6), k.wide_index = false;
      k.threads = static_cast<int>(32 * uniform(3, 8)), k.shared_limit = shared_choices[uniform(1, 2)];
      break;
    case 1: k.sm_count = static_cast<int>(uniform(2, 132)); k.wide_index = false; break;
    default: break;
  }
  if (uniform(0, 2) == 0)  // room for the taps and the ring of diagonals, not the image
    k.shared_limit = std::min<std::size_t>(
        227 * 1024, (ck::packed_size(k.C, k.kh, k.kw) + (k.kh + k.kw - 1) * k.H * k.C) * sizeof(acc_t));
  const bool flip_rows = uniform(0, 1), flip_cols = uniform(0, 1), reverse_channels = uniform(0, 1);
  const std::int64_t C = k.C, H = k.H, W = k.W, numel = k.B * C * H * W;
  std::vector<scalar_t> y(numel), out(numel, scalar_t(NAN));
  std::vector<double> taps(k.kh * k.kw * C * C), m(C * C);
  for (auto& v : y) v = static_cast<scalar_t>(normal(rng));
  for (double& v : taps) v = 0.3 * normal(rng) / std::sqrt(double(C * k.kh * k.kw));
  for (std::int64_t c = 0; c < C; ++c)
    for (std::int64_t c2 = 0; c2 < C; ++c2) m[c * C + c2] = c == c2 ? 1.0 + 0.1 * normal(rng) : 0.0;

  // the canonical view of an NCHW buffer under the case's flips
  ck::View4 v{C * H * W, H * W, W, 1};
  std::int64_t base = 0;
  if (flip_rows) { base += (H - 1) * v.sh; v.sh = -v.sh; }
  if (flip_cols) { base += (W - 1) * v.sw; v.sw = -v.sw; }
  if (reverse_channels) { base += (C - 1) * v.sc; v.sc = -v.sc; }
  const ck::LaunchConfig cfg = ck::launch_config(k.B, C, H, W, k.kh, k.kw, sizeof(acc_t),
                                                 k.shared_limit, k.threads, k.max_blocks,
                                                 k.wide_index, k.sm_count, k.band_rows);
  const std::vector<double> packed64 = pack(k, taps, m);
  std::vector<acc_t> packed(packed64.begin(), packed64.end());
  std::vector<acc_t> scratch(ck::scratch_values(cfg, k.B, C, H, W, k.kh), acc_t(NAN));
  std::vector<int> progress(ck::progress_values(cfg, k.B), 0);
  ck::SolveParams<scalar_t, acc_t> p{};
  p.y = y.data() + base; p.ys = v;
  p.out = out.data() + base; p.os = v;
#if defined(INVCONV_PLANT_MISALIGNED_TAPS)
  std::vector<acc_t> shifted(packed.size() + 1);
  std::copy(packed.begin(), packed.end(), shifted.begin() + 1);
  p.packed = shifted.data() + 1;
#else
  p.packed = packed.data();
#endif
  p.scratch = scratch.empty() ? nullptr : scratch.data();
  p.B = k.B; p.C = C; p.H = H; p.W = W; p.kh = k.kh; p.kw = k.kw;
  p.progress = progress.empty() ? nullptr : progress.data();
  p.bands = cfg.bands; p.band_rows = cfg.band_rows; p.split = cfg.split;
  p.compute_threads = cfg.compute_threads;
  *image = cfg.image;
  if (cfg.threads > ck::solve_launch_bound(cfg.image, cfg.wide_index)) {  // the GPU would refuse it
    std::printf("case %d: %d threads past the kernel's launch bound %d\n", n, cfg.threads,
                ck::solve_launch_bound(cfg.image, cfg.wide_index));
    return false;
  }
  const auto kernel = ck::solve_kernel<scalar_t, acc_t>(cfg);
  if (cfg.shared_bytes > ck::kDefaultSharedLimit)
    invconv_simt::func_set_max_dynamic_shared(kernel, cfg.shared_bytes);
  invconv_simt::launch(kernel, dim3(static_cast<unsigned>(cfg.blocks)), dim3(cfg.threads),
                       cfg.shared_bytes, p);

  // the canonical problem: y and out read through the view
  auto at = [&](std::int64_t b, std::int64_t c, std::int64_t i, std::int64_t j) {
    return base + b * v.sb + c * v.sc + i * v.sh + j * v.sw;
  };
  std::vector<double> yc(numel), got(numel);
  for (std::int64_t b = 0, e = 0; b < k.B; ++b)
    for (std::int64_t c = 0; c < C; ++c)
      for (std::int64_t i = 0; i < H; ++i)
        for (std::int64_t j = 0; j < W; ++j, ++e) {
          yc[e] = as_double(y[at(b, c, i, j)]);
          got[e] = as_double(out[at(b, c, i, j)]);
        }
  const std::vector<double> ref = sequential(k, yc, taps, m);
  double num = 0, den = 0;
  for (std::int64_t e = 0; e < numel; ++e) {
    num += (got[e] - ref[e]) * (got[e] - ref[e]);
    den += ref[e] * ref[e];
  }
  const double tol = sizeof(scalar_t) == 8 ? 1e-12 : sizeof(scalar_t) == 4 ? 1e-4 : 3e-2;
  if (!(std::sqrt(num) <= tol * std::sqrt(den))) {
    std::printf("case %d disagrees: %zu-byte values, B=%ld C=%ld H=%ld W=%ld kh=%ld kw=%ld "
                "threads=%d blocks=%ld shared=%zu wide=%d bands=%ldx%ld flips=%d%d%d rel.err=%g\n", n,
                sizeof(scalar_t), long(k.B), long(C), long(H), long(W), long(k.kh), long(k.kw),
                cfg.threads, long(cfg.blocks), cfg.shared_bytes, int(cfg.wide_index),
                long(cfg.bands), long(cfg.band_rows),
                int(flip_rows), int(flip_cols), int(reverse_channels), std::sqrt(num / den));
    return false;
  }
  return true;
}

int main(int argc, char** argv) {
  const int n_cases = argc > 1 ? std::atoi(argv[1]) : 40;
  const unsigned seed = argc > 2 ? static_cast<unsigned>(std::atoi(argv[2])) : 1u;
  const bool bands_only = argc > 3 && std::strcmp(argv[3], "bands") == 0;

  std::vector<float> probe(2, 0.0f);
  invconv_simt::launch(&read_unwritten_shared, dim3(1), dim3(2), 2 * sizeof(float), probe.data());
  if (!(probe[0] == 1.0f && std::isnan(probe[1]))) {
    std::printf("emulation self-test failed: unwritten shared memory did not read as NaN\n");
    return 2;
  }
  // ... and, like CUDA, refuse more than 48 KiB of dynamic shared memory until the kernel opts in
  bool refused = false;
  try {
    invconv_simt::launch(&read_unwritten_shared, dim3(1), dim3(2), 64 * 1024, probe.data());
  } catch (const std::invalid_argument&) {
    refused = true;
  }
  invconv_simt::func_set_max_dynamic_shared(&read_unwritten_shared, 64 * 1024);
  invconv_simt::launch(&read_unwritten_shared, dim3(1), dim3(2), 64 * 1024, probe.data());
  if (!refused) {
    std::printf("emulation self-test failed: 64 KiB of shared memory without an opt-in\n");
    return 2;
  }

  std::mt19937 rng(seed);
  auto uniform = [&](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };
  int by_image[4] = {0, 0, 0, 0};
  for (int n = 0; n < n_cases; ++n) {
    bool ok = false;
    int image = 0;
    switch (n % 3) {  // every instantiation: float64, float32, and a 2-byte storage type
      case 0: ok = run_case<double, double>(n, rng, uniform, &image, bands_only); break;
      case 1: ok = run_case<float, float>(n, rng, uniform, &image, bands_only); break;
      default: ok = run_case<Half16, float>(n, rng, uniform, &image, bands_only); break;
    }
    if (!ok) return 1;
    ++by_image[image];
  }
  std::printf("ok: %d cases agree with the sequential solve (image in shared memory %d, in a ring "
              "of diagonals %d, in global memory %d, in bands %d)\n", n_cases, by_image[ck::kImageShared],
              by_image[ck::kImageRing], by_image[ck::kImageGlobal], by_image[ck::kImageBand]);
  return 0;
}
