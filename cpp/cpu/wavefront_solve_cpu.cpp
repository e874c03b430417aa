// CPU kernel of invconv_core::inv_conv2d: solves T x = y (or T^T x = y) for a causal
// convolution T by substitution in wavefront order. The scheduling lives here; the SIMD
// kernels in wavefront_kernels.h.
//
// Canonical problem (see solve_plan.h): TL order, pixel (i, j) reads pixels (i', j') with
// i' <= i, j' <= j. Pixel (i, j) needs the solved values of earlier pixels only, so
//  * raster order (row by row) is a valid schedule for one image -- cache friendly, used when
//    the batch alone keeps every thread busy (parallel over the batch);
//  * all pixels of one anti-diagonal i + j = d are independent -- used to parallelise over
//    pixels when the batch is smaller than the thread count (H + W - 1 dependent steps), as a
//    pipelined wavefront: threads solve successive bands of rows, each a few pixels behind the
//    band above.
// The current tap is folded in beforehand (solve_plan.h): per pixel the solver evaluates
// x_p = M y_p - sum_t W'_t x_{p - t} (M = L^{-1}) in one vector loop, no substitution chain.
// Pixels are solved in groups of up to kGroupMax that share every load of a tap row -- the
// same pixel of several images, or (one image) a band of rows, each a column behind the row
// above -- so the C x C taps are streamed once per group, not once per pixel.
//
// The solved image lives in a zero-padded channels-last scratch image (kh-1 rows on top,
// kw-1 columns on the left) in the accumulation dtype: the kh*kw taps of a pixel then read,
// for each kernel row, one contiguous run of kw*C values, with no bounds tests, from a buffer
// that stays in cache.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "../solve_plan.h"


namespace invconv_core {
namespace {

// Scratch slack for the vector lanes past the last channel (4 vectors of 32 bytes of float).
constexpr int64_t kSumsPad = 32;

// Scratch values (pixels x channels) of its row a thread of the pipelined schedule solves
// before it publishes them to the row below (at least 16 pixels); see solve_cpu.
constexpr int64_t kPublishValues = 64;
// With C = 1 a span is then a whole number of the widest C = 1 tiles (4 vectors of 32 bytes),
// which the C = 1 path relies on: only the last tile of a row can be short.
static_assert(kPublishValues % (4 * 32 / sizeof(float)) == 0, "C = 1 spans must be whole tiles");

// The most pixels the kernels solve at once, as a group sharing their tap loads
// (wavefront_kernels.h): the same pixel of up to kGroupMax images, or a band of kGroupMax rows
// of one image.
constexpr int kGroupMax = 4;

// Rows of one image solved together as a band (C >= 2): step t solves pixel (i0 + r, t - r) of
// every row r of the band that has one, a group of up to kGroupMax pixels that share their tap
// loads (the single-image analogue of solving the same pixel of several images).
constexpr int64_t band_rows(int64_t C) { return C == 1 ? 1 : kGroupMax; }

struct Geometry {
  int64_t C, H, W, kh, kw;
  int64_t Hp, Wp;  // padded scratch size
};

// The kernels are compiled twice where the toolchain allows: for x86-64-v3 (AVX2 + FMA) and for
// the baseline ISA, picked at run time, so one wheel is fast on current CPUs and still runs on
// old ones. (Two namespaces under `#pragma GCC target` rather than target_clones: with clones,
// the inlined helpers keep the baseline's lowering of 32-byte vectors, and a broadcast became
// eight lane inserts.)
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define INVCONV_X86_64_V3 1
namespace isa_v3 {
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
#include "wavefront_kernels.h"
#pragma GCC pop_options
}  // namespace isa_v3
#endif
namespace isa_base {
#include "wavefront_kernels.h"
}  // namespace isa_base

// INVCONV_CPU_ISA=baseline forces the baseline kernels (for tests on a current CPU).
inline bool use_v3() {
#ifdef INVCONV_X86_64_V3
  static const bool v3 = [] {
    const char* isa = std::getenv("INVCONV_CPU_ISA");
    return __builtin_cpu_supports("x86-64-v3") && !(isa && std::string(isa) == "baseline");
  }();
  return v3;
#else
  return false;
#endif
}

#ifdef INVCONV_X86_64_V3
#define INVCONV_DISPATCH(fn, ...) (use_v3() ? isa_v3::fn(__VA_ARGS__) : isa_base::fn(__VA_ARGS__))
#else
#define INVCONV_DISPATCH(fn, ...) isa_base::fn(__VA_ARGS__)
#endif

// Packed/Pixel are per-ISA types of the same layout: the scheduler below uses the baseline's.
using isa_base::Packed;

inline void band_steps_any(const Geometry& g, Packed<float> w, float* xp, const float* stage,
                           float* sums, int64_t i0, int64_t nr, int64_t t0, int64_t t1) {
  INVCONV_DISPATCH(band_steps_f32, g, {w.taps, w.neg_mt}, xp, stage, sums, i0, nr, t0, t1);
}
inline void band_steps_any(const Geometry& g, Packed<double> w, double* xp, const double* stage,
                           double* sums, int64_t i0, int64_t nr, int64_t t0, int64_t t1) {
  INVCONV_DISPATCH(band_steps_f64, g, {w.taps, w.neg_mt}, xp, stage, sums, i0, nr, t0, t1);
}
inline void images_row_any(const Geometry& g, Packed<float> w, float* const* xp,
                           const float* const* stage, float* sums, int64_t i, int n) {
  INVCONV_DISPATCH(images_row_f32, g, {w.taps, w.neg_mt}, xp, stage, sums, i, n);
}
inline void images_row_any(const Geometry& g, Packed<double> w, double* const* xp,
                           const double* const* stage, double* sums, int64_t i, int n) {
  INVCONV_DISPATCH(images_row_f64, g, {w.taps, w.neg_mt}, xp, stage, sums, i, n);
}

// A 4-D NCHW tensor seen through the plan's flips: element (b, c, i, j) of the canonical
// problem is ptr[b*sb + c*sc + i*sh + j*sw]. Flips become a moved base and a negated stride.
template <typename T>
struct FlippedView {
  T* ptr;
  int64_t sb, sc, sh, sw;
  FlippedView(const at::Tensor& t, const SolvePlan& p, bool reverse_channels) {
    ptr = static_cast<T*>(t.data_ptr());
    sb = t.stride(0);
    sc = t.stride(1);
    sh = t.stride(2);
    sw = t.stride(3);
    if (reverse_channels) { ptr += (t.size(1) - 1) * sc; sc = -sc; }
    if (p.flip_rows) { ptr += (t.size(2) - 1) * sh; sh = -sh; }
    if (p.flip_cols) { ptr += (t.size(3) - 1) * sw; sw = -sw; }
  }
  T& at(int64_t b, int64_t c, int64_t i, int64_t j) const {
    return ptr[b * sb + c * sc + i * sh + j * sw];
  }
};

template <typename scalar_t>
void solve_cpu(const at::Tensor& y, const SolvePlan& plan, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = y.size(0), C = y.size(1), H = y.size(2), W = y.size(3);
  Geometry g{C, H, W, plan.kh, plan.kw, H + plan.kh - 1, W + plan.kw - 1};
  // y' = M y is evaluated per pixel inside the vector loop, in a fixed summation order: the
  // result does not depend on the thread count, the schedule or the memory layout of y.
  // canonical channels (reversed for the adjoint, like the result): M is lower-triangular
  const FlippedView<const scalar_t> in(y, plan, plan.reverse_channels);
  // The vector loops read up to one group of lanes (< kSumsPad values) past the last weight:
  // the plan's buffers carry kPlanTail zeros there.
  static_assert(kSumsPad <= kPlanTail, "the plan's tail must cover the vector lanes");
  const Packed<acc_t> packed{plan.taps.const_data_ptr<acc_t>(), plan.neg_rhs_t.const_data_ptr<acc_t>()};
  const FlippedView<scalar_t> res(out, plan, plan.reverse_channels);
  const int64_t image = g.Hp * g.Wp * C;
  const int64_t NR = band_rows(C), bands = (H + NR - 1) / NR;
  // Stages row i of channel c of y into a pixel-major row: stage_row[j*C + c]. (Base pointers
  // hoisted, unit column strides apart: with the index arithmetic per element, staging and
  // storing were ~30% of a 100x12x16x16 solve.)
  auto stage_channel_row = [&](acc_t* stage_row, int64_t b, int64_t i, int64_t c) {
    const scalar_t* __restrict src = &in.at(b, c, i, 0);
    acc_t* __restrict dst = stage_row + c;
    const int64_t sw = in.sw;
    if (sw == 1)
      for (int64_t j = 0; j < W; ++j) dst[j * C] = static_cast<acc_t>(src[j]);
    else
      for (int64_t j = 0; j < W; ++j) dst[j * C] = static_cast<acc_t>(src[j * sw]);
  };
  // Stages the nr canonical rows from i0 of image b: row r at stage + r*W*C, pixel-major.
  auto stage_band = [&](acc_t* stage, int64_t b, int64_t i0, int64_t nr) {
    for (int64_t r = 0; r < nr; ++r)
      for (int64_t c = 0; c < C; ++c) stage_channel_row(stage + r * W * C, b, i0 + r, c);
  };
  // Writes row i of channel c of the solved padded image xp to the output.
  auto store_channel_row = [&](int64_t b, const acc_t* xp, int64_t i, int64_t c) {
    const acc_t* __restrict s = xp + ((i + g.kh - 1) * g.Wp + (g.kw - 1)) * C + c;
    scalar_t* __restrict dst = &res.at(b, c, i, 0);
    const int64_t sw = res.sw;
    if (sw == 1)
      for (int64_t j = 0; j < W; ++j) dst[j] = static_cast<scalar_t>(s[j * C]);
    else
      for (int64_t j = 0; j < W; ++j) dst[j * sw] = static_cast<scalar_t>(s[j * C]);
  };
  // Writes the nr solved rows from canonical row i0 of the padded image xp to the output.
  auto store_band = [&](int64_t b, const acc_t* xp, int64_t i0, int64_t nr) {
    for (int64_t r = 0; r < nr; ++r)
      for (int64_t c = 0; c < C; ++c) store_channel_row(b, xp, i0 + r, c);
  };
  // A whole image of y, staged pixel-major: stage[(i*W + j)*C + c] (channel planes read in order).
  auto stage_image = [&](acc_t* stage, int64_t b) {
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < H; ++i) stage_channel_row(stage + i * W * C, b, i, c);
  };
  // A whole solved image (its padded scratch xp) to the output.
  auto store_image = [&](int64_t b, const acc_t* xp) {
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < H; ++i) store_channel_row(b, xp, i, c);
  };
  // Images solved the same pixel of several at a time (C >= 2, and their scratch small enough
  // to stay in cache: kGroupMax padded images and their staged right-hand sides); otherwise
  // one image at a time, band by band, with rows staged as they are needed.
  const bool group_images = C >= 2 && 2 * kGroupMax * image * int64_t(sizeof(acc_t)) <= (int64_t(1) << 20);
  // Scratch of one thread: the staged rows of a band and the sums of a group.
  const int64_t stage_len = kGroupMax * W * C + kSumsPad, sums_len = kGroupMax * (C + kSumsPad);

  // Below ~1e6 multiply-adds in all, or with rows too short for two threads to work on one
  // band pair at once, synchronising threads costs more than it saves (measured on 2 cores,
  // k=3: 1×12×16×16 and 1×4×16×16 lose, 1×4×64×64 (6e5) breaks even, 1×12×32×32 (1.3e6)
  // gains 1.05-1.1x, 1×12×64×64 1.3x).
  const double work = double(B) * H * W * C * C * g.kh * g.kw;
  // Columns a thread solves before it publishes them to the band below: at least a few cache
  // lines of the scratch row, so two threads rarely touch the same line. Spans then start at
  // multiples of `step` and end at one or at W; for C = 1, kPublishValues is a multiple of
  // every tile width, so a short tile (which reads past its end) only ends a row, under
  // complete rows.
  const int64_t step = std::max<int64_t>(16, kPublishValues / C);
  if (B >= at::get_num_threads() || bands < 2 || W < 2 * step || work < 1e6) {
    // Enough images for every thread (or too little work): each thread solves its images in
    // raster order in cache-resident scratch images whose zero padding is reused -- groups of
    // up to kGroupMax images pixel by pixel together, a lone image band by band.
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<acc_t> xp_buf((group_images ? kGroupMax : 1) * image + kSumsPad, acc_t(0)),
          sums(sums_len);
      if (group_images) {
        // whole images staged and stored plane by plane: y and x are read and written
        // sequentially (row by row, the C channel planes of a group were 4 * C streams at
        // once, and the solve ran ~1.7x slower on a cold y)
        std::vector<acc_t> stage(kGroupMax * H * W * C + kSumsPad, acc_t(0));
        acc_t* xps[kGroupMax];
        for (int l = 0; l < kGroupMax; ++l) xps[l] = xp_buf.data() + l * image;
        const acc_t* rows[kGroupMax];
        for (int64_t b = b0; b < b1;) {
          const int n = int(std::min<int64_t>(kGroupMax, b1 - b));
          for (int l = 0; l < n; ++l) stage_image(stage.data() + l * H * W * C, b + l);
          if (n >= 2) {
            for (int64_t i = 0; i < H; ++i) {
              for (int l = 0; l < n; ++l) rows[l] = stage.data() + (l * H + i) * W * C;
              images_row_any(g, packed, xps, rows, sums.data(), i, n);
            }
          } else {  // a lone image: band by band
            for (int64_t i0 = 0; i0 < H; i0 += NR) {
              const int64_t nr = std::min(NR, H - i0);
              band_steps_any(g, packed, xps[0], stage.data() + i0 * W * C, sums.data(), i0, nr, 0,
                             W + nr - 1);
            }
          }
          for (int l = 0; l < n; ++l) store_image(b + l, xps[l]);
          b += n;
        }
        return;
      }
      std::vector<acc_t> stage(stage_len, acc_t(0));
      for (int64_t b = b0; b < b1; ++b) {
        for (int64_t i0 = 0; i0 < H; i0 += NR) {
          const int64_t nr = std::min(NR, H - i0);
          stage_band(stage.data(), b, i0, nr);
          band_steps_any(g, packed, xp_buf.data(), stage.data(), sums.data(), i0, nr, 0, W + nr - 1);
          store_band(b, xp_buf.data(), i0, nr);
        }
      }
    });
    return;
  }
  // Few images: a pipelined wavefront over bands of rows. Threads take bands (of all images) in
  // order from a shared counter; step t of a band (its first row at column t) may run once the
  // band above has solved its last row through column t (the rows above it then are too), so
  // the pixels being solved at any moment lie along an anti-diagonal front, every thread busy
  // after a start-up of a few pixels. Bands are handed out in increasing order, so the band a
  // thread waits on is always held by a running thread: no deadlock, also when the pool runs
  // fewer threads than asked (it then runs in order).
  std::vector<acc_t> xp_all(B * image + kSumsPad, acc_t(0));
  const int64_t units = B * bands;
  // done[q]: columns of band q's last row solved (what the band below may read)
  std::unique_ptr<std::atomic<int64_t>[]> done(new std::atomic<int64_t>[units]);
  for (int64_t q = 0; q < units; ++q) done[q].store(0, std::memory_order_relaxed);
  std::atomic<int64_t> next_band{0};
  // A thread starts once `lag` more columns above are solved, and runs at most `step` steps
  // (as many as are ready) before it publishes them: bands then advance together, one step
  // apart. (Publishing only whole bands would serialise them.)
  const int64_t lag = 4;
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    std::vector<acc_t> stage(stage_len, acc_t(0)), sums(sums_len);
    for (int64_t q = next_band.fetch_add(1); q < units; q = next_band.fetch_add(1)) {
      const int64_t b = q / bands, band = q % bands, i0 = band * NR, nr = std::min(NR, H - i0);
      const int64_t steps = W + nr - 1;
      acc_t* xp = xp_all.data() + b * image;
      stage_band(stage.data(), b, i0, nr);
      for (int64_t t = 0; t < steps;) {
        int64_t limit = steps;  // steps this band may run: the first row's column stays < ready
        if (band > 0 && t < W) {
          // Wait for a run of `lag` solved columns above: fewer hand-offs of the cache lines
          // both threads touch than pixel-by-pixel following.
          const int64_t want = std::min(W, t + lag);
          int64_t ready;
          for (int spins = 0; (ready = done[q - 1].load(std::memory_order_acquire)) < want; ++spins)
            if (spins > 64) std::this_thread::yield();
#ifndef INVCONV_PLANT_READ_AHEAD
          limit = ready >= W ? steps : ready;
#else  // test-only (cpp/testing/): one column past what the band above has published
          limit = ready >= W ? steps : ready + 1;
#endif
        }
        const int64_t end = std::min(limit, t + step);
#ifndef INVCONV_TEST_STALLED_PUBLISH_US
        band_steps_any(g, packed, xp, stage.data(), sums.data(), i0, nr, t, end);
        t = end;
        done[q].store(std::max<int64_t>(0, t - (nr - 1)), std::memory_order_release);
#else
        // test-only (cpp/testing/): publish after every step (a finer, equally legal hand-off);
        // even bands stall after each publish and odd ones do not, so an odd band finds the
        // band above stopped exactly at its published edge and runs its steps at once: a
        // consumer that reads past that edge reads unsolved values, on every run, on any
        // machine. Use C >= 2 (the C = 1 tiles want whole spans).
        for (; t < end; ++t) {
          band_steps_any(g, packed, xp, stage.data(), sums.data(), i0, nr, t, t + 1);
          done[q].store(std::max<int64_t>(0, t + 1 - (nr - 1)), std::memory_order_release);
          if (band % 2 == 0)
            std::this_thread::sleep_for(std::chrono::microseconds(INVCONV_TEST_STALLED_PUBLISH_US));
        }
#endif
      }
      store_band(b, xp, i0, nr);
    }
  });
}

at::Tensor inv_conv2d_cpu(const at::Tensor& y, const at::Tensor& weight, c10::string_view order,
                          bool transpose) {
  check_operands(y, weight, "y");
  TORCH_CHECK_VALUE(y.device().is_cpu(), "invconv_core: the CPU kernel got y on ", y.device());
  const Order o = parse_order(std::string(order));
  at::Tensor out = at::empty(y.sizes(), y.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  const at::ScalarType acc = y.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const SolvePlan plan = make_plan(weight, o, transpose, y.size(2), y.size(3), acc);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "inv_conv2d_cpu",
                                  [&] { solve_cpu<scalar_t>(y, plan, out); });
  return out;
}

}  // namespace

#ifndef INVCONV_TEST_LIBRARY
// The instruction set the CPU kernels run with in this process (build_info()["cpu_isa"]).
const char* cpu_kernel_isa() { return use_v3() ? "x86-64-v3" : "baseline"; }

TORCH_LIBRARY_IMPL(invconv_core, CPU, m) { m.impl("inv_conv2d", &inv_conv2d_cpu); }
#else
// test-only builds of this kernel (cpp/testing/) register it under their own namespace
#define INVCONV_TEST_LIBRARY_DEF(ns, m) TORCH_LIBRARY(ns, m)  // expands ns before pasting
#define INVCONV_TEST_LIBRARY_IMPL(ns, m) TORCH_LIBRARY_IMPL(ns, CPU, m)
INVCONV_TEST_LIBRARY_DEF(INVCONV_TEST_LIBRARY, m) {
  m.def("inv_conv2d(Tensor y, Tensor weight, str order=\"TL\", bool transpose=False) -> Tensor");
}
INVCONV_TEST_LIBRARY_IMPL(INVCONV_TEST_LIBRARY, m) { m.impl("inv_conv2d", &inv_conv2d_cpu); }
#endif

}  // namespace invconv_core
