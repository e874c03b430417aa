// Race check of the CUDA kernel: runs cuda/wavefront_kernel.cuh under the SIMT emulation on
// random cases and compares with a sequential solve. Torch-free, so it can be built with
// ThreadSanitizer (verification/test_cuda_emulation.py builds and runs it):
//
//   g++ -std=c++20 -pthread -O1 -g -fsanitize=thread -Icpp cpp/emulation/race_check_driver.cpp
//   ./a.out [cases=40] [seed=1]
//
// With -DINVCONV_PLANT_MISSING_DIAGONAL_BARRIER the kernel loses its per-diagonal
// __syncthreads(): TSan must then report a data race (the test checks that it does).
// Exit status: 0 all cases agree, 1 a case disagrees, 2 the emulation failed its self-test.

#include "simt_emulation.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
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

int main(int argc, char** argv) {
  const int n_cases = argc > 1 ? std::atoi(argv[1]) : 40;
  const unsigned seed = argc > 2 ? static_cast<unsigned>(std::atoi(argv[2])) : 1u;

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
  std::normal_distribution<double> normal(0.0, 1.0);
  const int thread_choices[] = {32, 64, 256};
  // no shared memory, the default 48 KiB, what an sm_90 opts in to, taps only (tiny)
  const std::size_t shared_choices[] = {0, ck::kDefaultSharedLimit, 227 * 1024, 1500};
  int by_image[3] = {0, 0, 0};
  for (int n = 0; n < n_cases; ++n) {
    Case k{uniform(1, 3), uniform(1, 9), uniform(1, 6), uniform(1, 6), uniform(1, 4), uniform(1, 4),
           thread_choices[uniform(0, 2)], uniform(1, 3), shared_choices[uniform(0, 3)],
           uniform(0, 3) == 0};
    if (uniform(0, 3) == 0)  // room for the taps and the ring of diagonals, not the image
      k.shared_limit = (ck::packed_size(k.C, k.kh, k.kw) + (k.kh + k.kw - 1) * k.H * k.C) * sizeof(double);
    const std::int64_t C = k.C, numel = k.B * C * k.H * k.W;
    std::vector<double> y(numel), taps(k.kh * k.kw * C * C), m(C * C), out(numel, NAN);
    for (double& v : y) v = normal(rng);
    for (double& v : taps) v = 0.3 * normal(rng) / std::sqrt(double(C * k.kh * k.kw));
    for (std::int64_t c = 0; c < C; ++c)
      for (std::int64_t c2 = 0; c2 < C; ++c2) m[c * C + c2] = c == c2 ? 1.0 + 0.1 * normal(rng) : 0.0;

    const ck::LaunchConfig cfg = ck::launch_config(k.B, C, k.H, k.W, k.kh, k.kw, sizeof(double),
                                                   k.shared_limit, k.threads, k.max_blocks,
                                                   k.wide_index);
    const std::vector<double> packed = pack(k, taps, m);
    std::vector<double> scratch(numel, NAN);
    ck::SolveParams<double, double> p{};
    const ck::View4 nchw{C * k.H * k.W, k.H * k.W, k.W, 1};
    p.y = y.data(); p.ys = nchw;
    p.out = out.data(); p.os = nchw;
    p.packed = packed.data();
    p.scratch = scratch.data();
    p.B = k.B; p.C = C; p.H = k.H; p.W = k.W; p.kh = k.kh; p.kw = k.kw;
    ++by_image[cfg.image];
    const auto kernel = ck::solve_kernel<double, double>(cfg);
    if (cfg.shared_bytes > ck::kDefaultSharedLimit)
      invconv_simt::func_set_max_dynamic_shared(kernel, cfg.shared_bytes);
    invconv_simt::launch(kernel, dim3(static_cast<unsigned>(cfg.blocks)), dim3(cfg.threads),
                         cfg.shared_bytes, p);

    const std::vector<double> ref = sequential(k, y, taps, m);
    double num = 0, den = 0;
    for (std::int64_t e = 0; e < numel; ++e) {
      num += (out[e] - ref[e]) * (out[e] - ref[e]);
      den += ref[e] * ref[e];
    }
    if (!(std::sqrt(num) <= 1e-12 * std::sqrt(den))) {
      std::printf("case %d disagrees: B=%ld C=%ld H=%ld W=%ld kh=%ld kw=%ld threads=%d blocks=%ld "
                  "shared=%zu wide=%d rel.err=%g\n", n, long(k.B), long(C), long(k.H), long(k.W),
                  long(k.kh), long(k.kw), cfg.threads, long(cfg.blocks), cfg.shared_bytes,
                  int(cfg.wide_index), std::sqrt(num / den));
      return 1;
    }
  }
  std::printf("ok: %d cases agree with the sequential solve (image in shared memory %d, in a ring "
              "of diagonals %d, in global memory %d)\n", n_cases, by_image[ck::kImageShared],
              by_image[ck::kImageRing], by_image[ck::kImageGlobal]);
  return 0;
}
