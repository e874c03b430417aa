// Autograd kernel of invconv_core::inv_conv2d, in C++ (the pure-PyTorch fallback registers the
// same formula from Python, invconv_core/ops.py). In C++ because the Python autograd function
// cost about 120 us of the 200 us a one-image forward+backward took (B = 1, C = 4, 4x4).
//
// For x = T^{-1} y (transpose = false) and an upstream gradient gx:
//     gy = T^{-T} gx                                   the same solve, transposed
//     gw = -d/dw <gy, causal_conv2d(x, w)>             a masked conv2d weight gradient
// and for x = T^{-T} y: gy = T^{-1} gx, gw = -d/dw <x, causal_conv2d(gy, w)> (ops.py derives
// both). The backward is built from dispatcher calls -- inv_conv2d itself, pad, the convolution
// weight gradient -- so it is differentiable again (double backward, Hessian-vector products)
// and traceable by torch.compile, whose fake tensors run the same code.

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "solve_plan.h"

namespace invconv_core {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor call_inv_conv2d(const at::Tensor& y, const at::Tensor& weight, c10::string_view order,
                           bool transpose) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("invconv_core::inv_conv2d", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, c10::string_view, bool)>();
  return op.call(y, weight, order, transpose);
}

bool any_symbolic(c10::SymIntArrayRef sizes) {
  for (const c10::SymInt& s : sizes)
    if (!s.maybe_as_int().has_value()) return true;
  return false;
}

// -d/dweight <grad_out, causal_conv2d(inp, weight, order)>: the conv2d weight gradient of the
// padded input, masked like the weight and negated (the mask holds -1 and 0). As
// _weight_grad in ops.py, including its conv2d form under symbolic shapes (see there).
at::Tensor neg_weight_grad(const at::Tensor& inp, const at::Tensor& grad_out,
                           const at::Tensor& weight, Order order) {
  const int64_t kh = weight.size(2), kw = weight.size(3);
  if (inp.sym_size(2) == 0 || inp.sym_size(3) == 0)  // no pixels: conv2d rejects the padded input
    return (grad_out.sum() * inp.sum()) * at::zeros_like(weight);
  const bool rows = flips_rows(order), cols = flips_cols(order);
  // constant_pad_nd amounts (left, right, top, bottom), as F.pad
  const std::vector<int64_t> pad{cols ? 0 : kw - 1, cols ? kw - 1 : 0, rows ? 0 : kh - 1,
                                 rows ? kh - 1 : 0};
  const at::Tensor padded = at::constant_pad_nd(inp, pad);
  at::Tensor gw;
  if (any_symbolic(inp.sym_sizes()) || any_symbolic(weight.sym_sizes())) {
    gw = at::conv2d(padded.transpose(0, 1), grad_out.transpose(0, 1)).transpose(0, 1);
  } else {
    gw = std::get<1>(at::convolution_backward(grad_out, padded, weight, c10::nullopt, {1, 1},
                                              {0, 0}, {1, 1}, false, {0, 0}, 1,
                                              {false, true, false}));
  }
  // -1 everywhere but above the channel diagonal of the current-pixel tap
  at::Tensor neg_mask = at::full_like(weight, -1, at::MemoryFormat::Contiguous);
  neg_mask.select(3, cols ? 0 : kw - 1).select(2, rows ? 0 : kh - 1).tril_();
  return gw * neg_mask;
}

class InvConv2dFunction : public torch::autograd::Function<InvConv2dFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& y, const at::Tensor& weight,
                            c10::string_view order, bool transpose) {
    at::Tensor out;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      out = call_inv_conv2d(y, weight, order, transpose);
    }
    ctx->saved_data["order"] = std::string(order);
    ctx->saved_data["transpose"] = transpose;
    ctx->save_for_backward({weight, ctx->needs_input_grad(1) ? out : at::Tensor()});
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& weight = saved[0];
    const at::Tensor& out = saved[1];
    const std::string order = ctx->saved_data["order"].toStringRef();
    const bool transpose = ctx->saved_data["transpose"].toBool();
    const bool need_y = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
    if (!(need_y || need_w) || !grads[0].defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    // the derivative of a T^{-1} solve is a T^{-T} solve and vice versa
    at::Tensor g_in = call_inv_conv2d(grads[0].contiguous(), weight, order, !transpose);
    at::Tensor g_w;
    if (need_w) {
      const at::Tensor& inp = transpose ? g_in : out;
      const at::Tensor& gout = transpose ? out : g_in;
      g_w = neg_weight_grad(inp, gout, weight, parse_order(order));
    }
    return {need_y ? g_in : at::Tensor(), g_w, at::Tensor(), at::Tensor()};
  }
};

at::Tensor inv_conv2d_autograd(const at::Tensor& y, const at::Tensor& weight,
                               c10::string_view order, bool transpose) {
  // Forward-mode AD has no formula here (a torch::autograd::Function cannot carry one), and a
  // dropped tangent made jvp return zeros. The public wrappers send forward AD and torch.func
  // transforms to invconv_core/_transforms.py before this point; a direct call gets an error.
  TORCH_CHECK(!(y._fw_grad(/*level=*/0).defined() || weight._fw_grad(/*level=*/0).defined()),
              "invconv_core: forward-mode AD (torch.func.jvp, jacfwd, forward_ad.make_dual) "
              "through torch.ops.invconv_core.inv_conv2d is not supported; call "
              "invconv_core.inv_conv2d or inv_conv2d_transpose, which support it");
  if (!at::GradMode::is_enabled() || !(y.requires_grad() || weight.requires_grad())) {
    // nothing to record: no autograd node, straight to the kernel
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_inv_conv2d(y, weight, order, transpose);
  }
  return InvConv2dFunction::apply(y, weight, order, transpose);
}

}  // namespace

TORCH_LIBRARY_IMPL(invconv_core, Autograd, m) { m.impl("inv_conv2d", &inv_conv2d_autograd); }

}  // namespace invconv_core
