// CPU kernel of invconv_core::inv_conv2d: solves T x = y (or T^T x = y) for a causal
// convolution T by substitution in wavefront order.
//
// Canonical problem (see solve_plan.h): TL order, pixel (i, j) reads pixels (i', j') with
// i' <= i, j' <= j. Pixel (i, j) needs the solved values of earlier pixels only, so
//  * raster order (row by row) is a valid schedule for one image -- cache friendly, used when
//    the batch alone keeps every thread busy (parallel over the batch);
//  * all pixels of one anti-diagonal i + j = d are independent -- used to parallelise over
//    pixels when the batch is smaller than the thread count (H + W - 1 dependent steps), as a
//    pipelined wavefront: threads solve successive rows, each a few pixels behind the one above.
// The current tap is folded in beforehand (solve_plan.h): per pixel the solver evaluates
// x_p = M y_p - sum_t W'_t x_{p - t} (M = L^{-1}) in one vector loop, no substitution chain.
//
// The solved image lives in a zero-padded channels-last scratch image (kh-1 rows on top,
// kw-1 columns on the left) in the accumulation dtype, one per thread: the kh*kw taps of a
// pixel then read, for each kernel row, one contiguous run of kw*C values, with no bounds
// tests, from a buffer that stays in cache.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
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

struct Geometry {
  int64_t C, H, W, kh, kw;
  int64_t Hp, Wp;  // padded scratch size
};

// SIMD lanes through GCC/Clang vector extensions: one source, compiled to AVX2+FMA in the
// x86-64-v3 clone and to SSE2 in the baseline clone below. `Lanes<T, 1>` is the plain scalar.
template <typename T, int N>
struct Lanes {
  typedef T type __attribute__((vector_size(N * sizeof(T)), aligned(sizeof(T))));
  static type load(const T* p) { return *reinterpret_cast<const type*>(p); }
  static type splat(T v) { return type{} + v; }
  static T lane(const type& x, int k) { return x[k]; }
};
template <typename T>
struct Lanes<T, 1> {
  typedef T type;
  static type load(const T* p) { return *p; }
  static type splat(T v) { return v; }
  static T lane(const type& x, int) { return x; }
};

// acc[u][nb] += sum_k w[k*C + nb*V + lanes] * src[k] over k < n, the k loop unrolled U ways
// into separate accumulators so the FMAs do not wait on each other.
template <typename acc_t, int V, int NB, int U>
__attribute__((always_inline)) inline void accumulate(typename Lanes<acc_t, V>::type (&acc)[U][NB],
                                                      const acc_t* __restrict src,
                                                      const acc_t* __restrict w, int64_t n,
                                                      int64_t C) {
  using L = Lanes<acc_t, V>;
  using vec = typename L::type;
  int64_t k = 0;
  for (; k + U <= n; k += U) {
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u) {
      const vec s = L::splat(src[k + u]);
      const acc_t* wk = w + (k + u) * C;
#pragma GCC unroll 8
      for (int nb = 0; nb < NB; ++nb) acc[u][nb] += L::load(wk + nb * V) * s;
    }
  }
  for (; k < n; ++k) {
    const vec s = L::splat(src[k]);
    const acc_t* wk = w + k * C;
#pragma GCC unroll 8
    for (int nb = 0; nb < NB; ++nb) acc[0][nb] += L::load(wk + nb * V) * s;
  }
}

// x[c0 .. c0 + NB*V) of pixel p = (i, j) of the canonical TL problem:
//     x_p = M y_p - sum_{taps t != current} W'_t x_{p - t}
// accumulated as one negated sum over "segments" that share the vector loop: the raw
// right-hand side y_p against -M^T, then each kernel row's contiguous run of solved pixels in
// xp against its packed taps. Channels are vectorised V at a time (NB vectors). Lanes past C
// read weights of the next row (the packed weights carry a padding tail) and are discarded.
template <typename acc_t, int V, int NB, int U>
__attribute__((always_inline)) inline void pixel_block(const Geometry& g,
                                                       const acc_t* __restrict taps,
                                                       const acc_t* __restrict neg_mt,
                                                       const acc_t* __restrict xp,
                                                       const acc_t* __restrict y_raw, int64_t i,
                                                       int64_t j, int64_t c0,
                                                       acc_t* __restrict out) {
  using L = Lanes<acc_t, V>;
  using vec = typename L::type;
  const int64_t C = g.C;
  const int64_t row_len = g.kw * C;  // values one kernel row reads, contiguous in xp
  vec acc[U][NB];
  for (int u = 0; u < U; ++u)
    for (int nb = 0; nb < NB; ++nb) acc[u][nb] = L::splat(0);
  accumulate<acc_t, V, NB, U>(acc, y_raw, neg_mt + c0, C, C);
  for (int64_t a = 0; a < g.kh; ++a) {
    // Kernel row a reads padded row i + a, columns j .. j + kw - 1; the last kernel row stops
    // before the current pixel.
    const acc_t* __restrict src = xp + ((i + a) * g.Wp + j) * C;
    const int64_t n = (a == g.kh - 1) ? row_len - C : row_len;
    accumulate<acc_t, V, NB, U>(acc, src, taps + a * row_len * C + c0, n, C);
  }
  for (int nb = 0; nb < NB; ++nb) {
    vec t = acc[0][nb];
    for (int u = 1; u < U; ++u) t += acc[u][nb];
    for (int v = 0; v < V; ++v) out[nb * V + v] = -L::lane(t, v);
  }
}

// Vector width (lanes) for C >= 2 channels: a full 32-byte vector when C fills at least half
// of one (C = 1 takes its own path, solve_span_c1).
template <typename acc_t>
constexpr int lanes_for(int64_t C) {
  return C <= int64_t(16 / sizeof(acc_t)) ? int(16 / sizeof(acc_t)) : int(32 / sizeof(acc_t));
}

template <typename acc_t, int V>
__attribute__((always_inline)) inline void pixel_values(const Geometry& g, const acc_t* taps,
                                                        const acc_t* neg_mt, const acc_t* xp,
                                                        const acc_t* y_raw, int64_t i, int64_t j,
                                                        acc_t* sums) {
  for (int64_t c0 = 0; c0 < g.C;) {
    const int64_t blocks = (g.C - c0 + V - 1) / V;
    if (blocks >= 4) {
      pixel_block<acc_t, V, 4, 2>(g, taps, neg_mt, xp, y_raw, i, j, c0, sums + c0);
      c0 += 4 * V;
    } else if (blocks == 3) {
      pixel_block<acc_t, V, 3, 2>(g, taps, neg_mt, xp, y_raw, i, j, c0, sums + c0);
      c0 += 3 * V;
    } else if (blocks == 2) {
      pixel_block<acc_t, V, 2, 4>(g, taps, neg_mt, xp, y_raw, i, j, c0, sums + c0);
      c0 += 2 * V;
    } else {
      pixel_block<acc_t, V, 1, 4>(g, taps, neg_mt, xp, y_raw, i, j, c0, sums + c0);
      c0 += V;
    }
  }
}

// The packed weights one solve reads (solve_plan.h), each with a padding tail for the lanes.
template <typename acc_t>
struct Packed {
  const acc_t* taps;    // [kh][kw][C'][C]
  const acc_t* neg_mt;  // [C'][C] = -M^T
};

// Solves pixels (i, j0) .. (i, j1-1) of one image, left to right. Pixel j's raw right-hand side
// y_p (input channel order) is y_raw[(j - j0) * C .. + C); `sums` is scratch of C + kSumsPad
// values. The solution goes to the padded image `xp`.
template <typename acc_t, int V>
__attribute__((always_inline)) inline void solve_span_v(const Geometry& g, Packed<acc_t> w,
                                                        acc_t* __restrict xp,
                                                        const acc_t* __restrict y_raw,
                                                        acc_t* __restrict sums, int64_t i,
                                                        int64_t j0, int64_t j1) {
  const int64_t C = g.C;
  for (int64_t j = j0; j < j1; ++j) {
    pixel_values<acc_t, V>(g, w.taps, w.neg_mt, xp, y_raw + (j - j0) * C, i, j, sums);
    // via `sums`: the vector lanes past C must not spill into the next pixel of xp
    acc_t* __restrict dst = xp + ((i + g.kh - 1) * g.Wp + (j + g.kw - 1)) * C;
    for (int64_t c = 0; c < C; ++c) dst[c] = sums[c];
  }
}

// One channel (C = 1): vectorising over channels would leave one lane busy, so the row is split
// instead. The taps on the rows above read pixels solved before this row: for NB*V pixels at
// once they are a plain correlation, vectorised over the pixels (lane l = pixel j + l). Only
// the taps left of the pixel on its own row form a recurrence, run pixel by pixel after, for
// the first n pixels of the tile. Every pixel sits in a vector lane and sums, in one fixed
// order, -M y_p, kernel rows 0 .. kh-2, then its own row left to right -- so its value does not
// depend on where its tile or span starts (pipelined schedule = raster = a cropped image).
// (A scalar tail would not do: the compiler may fuse the multiply-adds of scalar and vector
// code differently; a test solves cropped images to check.) Lanes past n read up to V - 1
// values past the row's end: the staged right-hand side and the scratch images carry kSumsPad
// values of slack, and the rows read there are complete (a short tile is only ever the last
// of a row -- see `step` in solve_cpu).
template <typename acc_t, int V, int NB>
__attribute__((always_inline)) inline void c1_tile(const Geometry& g, Packed<acc_t> w,
                                                   acc_t* __restrict xp,
                                                   const acc_t* __restrict y_raw, int64_t i,
                                                   int64_t j, int64_t n) {
  using L = Lanes<acc_t, V>;
  using vec = typename L::type;
  vec acc[NB];
  const vec neg_m = L::splat(w.neg_mt[0]);
#pragma GCC unroll 8
  for (int nb = 0; nb < NB; ++nb) {
    acc[nb] = neg_m * L::load(y_raw + nb * V);
    // Opaque to the optimiser: otherwise `acc + x*s` below adds two products, and FMA
    // contraction may fuse either -- not necessarily the same one in every instantiation.
    __asm__("" : "+m"(acc[nb]));
  }
  for (int64_t a = 0; a + 1 < g.kh; ++a) {
    const acc_t* __restrict src = xp + (i + a) * g.Wp + j;
    const acc_t* __restrict wa = w.taps + a * g.kw;
    for (int64_t b = 0; b < g.kw; ++b) {
      const vec s = L::splat(wa[b]);
#pragma GCC unroll 8
      for (int nb = 0; nb < NB; ++nb) acc[nb] += L::load(src + b + nb * V) * s;
    }
  }
  acc_t partial[NB * V];
#pragma GCC unroll 8
  for (int nb = 0; nb < NB; ++nb)
    for (int v = 0; v < V; ++v) partial[nb * V + v] = L::lane(acc[nb], v);
  // the recurrence along the row: pixel j + t reads the kw - 1 pixels left of it
  acc_t* __restrict row = xp + (i + g.kh - 1) * g.Wp + j;
  const acc_t* __restrict wc = w.taps + (g.kh - 1) * g.kw;
  for (int64_t t = 0; t < n; ++t) {
    acc_t s = partial[t];
    for (int64_t b = 0; b + 1 < g.kw; ++b) s += wc[b] * row[t + b];
    row[t + g.kw - 1] = -s;
  }
}

template <typename acc_t, int V>
__attribute__((always_inline)) inline void solve_span_c1(const Geometry& g, Packed<acc_t> w,
                                                         acc_t* xp, const acc_t* y_raw,
                                                         int64_t i, int64_t j0, int64_t j1) {
  int64_t j = j0;
  for (; j + 4 * V <= j1; j += 4 * V) c1_tile<acc_t, V, 4>(g, w, xp, y_raw + (j - j0), i, j, 4 * V);
  for (; j < j1; j += V)
    c1_tile<acc_t, V, 1>(g, w, xp, y_raw + (j - j0), i, j, std::min<int64_t>(V, j1 - j));
}

template <typename acc_t>
__attribute__((always_inline)) inline void solve_span(const Geometry& g, Packed<acc_t> w,
                                                      acc_t* xp, const acc_t* y_raw, acc_t* sums,
                                                      int64_t i, int64_t j0, int64_t j1) {
  constexpr int wide = 32 / sizeof(acc_t), narrow = 16 / sizeof(acc_t);
  const int v = lanes_for<acc_t>(g.C);
  if (g.C == 1)
    solve_span_c1<acc_t, wide>(g, w, xp, y_raw, i, j0, j1);
  else if (v == wide)
    solve_span_v<acc_t, wide>(g, w, xp, y_raw, sums, i, j0, j1);
  else
    solve_span_v<acc_t, narrow>(g, w, xp, y_raw, sums, i, j0, j1);
}

// The two instantiations are compiled twice where the toolchain allows: for x86-64-v3
// (AVX2 + FMA) and for the baseline ISA, picked at load time, so one wheel is fast on current
// CPUs and still runs on old ones.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define INVCONV_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define INVCONV_MULTIVERSION
#endif

INVCONV_MULTIVERSION
void solve_span_f32(const Geometry& g, Packed<float> w, float* xp, const float* y_raw,
                    float* sums, int64_t i, int64_t j0, int64_t j1) {
  solve_span<float>(g, w, xp, y_raw, sums, i, j0, j1);
}

INVCONV_MULTIVERSION
void solve_span_f64(const Geometry& g, Packed<double> w, double* xp, const double* y_raw,
                    double* sums, int64_t i, int64_t j0, int64_t j1) {
  solve_span<double>(g, w, xp, y_raw, sums, i, j0, j1);
}

inline void solve_span_any(const Geometry& g, Packed<float> w, float* xp, const float* y,
                           float* s, int64_t i, int64_t j0, int64_t j1) {
  solve_span_f32(g, w, xp, y, s, i, j0, j1);
}
inline void solve_span_any(const Geometry& g, Packed<double> w, double* xp, const double* y,
                           double* s, int64_t i, int64_t j0, int64_t j1) {
  solve_span_f64(g, w, xp, y, s, i, j0, j1);
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
  const FlippedView<const scalar_t> in(y, plan, /*reverse_channels=*/false);  // M reorders
  // The vector loops read up to one group of lanes (< kSumsPad values) past the last weight:
  // the plan's buffers carry kPlanTail zeros there.
  static_assert(kSumsPad <= kPlanTail, "the plan's tail must cover the vector lanes");
  const Packed<acc_t> packed{plan.taps.const_data_ptr<acc_t>(), plan.neg_rhs_t.const_data_ptr<acc_t>()};
  const FlippedView<scalar_t> res(out, plan, plan.reverse_channels);
  const int64_t image = g.Hp * g.Wp * C;
  // Stages y of canonical row i of image b, pixel-major: stage[j*C + c].
  auto stage_rhs = [&](acc_t* stage, int64_t b, int64_t i) {
    for (int64_t c = 0; c < C; ++c)  // channel-major: the reads run along the rows of y
      for (int64_t j = 0; j < W; ++j) stage[j * C + c] = static_cast<acc_t>(in.at(b, c, i, j));
  };
  // Writes canonical row i of the solved padded image to the output (channel-major order, so
  // the NCHW writes run along rows).
  auto store_row = [&](int64_t b, const acc_t* xp, int64_t i) {
    const acc_t* src = xp + ((i + g.kh - 1) * g.Wp + (g.kw - 1)) * C;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t j = 0; j < W; ++j) res.at(b, c, i, j) = static_cast<scalar_t>(src[j * C + c]);
  };

  // Below ~1e6 multiply-adds in all, or with rows too short for two threads to work on one
  // row pair at once, synchronising threads costs more than it saves (measured on 2 cores,
  // k=3: 1×12×16×16 and 1×4×16×16 lose, 1×4×64×64 (6e5) breaks even, 1×12×32×32 (1.3e6)
  // gains 1.05-1.1x, 1×12×64×64 1.3x).
  const double work = double(B) * H * W * C * C * g.kh * g.kw;
  // Columns a thread solves before it publishes them to the row below: at least a few cache
  // lines of the scratch row, so two threads rarely touch the same line. Spans then start at
  // multiples of `step` and end at one or at W; for C = 1, kPublishValues is a multiple of
  // every tile width, so a short tile (which reads past its end) only ends a row, under
  // complete rows.
  const int64_t step = std::max<int64_t>(16, kPublishValues / C);
  if (B >= at::get_num_threads() || H == 1 || W < 2 * step || work < 1e6) {
    // Enough images for every thread (or too little work): each thread solves whole images in
    // raster order in one cache-resident scratch image whose zero padding is reused.
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<acc_t> xp(image + kSumsPad, acc_t(0)), stage(W * C + kSumsPad, acc_t(0)),
          sums(C + kSumsPad);
      for (int64_t b = b0; b < b1; ++b) {
        for (int64_t i = 0; i < H; ++i) {
          stage_rhs(stage.data(), b, i);
          solve_span_any(g, packed, xp.data(), stage.data(), sums.data(), i, 0, W);
          store_row(b, xp.data(), i);
        }
      }
    });
    return;
  }
  // Few images: a pipelined wavefront over rows. Threads take rows (of all images) in order
  // from a shared counter; pixel (i, j) may start once row i-1 is solved through column j (the
  // rows above then are too), so the pixels being solved at any moment lie along an
  // anti-diagonal front, every thread busy after a start-up of a few pixels. Rows are handed
  // out in increasing order, so the row a thread waits on is always held by a running thread:
  // no deadlock, also when the pool runs fewer threads than asked (it then runs in order).
  std::vector<acc_t> xp_all(B * image + kSumsPad, acc_t(0));
  const int64_t rows = B * H;
  std::unique_ptr<std::atomic<int64_t>[]> done(new std::atomic<int64_t>[rows]);
  for (int64_t r = 0; r < rows; ++r) done[r].store(0, std::memory_order_relaxed);
  std::atomic<int64_t> next_row{0};
  // A thread starts once `lag` more columns above are solved, and solves at most `step` columns
  // (as many as are ready) before it publishes them: rows then advance together, one step
  // apart. (Publishing only whole rows would serialise the rows.)
  const int64_t lag = 4;
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    std::vector<acc_t> stage(W * C + kSumsPad, acc_t(0)), sums(C + kSumsPad);
    for (int64_t r = next_row.fetch_add(1); r < rows; r = next_row.fetch_add(1)) {
      const int64_t b = r / H, i = r % H;
      acc_t* xp = xp_all.data() + b * image;
      stage_rhs(stage.data(), b, i);
      for (int64_t j = 0; j < W;) {
        // Wait for a run of `lag` solved columns above: fewer hand-offs of the cache lines
        // both threads touch than pixel-by-pixel following.
        const int64_t want = std::min(W, j + lag);
        int64_t ready = W;  // columns of row i-1 already solved
        if (i > 0) {
          for (int spins = 0; (ready = done[r - 1].load(std::memory_order_acquire)) < want; ++spins)
            if (spins > 64) std::this_thread::yield();
        }
#ifndef INVCONV_PLANT_READ_AHEAD
        const int64_t end = std::min(ready, j + step);
#else  // test-only (cpp/testing/): one column past what the row above has published
        const int64_t end = std::min(std::min(W, ready + 1), j + step);
#endif
#ifndef INVCONV_TEST_STALLED_PUBLISH_US
        solve_span_any(g, packed, xp, stage.data() + j * C, sums.data(), i, j, end);
        j = end;
        done[r].store(j, std::memory_order_release);
#else
        // test-only (cpp/testing/): publish every column (a finer, equally legal hand-off); even
        // rows stall after each publish and odd rows do not, so an odd row finds the row above
        // stopped exactly at its published edge and solves its span at once: a consumer that
        // reads past that edge reads unsolved values, on every run, on any machine.
        // Use C >= 2 (the C = 1 tiles want whole spans).
        for (; j < end; ++j) {
          solve_span_any(g, packed, xp, stage.data() + j * C, sums.data(), i, j, j + 1);
          done[r].store(j + 1, std::memory_order_release);
          if (i % 2 == 0)
            std::this_thread::sleep_for(std::chrono::microseconds(INVCONV_TEST_STALLED_PUBLISH_US));
        }
#endif
      }
      store_row(b, xp, i);
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
