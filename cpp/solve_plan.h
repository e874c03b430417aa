// Device-independent preparation of one wavefront triangular solve.
//
// Every solve the library performs -- the forward inverse x = T(w,o)^{-1} y and the adjoint
// gy = T(w,o)^{-T} gx -- is reduced here to ONE canonical problem that the CPU (and later CUDA)
// kernels implement: a top-left ("TL") causal solve with a lower-triangular current-pixel tap,
// read from and written to tensors through a flipped index map.
//
//  * order o in {TL, TR, BL, BR}: flipping the rows (B*) and/or the columns (*R) of the image
//    and of the kernel turns the causal convolution of order o into a TL one.
//  * transpose: T(w,o)^T = P T(v, opposite(o)) P with
//        v[c, c', a, b] = w[C-1-c', C-1-c, kh-1-a, kw-1-b],   P = reverse the channel axis,
//    so the adjoint solve is the same TL solve with v, the flips of opposite(o) and the channel
//    axis of the right-hand side and of the result reversed (docs/design.md §2).
//
// The plan holds the kernel re-packed for the solver (in the accumulation dtype) and the flips,
// which the kernels apply as index maps when they read the right-hand side and write the result.
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace invconv_core {

enum class Order { TL, TR, BL, BR };

// Parses "TL" / "TR" / "BL" / "BR"; anything else is a ValueError naming the argument.
Order parse_order(const std::string& order);
Order opposite(Order o);
inline bool flips_rows(Order o) { return o == Order::BL || o == Order::BR; }
inline bool flips_cols(Order o) { return o == Order::TR || o == Order::BR; }

// Validates (input, weight) for both ops; `input_name` is "x" or "y" in the messages.
void check_operands(const at::Tensor& input, const at::Tensor& weight, const char* input_name);

// The solver never divides: with L the lower-triangular current tap, a pixel's equation
//     L x_p + sum_{t != current} W_t x_{p-t} = y_p
// is rewritten once per call as
//     x_p = (L^{-1} y)_p - sum_{t != current} (L^{-1} W_t) x_{p-t},
// so each pixel is one multiply-accumulate loop over y_p (against M = L^{-1}) and the solved
// neighbours (against L^{-1} W_t) -- no per-pixel substitution chain.
// L^{-1} and L^{-1} W_t are formed in float64 from the C x C and C x C x kh x kw weights.
struct SolvePlan {
  int64_t C = 0;
  int64_t kh = 0;  // kernel height after cropping taps that can never reach the image
  int64_t kw = 0;
  bool flip_rows = false;
  bool flip_cols = false;
  bool reverse_channels = false;
  // taps[a][b][c'][c] = (L^{-1} W_tl[:, :, a, b])[c, c'] for the canonical TL weight; the
  // current tap (kh-1, kw-1) is never read.
  at::Tensor taps;
  // (C, C) matrix M = L^{-1} with  y'[:, p] = M y[:, p],  lower-triangular in the canonical
  // channel order: the solvers read the right-hand side through the same channel reversal as
  // they write the result (the transposed solve), and channel c reads only channels <= c of
  // y_p -- a non-finite value never reaches a channel that does not depend on it. The CUDA
  // plan's (cuda/solve_launch.h); make_plan, for the CPU kernel, stores it as neg_rhs_t instead.
  at::Tensor rhs_transform;
  // make_plan only (the CPU kernel's): -M^T, [C'][C]. It and `taps` are views of buffers with
  // kPlanTail zeros after their last value, which the CPU's vector loops may read.
  at::Tensor neg_rhs_t;
};

constexpr int64_t kPlanTail = 32;

// Everything of the plan but its numbers (taps, rhs_transform stay undefined): the channels, the
// cropped kernel size, the flips of the canonical frame and the channel reversal. KH, KW: the
// weight's kernel size.
SolvePlan plan_geometry(int64_t C, int64_t KH, int64_t KW, Order order, bool transpose,
                        int64_t height, int64_t width);

// The plan of the CPU kernel, on the CPU: its numbers by the element functions of plan_math.h
// in plain loops (the same arithmetic as the CUDA plan kernels, and no dozen of small ATen ops
// per call), except the folded taps above kLoopPlanMaxC channels: one BLAS product of L^{-1}
// and the canonical weight there (where O(kh·kw·C³) loops lose).
// weight: (C, C, kh, kw); height/width: image size. acc_dtype: the dtype the solver accumulates
// in (float32 for float16/bfloat16/float32 inputs, float64 for float64). A zero on the diagonal
// of the current tap yields inf/NaN entries (the system is singular), as documented.
constexpr int64_t kLoopPlanMaxC = 16;
SolvePlan make_plan(const at::Tensor& weight, Order order, bool transpose, int64_t height,
                    int64_t width, at::ScalarType acc_dtype);

}  // namespace invconv_core
