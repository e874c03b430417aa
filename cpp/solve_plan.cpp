#include "solve_plan.h"

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

SolvePlan make_plan(const at::Tensor& weight, Order order, bool transpose, int64_t height,
                    int64_t width, at::ScalarType acc_dtype) {
  SolvePlan plan = plan_geometry(weight.size(0), weight.size(2), weight.size(3), order, transpose,
                                 height, width);
  at::Tensor w = weight.contiguous();  // layout-independent arithmetic below
  if (transpose) {
    // v[c, c', a, b] = w[C-1-c', C-1-c, kh-1-a, kw-1-b]
    w = w.flip({0, 1, 2, 3}).transpose(0, 1);
  }
  std::vector<int64_t> dims;
  if (plan.flip_rows) dims.push_back(2);
  if (plan.flip_cols) dims.push_back(3);
  if (!dims.empty()) w = w.flip(dims);
  const int64_t kh = plan.kh, kw = plan.kw;
  w = w.slice(2, w.size(2) - kh).slice(3, w.size(3) - kw);
  const at::Tensor w64 = w.to(at::kDouble);
  const at::Tensor lower = w64.select(3, kw - 1).select(2, kh - 1).tril();  // [c][c']
  const at::Tensor lower_inv = at::linalg_solve_triangular(
      lower, at::eye(plan.C, w64.options()), /*upper=*/false);
  // folded[c][c'][a][b] = sum_m L^{-1}[c][m] w[m][c'][a][b]
  const at::Tensor folded = at::tensordot(lower_inv, w64, {1}, {0});
  plan.taps = folded.permute({2, 3, 1, 0}).contiguous().to(acc_dtype);
  plan.rhs_transform = (transpose ? lower_inv.flip({1}) : lower_inv).contiguous().to(acc_dtype);
  return plan;
}

}  // namespace invconv_core
