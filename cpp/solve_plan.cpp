#include "solve_plan.h"

#include <cctype>

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

// The four dtypes the solvers take (float8 is a floating type to ATen, but not one to solve in).
static bool is_real_floating(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// A dtype as torch prints it (torch.float32), so the compiled core's messages read like the
// pure-PyTorch paths' (_geometry.py) and like the dtypes users write.
static std::string torch_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kLong: return "torch.int64";
    case at::kInt: return "torch.int32";
    case at::kShort: return "torch.int16";
    case at::kChar: return "torch.int8";
    case at::kByte: return "torch.uint8";
    case at::kBool: return "torch.bool";
    case at::kComplexFloat: return "torch.complex64";
    case at::kComplexDouble: return "torch.complex128";
    default: {  // Float8_e4m3fn -> torch.float8_e4m3fn, ...
      std::string name = c10::toString(t);
      for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      return "torch." + name;
    }
  }
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
                   torch_dtype(input.scalar_type()));
  TORCH_CHECK_TYPE(is_real_floating(weight.scalar_type()), "invconv_core: weight must have a "
                   "real floating dtype (float16, bfloat16, float32, float64), got ",
                   torch_dtype(weight.scalar_type()));
  TORCH_CHECK_TYPE(input.scalar_type() == weight.scalar_type(), "invconv_core: ", input_name,
                   " and weight must have the same dtype, got ", torch_dtype(input.scalar_type()),
                   " and ", torch_dtype(weight.scalar_type()));
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

// The plan's numbers: the canonical weight v and L^{-1} by the element functions of plan_math.h
// in plain loops (O(C^2 k^2) and O(C^3 / 6): no ATen op per step), the folded taps
// L^{-1} v_t -- O(k^2 C^3), the one costly part -- by the same loops up to kLoopPlanMaxC
// channels and by one BLAS product above (C = 48: 45 us, where the loops would take ~0.3 ms).
void build_plan(const at::Tensor& weight, SolvePlan& plan, bool transpose, at::ScalarType acc) {
  using cuda_kernels::PlanParams;
  using cuda_kernels::View4;
  const int64_t C = plan.C, kh = plan.kh, kw = plan.kw;
  const PlanParams g{View4{weight.stride(0), weight.stride(1), weight.stride(2), weight.stride(3)},
                     C, weight.size(2), weight.size(3), kh, kw, transpose, plan.flip_rows,
                     plan.flip_cols};
  // The canonical weight, materialised once in float64 (then plain strides below), walked
  // with the signed strides of canonical_offset's affine map (the per-element map cost 20 us at
  // C = 48).
  auto offset = [&](int64_t c, int64_t c2, int64_t a, int64_t b) {
    return cuda_kernels::canonical_offset(g, c, c2, a, b);
  };
  const int64_t o0 = offset(0, 0, 0, 0);
  const int64_t dc = C > 1 ? offset(1, 0, 0, 0) - o0 : 0, dc2 = C > 1 ? offset(0, 1, 0, 0) - o0 : 0;
  const int64_t da = kh > 1 ? offset(0, 0, 1, 0) - o0 : 0, db = kw > 1 ? offset(0, 0, 0, 1) - o0 : 0;
  std::vector<double> v(C * C * kh * kw);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), "make_plan", [&] {
    const scalar_t* w = weight.const_data_ptr<scalar_t>() + o0;
    double* dst = v.data();
    for (int64_t c = 0; c < C; ++c)
      for (int64_t c2 = 0; c2 < C; ++c2)
        for (int64_t a = 0; a < kh; ++a) {
          const scalar_t* src = w + c * dc + c2 * dc2 + a * da;
          for (int64_t b = 0; b < kw; ++b) *dst++ = static_cast<double>(src[b * db]);
        }
  });
  const PlanParams canonical{View4{C * kh * kw, kh * kw, kw, 1}, C, kh, kw, kh, kw, 0, 0, 0};
  std::vector<double> linv(C * C);
  for (int64_t j = 0; j < C; ++j) cuda_kernels::lower_inverse_column(v.data(), canonical, j, linv.data());
  plan.taps = with_tail(kh * kw * C * C, acc).view({kh, kw, C, C});
  plan.neg_rhs_t = with_tail(C * C, acc);
  // folded_t[(c2, a, b)][c] = sum_m v[m][(c2, a, b)] linv[c][m], by BLAS for large C: rows
  // contiguous over c, as the taps' are
  at::Tensor folded_t;
  if (C > kLoopPlanMaxC) {
    const auto f64 = at::TensorOptions().dtype(at::kDouble);
    folded_t = at::mm(at::from_blob(v.data(), {C, C * kh * kw}, f64).t(),
                      at::from_blob(linv.data(), {C, C}, f64).t());
  }
  AT_DISPATCH_FLOATING_TYPES(acc, "make_plan", [&] {
    scalar_t* taps = plan.taps.mutable_data_ptr<scalar_t>();
    scalar_t* neg_rhs_t = plan.neg_rhs_t.mutable_data_ptr<scalar_t>();
    if (folded_t.defined()) {
      const double* f = folded_t.const_data_ptr<double>();
      for (int64_t c2 = 0; c2 < C; ++c2)
        for (int64_t a = 0; a < kh; ++a)
          for (int64_t b = 0; b < kw; ++b) {
            // the current tap is never read: 0 there, as fold_tap_column writes
            const bool current = a == kh - 1 && b == kw - 1;
            const double* src = f + ((c2 * kh + a) * kw + b) * C;
            scalar_t* dst = taps + ((a * kw + b) * C + c2) * C;
            for (int64_t c = 0; c < C; ++c) dst[c] = current ? scalar_t(0) : static_cast<scalar_t>(src[c]);
          }
    } else {
      for (int64_t a = 0; a < kh; ++a)
        for (int64_t b = 0; b < kw; ++b)
          for (int64_t c = 0; c < C; ++c) cuda_kernels::fold_tap_column(v.data(), canonical, linv.data(), a, b, c, taps);
    }
    std::vector<scalar_t> rhs(C * C);  // M, only to be stored transposed and negated
    for (int64_t c = 0; c < C; ++c) cuda_kernels::rhs_row(g, linv.data(), c, rhs.data());
    for (int64_t c = 0; c < C; ++c)
      for (int64_t c2 = 0; c2 < C; ++c2) neg_rhs_t[c2 * C + c] = -rhs[c * C + c2];
  });
}

}  // namespace

SolvePlan make_plan(const at::Tensor& weight, Order order, bool transpose, int64_t height,
                    int64_t width, at::ScalarType acc_dtype) {
  TORCH_CHECK(weight.device().is_cpu(), "invconv_core: make_plan builds the CPU kernel's plan");
  SolvePlan plan = plan_geometry(weight.size(0), weight.size(2), weight.size(3), order, transpose,
                                 height, width);
  build_plan(weight, plan, transpose, acc_dtype);
  return plan;
}

}  // namespace invconv_core
