// at::Tensor binding of kernels/rmsnorm (compiled only when PRISM_HAS_CUDA_KERNELS): checks,
// device guard, current stream, launch checks, and the custom autograd Function that makes the
// fused kernels the training path. Forward saves x, weight and the per-row fp32 1/rms (4 bytes a
// row); backward produces dx and, when the weight needs it, dweight through the deterministic
// two-stage reduction (no atomics).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/autograd/custom_function.h>

#include "prism/core/error.h"
#include "rmsnorm/rmsnorm_params.h"

namespace prism::ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

kernels::DType kernel_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return kernels::DType::kFloat32;
    case at::kHalf:
      return kernels::DType::kFloat16;
    case at::kBFloat16:
      return kernels::DType::kBFloat16;
    default:
      throw Error(prism::str("rms_norm_cuda: unsupported dtype ", t, " (fp32, fp16, bf16)"));
  }
}

void* stream_of(const at::Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }

// out = weight * cast(x * rstd); rstd [rows] fp32 is written when defined.
at::Tensor forward_launch(const at::Tensor& xc, const at::Tensor& wc, double eps, const at::Tensor& rstd) {
  auto out = at::empty_like(xc);
  kernels::RmsNormParams p;
  p.x = xc.data_ptr();
  p.w = wc.data_ptr();
  p.out = out.data_ptr();
  p.rstd = rstd.defined() ? rstd.data_ptr<float>() : nullptr;
  p.cols = xc.size(-1);
  p.rows = p.cols ? xc.numel() / p.cols : 0;
  p.eps = static_cast<float>(eps);
  p.dtype = kernel_dtype(xc.scalar_type());
  const int rc = kernels::rms_norm_forward(p, stream_of(xc));
  PRISM_CHECK(rc == 0, "rms_norm_cuda: forward kernel launch failed with cudaError ", rc);
  return out;
}

struct RmsNormFn : torch::autograd::Function<RmsNormFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, double eps) {
    const c10::cuda::CUDAGuard guard(x.device());
    const auto xc = x.contiguous();
    const int64_t cols = x.size(-1);
    const int64_t rows = cols ? xc.numel() / cols : 0;
    auto rstd = at::empty({rows}, x.options().dtype(at::kFloat));
    auto out = forward_launch(xc, weight.contiguous(), eps, rstd);
    ctx->save_for_backward({x, weight});
    ctx->saved_data["rstd"] = rstd;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& weight = saved[1];
    const auto rstd = ctx->saved_data["rstd"].toTensor();
    const c10::cuda::CUDAGuard guard(x.device());
    const auto xc = x.contiguous();
    const auto wc = weight.contiguous();
    const auto dy = grad_out[0].defined() ? grad_out[0].contiguous() : at::zeros_like(xc);
    const int64_t cols = x.size(-1);
    const int64_t rows = cols ? xc.numel() / cols : 0;
    const bool want_dw = ctx->needs_input_grad(1);
    auto dx = at::empty_like(xc);
    at::Tensor dw, partial;
    kernels::RmsNormBackwardParams p;
    p.dtype = kernel_dtype(x.scalar_type());
    if (want_dw) {
      dw = at::empty({cols}, weight.options());
      p.dw_partial_rows = kernels::rms_norm_backward_partial_rows(rows, cols, p.dtype, true);
      PRISM_CHECK(rows == 0 || cols == 0 || p.dw_partial_rows > 0,
                  "rms_norm_cuda: could not size the backward grid for [", rows, ", ", cols, "]");
      partial = at::empty({p.dw_partial_rows, cols}, x.options().dtype(at::kFloat));
      p.dw = dw.data_ptr();
      p.dw_partial = partial.data_ptr<float>();
    }
    p.x = xc.data_ptr();
    p.w = wc.data_ptr();
    p.dy = dy.data_ptr();
    p.rstd = rstd.data_ptr<float>();
    p.dx = dx.data_ptr();
    p.rows = rows;
    p.cols = cols;
    const int rc = kernels::rms_norm_backward(p, stream_of(xc));
    PRISM_CHECK(rc == 0, "rms_norm_cuda: backward kernel launch failed with cudaError ", rc);
    return {dx, dw, at::Tensor()};
  }
};

}  // namespace

bool rms_norm_cuda_supports(const at::Tensor& x, const at::Tensor& weight, bool needs_grad) {
  const auto dt = x.scalar_type();
  if (!x.is_cuda() || !weight.is_cuda() || x.device() != weight.device() || weight.scalar_type() != dt) return false;
  if (dt != at::kFloat && dt != at::kHalf && dt != at::kBFloat16) return false;
  if (!needs_grad) return true;
  const c10::cuda::CUDAGuard guard(x.device());
  return x.size(-1) <= kernels::rms_norm_backward_max_cols();
}

at::Tensor rms_norm_cuda(const at::Tensor& x, const at::Tensor& weight, double eps) {
  PRISM_CHECK(x.is_cuda() && weight.is_cuda() && x.device() == weight.device(),
              "rms_norm_cuda: x and weight must be on the same CUDA device");
  PRISM_CHECK(x.scalar_type() == weight.scalar_type(), "rms_norm_cuda: x (", x.scalar_type(), ") and weight (",
              weight.scalar_type(), ") dtypes differ");
  if (at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad()))
    return RmsNormFn::apply(x, weight, eps);
  const c10::cuda::CUDAGuard guard(x.device());
  return forward_launch(x.contiguous(), weight.contiguous(), eps, at::Tensor());
}

}  // namespace prism::ops
