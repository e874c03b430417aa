// invconv_core._simt: the CUDA kernel of inv_conv2d (cuda/wavefront_kernel.cuh, the source
// nvcc compiles) run on the CPU under the SIMT emulation (simt_emulation.h), as the test-only
// operator
//
//   torch.ops.invconv_simt.inv_conv2d(y, weight, order="TL", transpose=False,
//                                     threads=0, max_blocks=0, shared_limit=-1,
//                                     wide_index=False, sm_count=0, band_rows=0)
//
// on CPU tensors. Operand checks and the launches (cuda/solve_launch.h: run_solve) are those of
// the CUDA glue; only how a kernel is launched differs. threads / max_blocks / shared_limit
// override the launch limits (0 / 0 / -1: 1024 threads, 65535 blocks, 48 KiB -- a device's
// shared memory with its opt-in is larger: the glue asks it), so tests reach the code paths a
// GPU takes for larger problems: several images per block, more (pixel, channel group) pairs
// than threads, taps or image outside shared memory, more than 48 KiB opted in to;
// wide_index=True takes the 64-bit-index kernel where 32 bits would do; sm_count > 0 is the
// device's multiprocessor count the glue reads (a batch that leaves half of them idle is
// solved in bands of rows, kImageBand; 0, the default: never), band_rows > 0 asks for bands of
// that many rows whatever the batch.
// Slow (a std::thread per CUDA thread): meant for small verification cases.

#include "simt_emulation.h"  // first: the kernel header builds on it

#include <ATen/ATen.h>

#include <limits>
#include <tuple>
#include <ATen/Dispatch.h>
#include <torch/extension.h>
#include <torch/library.h>

#include "../cuda/solve_launch.h"
#include "../cuda/wavefront_kernel.cuh"
#include "../solve_plan.h"

namespace invconv_core {
namespace {

at::Tensor inv_conv2d_emulated(const at::Tensor& y, const at::Tensor& weight,
                               c10::string_view order, bool transpose, int64_t threads,
                               int64_t max_blocks, int64_t shared_limit, bool wide_index,
                               int64_t sm_count, int64_t band_rows) {
  check_operands(y, weight, "y");
  TORCH_CHECK_VALUE(y.device().is_cpu(), "invconv_simt: the emulation runs on CPU tensors, got y on ",
                    y.device());
  TORCH_CHECK_VALUE(threads >= 0 && threads <= cuda_kernels::kMaxThreads,
                    "invconv_simt: threads must be in [0, ", cuda_kernels::kMaxThreads, "], got ",
                    threads);
  TORCH_CHECK_VALUE(max_blocks >= 0, "invconv_simt: max_blocks must be >= 0, got ", max_blocks);
  TORCH_CHECK_VALUE(sm_count >= 0 && sm_count <= 100000, "invconv_simt: sm_count must be in [0, 100000], got ",
                    sm_count);
  TORCH_CHECK_VALUE(band_rows >= 0, "invconv_simt: band_rows must be >= 0, got ", band_rows);
  const Order o = parse_order(std::string(order));
  at::Tensor out = at::empty(y.sizes(), y.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  const std::size_t limit = shared_limit < 0 ? cuda_kernels::kDefaultSharedLimit
                                             : static_cast<std::size_t>(shared_limit);
  const int n_threads = threads == 0 ? cuda_kernels::kMaxThreads : static_cast<int>(threads);
  const int64_t n_blocks = max_blocks == 0 ? cuda_kernels::kMaxBlocks : max_blocks;
  auto launch = [](auto kernel, dim3 grid, dim3 block, std::size_t shared, const auto&... args) {
    if (shared > cuda_kernels::kDefaultSharedLimit)  // the opt-in, as the CUDA glue does
      invconv_simt::func_set_max_dynamic_shared(kernel, shared);
    invconv_simt::launch(kernel, grid, block, shared, args...);
  };
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "inv_conv2d_emulated", [&] {
    run_solve<scalar_t>(y, weight, o, transpose, out, limit, n_threads, n_blocks, wide_index,
                        static_cast<int>(sm_count), band_rows, launch);
  });
  return out;
}

// The plan kernels alone (lower_inverse_kernel, then fold_taps_kernel over the first
// `packed_entries - skip_last` entries: a planted short grid for the test that must catch it),
// into buffers filled with NaN first, so an entry no thread wrote reads NaN; and the same
// entries from plan_math.h's element functions in plain host loops. Returns (linv, packed,
// reference packed, reference linv): a test compares every entry.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> device_plan_emulated(const at::Tensor& weight,
                                                                     c10::string_view order,
                                                                     bool transpose, int64_t height,
                                                                     int64_t width, int64_t skip_last,
                                                                     bool force_global_inverse) {
  TORCH_CHECK_VALUE(weight.dim() == 4 && weight.size(0) == weight.size(1) && weight.device().is_cpu(),
                    "invconv_simt.device_plan: a (C, C, kh, kw) CPU weight, got ", weight.sizes());
  const Order o = parse_order(std::string(order));
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), "device_plan_emulated", [&] {
    using acc_t = kernel_acc_t<scalar_t>;
    DevicePlan d = prepare_plan(weight, o, transpose, height, width,
                                std::is_same<acc_t, double>::value ? at::kDouble : at::kFloat);
    d.packed.fill_(std::numeric_limits<double>::quiet_NaN());
    d.linv.fill_(std::numeric_limits<double>::quiet_NaN());
    if (force_global_inverse) d.launch.inverse_shared_bytes = 0;
    const scalar_t* w = weight.const_data_ptr<scalar_t>();
    invconv_simt::launch(d.launch.inverse_shared_bytes ? &cuda_kernels::lower_inverse_kernel<scalar_t, true>
                                                       : &cuda_kernels::lower_inverse_kernel<scalar_t, false>,
                         dim3(d.launch.channel_blocks), dim3(d.launch.threads),
                         d.launch.inverse_shared_bytes, w, d.params, d.linv.mutable_data_ptr<double>());
    invconv_simt::launch(&cuda_kernels::fold_taps_kernel<scalar_t, acc_t>, dim3(d.launch.fold_blocks),
                         dim3(d.launch.fold_threads), std::size_t{0}, w, d.params,
                         d.linv.const_data_ptr<double>(), d.packed.mutable_data_ptr<acc_t>(),
                         d.launch.packed_entries - skip_last, static_cast<int*>(nullptr), std::int64_t{0});
    const int64_t C = weight.size(0);
    at::Tensor linv_ref = at::empty({C, C}, d.linv.options());
    for (int64_t j = 0; j < C; ++j)
      cuda_kernels::lower_inverse_column(w, d.params, j, linv_ref.mutable_data_ptr<double>());
    at::Tensor ref = at::empty_like(d.packed);
    for (int64_t e = 0; e < d.launch.packed_entries; ++e)
      ref.mutable_data_ptr<acc_t>()[e] = static_cast<acc_t>(
          cuda_kernels::packed_entry(w, d.params, linv_ref.const_data_ptr<double>(), e));
    result = {d.linv, d.packed, ref, linv_ref};
  });
  return result;
}

}  // namespace
}  // namespace invconv_core

TORCH_LIBRARY(invconv_simt, m) {
  m.def("inv_conv2d(Tensor y, Tensor weight, str order=\"TL\", bool transpose=False, "
        "int threads=0, int max_blocks=0, int shared_limit=-1, bool wide_index=False, "
        "int sm_count=0, int band_rows=0) -> Tensor");
}

TORCH_LIBRARY_IMPL(invconv_simt, CPU, m) { m.impl("inv_conv2d", &invconv_core::inv_conv2d_emulated); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "invconv_core's CUDA kernel under the CPU SIMT emulation (test-only operator "
            "torch.ops.invconv_simt.inv_conv2d)";
  // The launch the CUDA glue and the emulation choose for a problem (cuda_kernels::launch_config),
  // for tests of the paths: which buffers are in shared memory, how much of it, which index.
  m.def("launch_config", [](int64_t B, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw,
                            int64_t acc_size, int64_t shared_limit, bool wide_index, int64_t sm_count,
                            int64_t band_rows) {
    namespace ck = invconv_core::cuda_kernels;
    const ck::LaunchConfig c = ck::launch_config(B, C, H, W, kh, kw, static_cast<std::size_t>(acc_size),
                                                 static_cast<std::size_t>(shared_limit),
                                                 ck::kMaxThreads, ck::kMaxBlocks, wide_index,
                                                 static_cast<int>(sm_count), band_rows);
    pybind11::dict d;
    d["blocks"] = c.blocks;
    d["threads"] = c.threads;
    d["shared_bytes"] = c.shared_bytes;
    d["taps_in_shared"] = c.taps_in_shared;
    d["image_in_shared"] = c.image == ck::kImageShared;
    d["image"] = c.image == ck::kImageShared ? "shared" : c.image == ck::kImageRing ? "ring"
                 : c.image == ck::kImageBand ? "band" : "global";
    d["wide_index"] = c.wide_index;
    d["bands"] = c.bands;
    d["band_rows"] = c.band_rows;
    d["split"] = c.split;
    d["compute_threads"] = c.compute_threads;
    return d;
  }, "the solve kernel's launch for (B, C, H, W), a kh x kw kernel, acc_size-byte values",
        pybind11::arg("B"), pybind11::arg("C"), pybind11::arg("H"), pybind11::arg("W"), pybind11::arg("kh"),
        pybind11::arg("kw"), pybind11::arg("acc_size"), pybind11::arg("shared_limit"),
        pybind11::arg("wide_index"), pybind11::arg("sm_count") = 0, pybind11::arg("band_rows") = 0);
  m.def("device_plan", &invconv_core::device_plan_emulated, pybind11::arg("weight"),
        pybind11::arg("order") = "TL", pybind11::arg("transpose") = false, pybind11::arg("height") = 4,
        pybind11::arg("width") = 4, pybind11::arg("skip_last") = 0,
        pybind11::arg("force_global_inverse") = false,
        "(linv, packed, reference packed, reference linv): the plan kernels' L^-1 and packed taps "
        "under the emulation (NaN where no thread wrote), and both from plan_math.h's element "
        "functions in host loops (force_global_inverse: L^-1's work array in global memory)");
  m.def("fits_32bit_index", &invconv_core::cuda_kernels::fits_32bit_index,
        "whether the 32-bit-index kernel serves (the views' extents, the sizes)");
}
