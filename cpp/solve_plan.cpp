#include "solve_plan.h"

#include "plan_math.h"

#include <ATen/Dispatch.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <vector>

namespace invconv_core {

Order parse_order(const std::string& order) {
  if (order == "TL") return Order::TL;
  if (order == "TR") return Order::TR;
  if (order == "BL") return Order::BL;
  if (order == "BR") return Order::BR;
  TORCH_CHECK_VALUE(false, "invconv_core: order must be one of 'TL', 'TR', 'BL', 'BR', got '",
                    order, "'");
}

Order opposite(Order o) {
  switch (o) {
    case Order::TL: return Order::BR;
    case Order::TR: return Order::BL;
    case Order::BL: return Order::TR;
    case Order::BR: return Order::TL;
  }
  return Order::TL;  // unreachable
}

static bool is_real_floating(at::ScalarType t) {
  return at::isFloatingType(t) && !at::isComplexType(t);
}

void check_operands(const at::Tensor& input, const at::Tensor& weight, const char* input_name) {
  TORCH_CHECK_VALUE(input.dim() == 4, "invconv_core: ", input_name,
                    " must be a 4-D (N, C, H, W) tensor, got shape ", input.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 4, "invconv_core: weight must be a 4-D (C, C, kh, kw) "
                    "tensor, got shape ", weight.sizes());
  TORCH_CHECK_VALUE(weight.size(0) == weight.size(1), "invconv_core: weight must have shape "
                    "(C, C, kh, kw) with equal channel axes, got ", weight.sizes());
  TORCH_CHECK_VALUE(weight.size(0) >= 1, "invconv_core: weight must have at least one channel, "
                    "got shape ", weight.sizes());
  TORCH_CHECK_VALUE(weight.size(2) >= 1 && weight.size(3) >= 1, "invconv_core: weight must "
                    "have kh >= 1 and kw >= 1, got shape ", weight.sizes());
  TORCH_CHECK_VALUE(input.size(1) == weight.size(0), "invconv_core: ", input_name, " has ",
                    input.size(1), " channels but weight has shape ", weight.sizes(),
                    " (expected (", input.size(1), ", ", input.size(1), ", kh, kw))");
  TORCH_CHECK_TYPE(is_real_floating(input.scalar_type()), "invconv_core: ", input_name,
                   " must have a real floating dtype (float16, bfloat16, float32, float64), got ",
                   input.scalar_type());
  TORCH_CHECK_TYPE(is_real_floating(weight.scalar_type()), "invconv_core: weight must have a "
                   "real floating dtype (float16, bfloat16, float32, float64), got ",
                   weight.scalar_type());
  TORCH_CHECK_TYPE(input.scalar_type() == weight.scalar_type(), "invconv_core: ", input_name,
                   " and weight must have the same dtype, got ", input.scalar_type(), " and ",
                   weight.scalar_type());
  TORCH_CHECK_VALUE(input.device() == weight.device(), "invconv_core: ", input_name,
                    " and weight must be on the same device, got ", input.device(), " and ",
                    weight.device());
}

SolvePlan plan_geometry(int64_t C, int64_t KH, int64_t KW, Order order, bool transpose,
                        int64_t height, int64_t width) {
  SolvePlan plan;
  plan.C = C;
  if (transpose) order = opposite(order);  // T^T = P T(v, opposite(order)) P
  plan.flip_rows = flips_rows(order);
  plan.flip_cols = flips_cols(order);
  plan.reverse_channels = transpose;
  // In TL form tap (a, b) reaches back kh-1-a rows and kw-1-b columns: taps reaching further
  // than the image never touch it, so a kernel larger than the image costs no extra work.
  plan.kh = std::min<int64_t>(KH, std::max<int64_t>(height, 1));
  plan.kw = std::min<int64_t>(KW, std::max<int64_t>(width, 1));
  return plan;
}

namespace {

// A 1-D buffer of n values followed by kPlanTail zeros; returns the view of the n values.
at::Tensor with_tail(int64_t n, at::ScalarType dtype) {
  at::Tensor buf = at::empty({n + kPlanTail}, at::TensorOptions().dtype(dtype));
  buf.narrow(0, n, kPlanTail).zero_();
  return buf.narrow(0, 0, n);
}

void loop_plan(const at::Tensor& weight, SolvePlan& plan, bool transpose, at::ScalarType acc) {
  using cuda_kernels::PlanParams;
  using cuda_kernels::View4;
  const int64_t C = plan.C, kh = plan.kh, kw = plan.kw;
  const PlanParams g{View4{weight.stride(0), weight.stride(1), weight.stride(2), weight.stride(3)},
                     C, weight.size(2), weight.size(3), kh, kw, transpose, plan.flip_rows,
                     plan.flip_cols};
  // the canonical weight, materialised once in float64 (then plain strides below)
  std::vector<double> v(C * C * kh * kw);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), "make_plan", [&] {
    const scalar_t* w = weight.const_data_ptr<scalar_t>();
    for (int64_t c = 0; c < C; ++c)
      for (int64_t c2 = 0; c2 < C; ++c2)
        for (int64_t a = 0; a < kh; ++a)
          for (int64_t b = 0; b < kw; ++b)
            v[((c * C + c2) * kh + a) * kw + b] = cuda_kernels::canonical_weight(w, g, c, c2, a, b);
  });
  const PlanParams canonical{View4{C * kh * kw, kh * kw, kw, 1}, C, kh, kw, kh, kw, 0, 0, 0};
  std::vector<double> linv(C * C);
  for (int64_t j = 0; j < C; ++j) cuda_kernels::lower_inverse_column(v.data(), canonical, j, linv.data());
  plan.taps = with_tail(kh * kw * C * C, acc).view({kh, kw, C, C});
  plan.neg_rhs_t = with_tail(C * C, acc);
  AT_DISPATCH_FLOATING_TYPES(acc, "make_plan", [&] {
    scalar_t* taps = plan.taps.mutable_data_ptr<scalar_t>();
    scalar_t* neg_rhs_t = plan.neg_rhs_t.mutable_data_ptr<scalar_t>();
    for (int64_t a = 0; a < kh; ++a)
      for (int64_t b = 0; b < kw; ++b)
        for (int64_t c = 0; c < C; ++c) cuda_kernels::fold_tap_column(v.data(), canonical, linv.data(), a, b, c, taps);
    std::vector<scalar_t> rhs(C * C);  // M, only to be stored transposed and negated
    for (int64_t c = 0; c < C; ++c) cuda_kernels::rhs_row(g, linv.data(), c, rhs.data());  // g: the adjoint's column order
    for (int64_t c = 0; c < C; ++c)
      for (int64_t c2 = 0; c2 < C; ++c2) neg_rhs_t[c2 * C + c] = -rhs[c * C + c2];
  });
}

void aten_plan(const at::Tensor& weight, SolvePlan& plan, bool transpose, at::ScalarType acc) {
  at::Tensor w = weight.contiguous();  // layout-independent arithmetic below
  if (transpose) {
    // v[c, c', a, b] = w[C-1-c', C-1-c, kh-1-a, kw-1-b]
    w = w.flip({0, 1, 2, 3}).transpose(0, 1);
  }
  std::vector<int64_t> dims;
  if (plan.flip_rows) dims.push_back(2);
  if (plan.flip_cols) dims.push_back(3);
  if (!dims.empty()) w = w.flip(dims);
  const int64_t kh = plan.kh, kw = plan.kw, C = plan.C;
  w = w.slice(2, w.size(2) - kh).slice(3, w.size(3) - kw);
  const at::Tensor w64 = w.to(at::kDouble);
  const at::Tensor lower = w64.select(3, kw - 1).select(2, kh - 1).tril();  // [c][c']
  const at::Tensor lower_inv = at::linalg_solve_triangular(
      lower, at::eye(C, w64.options()), /*upper=*/false);
  // folded[c][c'][a][b] = sum_m L^{-1}[c][m] w[m][c'][a][b]
  const at::Tensor folded = at::tensordot(lower_inv, w64, {1}, {0});
  plan.taps = with_tail(kh * kw * C * C, acc).view({kh, kw, C, C});
  plan.taps.copy_(folded.permute({2, 3, 1, 0}));
  const at::Tensor rhs = transpose ? lower_inv.flip({1}) : lower_inv;  // M
  plan.neg_rhs_t = with_tail(C * C, acc);
  plan.neg_rhs_t.view({C, C}).copy_(rhs.t().neg());
}

}  // namespace

SolvePlan make_plan(const at::Tensor& weight, Order order, bool transpose, int64_t height,
                    int64_t width, at::ScalarType acc_dtype) {
  TORCH_CHECK(weight.device().is_cpu(), "invconv_core: make_plan builds the CPU kernel's plan");
  SolvePlan plan = plan_geometry(weight.size(0), weight.size(2), weight.size(3), order, transpose,
                                 height, width);
  if (plan.C <= kLoopPlanMaxC)
    loop_plan(weight, plan, transpose, acc_dtype);
  else
    aten_plan(weight, plan, transpose, acc_dtype);
  return plan;
}

}  // namespace invconv_core
