// The SIMD kernels of the CPU solve (wavefront_solve_cpu.cpp), included there once per
// instruction set, each time inside its own namespace and target region -- no include guard.
// Needs Geometry, kSumsPad, kPublishValues and kGroupMax from the including file, and <cstring>.

// SIMD lanes through GCC/Clang vector extensions: one source, compiled to AVX2+FMA for
// x86-64-v3 and to SSE2 for the baseline.
template <typename T, int N>
struct Lanes {
  typedef T type __attribute__((vector_size(N * sizeof(T)), aligned(sizeof(T))));
  static type load(const T* p) { return *reinterpret_cast<const type*>(p); }
  // v - 0 is v for every v (v + 0 is not, for v = -0): GCC emits one broadcast -- from memory,
  // a load -- where `type{} + v` costs a scalar add on the FMA pipes besides.
  static type splat(T v) { return v - type{}; }
  static T lane(const type& x, int k) { return x[k]; }
};

// The packed weights one solve reads (solve_plan.h), each with a padding tail for the lanes.
template <typename acc_t>
struct Packed {
  const acc_t* taps;    // [kh][kw][C'][C]
  const acc_t* neg_mt;  // [C'][C] = -M^T
};

// One pixel of a group solved together (C >= 2). The pixels of a group never read each other:
// either the same pixel of different images, or pixels of successive rows of one image, each
// one column behind the row above (pixel (i, j) reads rows <= i and columns <= j only, so
// (i + 1, j - 1) does not need (i, j)).
template <typename acc_t>
struct Pixel {
  acc_t* field;        // its padded scratch image at (i, j): the top-left of what its taps read
  const acc_t* rhs;    // its raw right-hand side y_p, C values in the input's channel order
  acc_t* sums;         // C + kSumsPad values of scratch for the result
};

// The vectors per channel chunk for a group of NL pixels: NL * NB accumulators (at most 9, in
// AVX2's 16 registers beside the NB tap vectors and a broadcast) -- enough independent FMA
// chains to hide their latency. (4 pixels x 3 vectors = 12 accumulators was 13% slower at
// 100x48x4x4 and 100x24x8x8, same-process A/B.)
constexpr int max_blocks(int NL) { return NL <= 2 ? 4 : NL == 3 ? 3 : 2; }

// acc[l][nb] += sum_{k < n} w[k*C + nb*V + lanes] * src[l][k]: one "segment" of the pixels'
// sums. Each tap vector is loaded once for the NL pixels -- the point of a group: a tap row is
// reused across images or rows instead of being streamed once per pixel.
//
// Every channel of every pixel is ONE chain of multiply-adds in k order, the same whatever NL,
// NB or the vector width, so a pixel's value does not depend on how it was grouped (schedule,
// batch size, thread count, a crop of the image); the tests check it bit for bit. (Partial sums
// would need the same split in groups of every size; the group's pixels supply the independent
// chains instead.)
//
// MASKED (the right-hand side's diagonal band, only for groups holding inf/NaN): lane
// (nb, v) takes the product of row k only if lane0 + nb*V + v >= k -- M is lower-triangular,
// and a lane above the diagonal would add 0 * y_p[k], which is NaN when y_p[k] is not finite
// (it must stay out of the channels that do not depend on it). A lane that takes a product
// takes it as the unmasked loop does (acc + w*s, the same contraction), so which of the two
// serves a (channel, k) pair -- that depends on the chunking -- changes no bit.
template <typename acc_t, int V, int NB, int NL, bool MASKED = false>
__attribute__((always_inline)) inline void segment(typename Lanes<acc_t, V>::type (&acc)[NL][NB],
                                                   const acc_t* const (&src)[NL],
                                                   const acc_t* __restrict w, int64_t n,
                                                   int64_t C, int64_t lane0 = 0) {
  using L = Lanes<acc_t, V>;
  using vec = typename L::type;
  using index_t = typename std::conditional<sizeof(acc_t) == 4, int32_t, int64_t>::type;
  using ivec = typename Lanes<index_t, V>::type;
  // Each lane's channel, written whole from a scalar array: setting the vector element by
  // element (lane[nb][v] = ...) reads the rest of it first, which GCC 12 reported at every
  // MASKED instantiation as -Wmaybe-uninitialized (benign: every element is set before the
  // loop reads any; the same code either way)
  ivec lane[NB];
  if constexpr (MASKED)
    for (int nb = 0; nb < NB; ++nb) {
      index_t channels[V];
      for (int v = 0; v < V; ++v) channels[v] = static_cast<index_t>(lane0 + nb * V + v);
      std::memcpy(&lane[nb], channels, sizeof(ivec));
    }
#pragma GCC unroll 2
  for (int64_t k = 0; k < n; ++k) {
    vec wk[NB];
#pragma GCC unroll 8
    for (int nb = 0; nb < NB; ++nb) wk[nb] = L::load(w + k * C + nb * V);
#pragma GCC unroll 8
    for (int l = 0; l < NL; ++l) {
      const vec s = L::splat(src[l][k]);
#pragma GCC unroll 8
      for (int nb = 0; nb < NB; ++nb) {
        if constexpr (MASKED) {
          const vec sum = acc[l][nb] + wk[nb] * s;
          acc[l][nb] = lane[nb] >= Lanes<index_t, V>::splat(static_cast<index_t>(k)) ? sum : acc[l][nb];
        } else {
          acc[l][nb] += wk[nb] * s;
        }
      }
    }
  }
}

// The kernel rows and columns a group needs: taps above row a0 or left of column b0 read only
// the scratch image's zero padding for every pixel of the group (near the top and left edges),
// and are skipped. Skipping changes no bit: an accumulator starts at +0 and is never -0, and
// adding a zero product (finite weights) leaves any other value unchanged -- so a pixel's value
// is the same whichever group, with whichever reach, it is solved in. (Only a singular weight,
// whose taps hold inf, turns a skipped 0 * inf into NaN; its solution is inf/NaN anyway.)
struct Reach {
  int64_t a0, b0;
};

// Channels [c0, c0 + NB*V) of NL pixels of the canonical TL problem:
//     x_p = M y_p - sum_{taps t != current} W'_t x_{p - t}
// accumulated as one negated sum over segments: the raw right-hand side y_p against -M^T (its
// lower triangle only: channels k <= c0 for every lane, then the lanes' diagonal band), then
// each kernel row's contiguous run of kw*C solved values against its packed taps (the last
// kernel row stops before the current pixel). Lanes past C read the packed weights' padding
// tail and land in the tail of `sums`.
template <typename acc_t, int V, int NB, int NL, bool MASKED>
__attribute__((always_inline)) inline void group_block(const Geometry& g, Packed<acc_t> w,
                                                       const Pixel<acc_t>* px, Reach reach,
                                                       int64_t c0) {
  using L = Lanes<acc_t, V>;
  using vec = typename L::type;
  const int64_t C = g.C, row_len = g.kw * C;
  vec acc[NL][NB];
  const acc_t* src[NL];
  for (int l = 0; l < NL; ++l) {
    for (int nb = 0; nb < NB; ++nb) acc[l][nb] = L::splat(0);
    src[l] = px[l].rhs;
  }
  // M is lower-triangular: the chunk's channels c < c_end read y_p[k] for k < c_end only
  const int64_t c_end = std::min<int64_t>(c0 + NB * V, C);
  if (!MASKED) {
    // finite right-hand sides: the zeros of M above the diagonal add +-0, no bit changes
    segment<acc_t, V, NB, NL>(acc, src, w.neg_mt + c0, c_end, C);
  } else {
    // 0 * inf or 0 * NaN would not be 0: lanes above the diagonal must not take them
    const int64_t every_lane = std::min<int64_t>(c0 + 1, C);  // k <= c0: every lane's c >= k
    segment<acc_t, V, NB, NL>(acc, src, w.neg_mt + c0, every_lane, C);
    const acc_t* band[NL];  // rows k >= every_lane: lane c takes row k iff c >= k
    for (int l = 0; l < NL; ++l) band[l] = src[l] + every_lane;
    segment<acc_t, V, NB, NL, true>(acc, band, w.neg_mt + c0 + every_lane * C, c_end - every_lane, C,
                                    c0 - every_lane);
  }
  const int64_t skip = reach.b0 * C;  // values of each kernel row that read only padding
  for (int64_t a = reach.a0; a < g.kh; ++a) {
    for (int l = 0; l < NL; ++l) src[l] = px[l].field + a * g.Wp * C + skip;
    const int64_t n = (a == g.kh - 1) ? row_len - C : row_len;
    segment<acc_t, V, NB, NL>(acc, src, w.taps + (a * row_len + skip) * C + c0, n - skip, C);
  }
  for (int l = 0; l < NL; ++l)
    for (int nb = 0; nb < NB; ++nb)
      for (int v = 0; v < V; ++v) px[l].sums[c0 + nb * V + v] = -L::lane(acc[l][nb], v);
}

// The channel chunks of one group (see solve_group_n).
template <typename acc_t, int V, int NBMAX, int NL, bool MASKED>
__attribute__((always_inline)) inline void solve_chunks(const Geometry& g, Packed<acc_t> w,
                                                        const Pixel<acc_t>* px, Reach reach) {
  for (int64_t c0 = 0; c0 < g.C;) {
    const int64_t blocks = std::min<int64_t>((g.C - c0 + V - 1) / V, NBMAX);
    if (NBMAX >= 4 && blocks == 4) {
      group_block<acc_t, V, (NBMAX >= 4 ? 4 : 1), NL, MASKED>(g, w, px, reach, c0);
    } else if (NBMAX >= 3 && blocks == 3) {
      group_block<acc_t, V, (NBMAX >= 3 ? 3 : 1), NL, MASKED>(g, w, px, reach, c0);
    } else if (NBMAX >= 2 && blocks == 2) {
      group_block<acc_t, V, (NBMAX >= 2 ? 2 : 1), NL, MASKED>(g, w, px, reach, c0);
    } else {
      group_block<acc_t, V, 1, NL, MASKED>(g, w, px, reach, c0);
    }
    c0 += blocks * V;
  }
}

// All channels of a group of NL pixels, in chunks of at most max_blocks(NL) vectors (chunking
// changes no value: see `segment`); then each pixel's C values into its scratch image (via
// `sums`: the lanes past C must not spill into the next pixel or into the zero padding).
template <typename acc_t, int V, int MAXNB, int NL>
__attribute__((always_inline)) inline void solve_group_n(const Geometry& g, Packed<acc_t> w,
                                                         const Pixel<acc_t>* px, Reach reach) {
  constexpr int NBMAX = MAXNB < max_blocks(NL) ? MAXNB : max_blocks(NL);
  // Whether every right-hand side of the group is finite -- then the masked diagonal band of
  // M is not needed: x * 0 is 0 for finite x and NaN for inf/NaN, summed a vector at a time (a
  // few vector ops per pixel against its C^2 k^2 multiply-adds). The last vector may read up to
  // V - 1 values past the pixel (the staged rows carry kSumsPad of slack): a non-finite value
  // there only sends the group down the masked path, which gives the same bits.
  using vec = typename Lanes<acc_t, V>::type;
  vec probe = Lanes<acc_t, V>::splat(0);
  for (int l = 0; l < NL; ++l)
    for (int64_t c = 0; c < g.C; c += V) probe += Lanes<acc_t, V>::load(px[l].rhs + c) * acc_t(0);
  bool finite_rhs = true;
  for (int v = 0; v < V; ++v) finite_rhs &= Lanes<acc_t, V>::lane(probe, v) == acc_t(0);
  // two instantiations: the masks never enter the finite path's code (a run-time flag inside
  // the chunks cost it 3-20 %, same-process A/B)
  if (__builtin_expect(finite_rhs, 1))
    solve_chunks<acc_t, V, NBMAX, NL, false>(g, w, px, reach);
  else
    solve_chunks<acc_t, V, NBMAX, NL, true>(g, w, px, reach);
  const int64_t to_pixel = ((g.kh - 1) * g.Wp + (g.kw - 1)) * g.C;
  for (int l = 0; l < NL; ++l) {
    acc_t* __restrict dst = px[l].field + to_pixel;
    for (int64_t c = 0; c < g.C; ++c) dst[c] = px[l].sums[c];
  }
}

template <typename acc_t, int V, int MAXNB>
__attribute__((always_inline)) inline void solve_group_v(const Geometry& g, Packed<acc_t> w,
                                                         const Pixel<acc_t>* px, int n,
                                                         Reach reach) {
  static_assert(kGroupMax == 4, "one case per group size");
  switch (n) {
    case 1: solve_group_n<acc_t, V, MAXNB, 1>(g, w, px, reach); break;
    case 2: solve_group_n<acc_t, V, MAXNB, 2>(g, w, px, reach); break;
    case 3: solve_group_n<acc_t, V, MAXNB, 3>(g, w, px, reach); break;
    default: solve_group_n<acc_t, V, MAXNB, 4>(g, w, px, reach); break;
  }
}

// Vector width (lanes) for C >= 2 channels: a full 32-byte vector when C fills at least half
// of one, else one 16-byte vector holds them all (C = 1 takes its own path, solve_span_c1).
template <typename acc_t>
constexpr int lanes_for(int64_t C) {
  return C <= int64_t(16 / sizeof(acc_t)) ? int(16 / sizeof(acc_t)) : int(32 / sizeof(acc_t));
}

// n (1 .. kGroupMax) pixels, C >= 2.
template <typename acc_t>
__attribute__((always_inline)) inline void solve_group(const Geometry& g, Packed<acc_t> w,
                                                       const Pixel<acc_t>* px, int n, Reach reach) {
  constexpr int wide = 32 / sizeof(acc_t), narrow = 16 / sizeof(acc_t);
  if (lanes_for<acc_t>(g.C) == wide)
    solve_group_v<acc_t, wide, 4>(g, w, px, n, reach);
  else
    solve_group_v<acc_t, narrow, 1>(g, w, px, n, reach);
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

// Steps [t0, t1) of the band of nr rows starting at row i0 of one image: the band's staged
// right-hand side is `stage` (row r at r * W * C, pixel-major), `sums` holds kGroupMax * (C +
// kSumsPad) values. A band of nr rows takes W + nr - 1 steps. C = 1 (nr = 1): step t = column t,
// solved in tiles along the row.
template <typename acc_t>
__attribute__((always_inline)) inline void band_steps(const Geometry& g, Packed<acc_t> w,
                                                      acc_t* xp, const acc_t* stage, acc_t* sums,
                                                      int64_t i0, int64_t nr, int64_t t0,
                                                      int64_t t1) {
  const int64_t C = g.C;
  if (C == 1) {
    solve_span_c1<acc_t, 32 / sizeof(acc_t)>(g, w, xp, stage + t0, i0, t0, t1);
    return;
  }
  Pixel<acc_t> px[kGroupMax];
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t r_lo = std::max<int64_t>(0, t - g.W + 1), r_hi = std::min(nr - 1, t);
    int n = 0;
    for (int64_t r = r_lo; r <= r_hi; ++r, ++n) {
      const int64_t j = t - r;
      px[n] = {xp + ((i0 + r) * g.Wp + j) * C, stage + (r * g.W + j) * C, sums + n * (C + kSumsPad)};
    }
    // the lowest row (r_hi) and the rightmost column (r_lo) reach the furthest into the image
    const Reach reach{std::max<int64_t>(0, g.kh - 1 - (i0 + r_hi)),
                      std::max<int64_t>(0, g.kw - 1 - (t - r_lo))};
    solve_group<acc_t>(g, w, px, n, reach);
  }
}

// Row i of n (2 .. kGroupMax) images at once, C >= 2: image l's padded scratch image is xp[l], its
// staged row stage[l].
template <typename acc_t>
__attribute__((always_inline)) inline void images_row(const Geometry& g, Packed<acc_t> w,
                                                      acc_t* const* xp, const acc_t* const* stage,
                                                      acc_t* sums, int64_t i, int n) {
  const int64_t C = g.C;
  Pixel<acc_t> px[kGroupMax];
  for (int64_t j = 0; j < g.W; ++j) {
    for (int l = 0; l < n; ++l)
      px[l] = {xp[l] + (i * g.Wp + j) * C, stage[l] + j * C, sums + l * (C + kSumsPad)};
    solve_group<acc_t>(g, w, px, n, Reach{std::max<int64_t>(0, g.kh - 1 - i),
                                          std::max<int64_t>(0, g.kw - 1 - j)});
  }
}

// Entry points of this instruction set (wavefront_solve_cpu.cpp dispatches between them).
void band_steps_f32(const Geometry& g, Packed<float> w, float* xp, const float* stage,
                    float* sums, int64_t i0, int64_t nr, int64_t t0, int64_t t1) {
  band_steps<float>(g, w, xp, stage, sums, i0, nr, t0, t1);
}
void band_steps_f64(const Geometry& g, Packed<double> w, double* xp, const double* stage,
                    double* sums, int64_t i0, int64_t nr, int64_t t0, int64_t t1) {
  band_steps<double>(g, w, xp, stage, sums, i0, nr, t0, t1);
}
void images_row_f32(const Geometry& g, Packed<float> w, float* const* xp,
                    const float* const* stage, float* sums, int64_t i, int n) {
  images_row<float>(g, w, xp, stage, sums, i, n);
}
void images_row_f64(const Geometry& g, Packed<double> w, double* const* xp,
                    const double* const* stage, double* sums, int64_t i, int n) {
  images_row<double>(g, w, xp, stage, sums, i, n);
}

