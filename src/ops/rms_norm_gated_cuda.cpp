// at::Tensor binding of kernels/gated_rmsnorm (compiled only with PRISM_HAS_CUDA_KERNELS): an
// autograd Function whose forward and backward are the fused kernels. Inputs are read in place
// when their last dim is contiguous (z is a strided split of in_proj's output); the weight is
// converted to fp32 ([I], tiny). Output dtype = result_type(weight, y), as the reference.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

#include "gated_rmsnorm/gated_rmsnorm_params.h"
#include "prism/core/error.h"
#include "prism/ops/rmsnorm.h"

namespace prism::ops {
namespace {

namespace k = prism::kernels::ssm;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool kernel_dtype_ok(at::ScalarType t) { return t == at::kFloat || t == at::kHalf || t == at::kBFloat16; }

prism::kernels::DType kernel_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return prism::kernels::DType::kFloat32;
    case at::kHalf: return prism::kernels::DType::kFloat16;
    case at::kBFloat16: return prism::kernels::DType::kBFloat16;
    default: throw Error(prism::str("rms_norm_gated_cuda: unsupported dtype ", t, " (fp32, fp16, bf16)"));
  }
}

/// [rows, I] view with a unit column stride (a copy only when no such view exists).
at::Tensor rows2d(const at::Tensor& t) {
  const int64_t I = t.size(-1);
  auto r = (t.stride(-1) == 1 ? t : t.contiguous()).reshape({-1, I});
  return r.stride(1) == 1 ? r : r.contiguous();
}

k::GatedRmsNormParams params(const at::Tensor& y2, const at::Tensor& z2, const at::Tensor& wf, int64_t group,
                             double eps, at::ScalarType out_dtype) {
  k::GatedRmsNormParams p;
  p.y = y2.data_ptr();
  p.y_dtype = kernel_dtype(y2.scalar_type());
  p.y_rs = y2.stride(0);
  p.z = z2.data_ptr();
  p.z_dtype = kernel_dtype(z2.scalar_type());
  p.z_rs = z2.stride(0);
  p.w = wf.data_ptr<float>();
  p.out_dtype = kernel_dtype(out_dtype);
  p.rows = y2.size(0);
  p.I = y2.size(1);
  p.group = group;
  p.eps = static_cast<float>(eps);
  return p;
}

struct GatedRmsNormFn : torch::autograd::Function<GatedRmsNormFn> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& y, const at::Tensor& z,
                               const at::Tensor& weight, int64_t group, double eps) {
    auto y2 = rows2d(y), z2 = rows2d(z);
    auto wf = weight.to(at::kFloat).contiguous();
    const auto out_dtype = at::result_type(weight, y);
    auto out = at::empty(y2.sizes(), y.options().dtype(out_dtype));
    auto rstd = at::empty({y2.size(0), y2.size(1) / group}, y.options().dtype(at::kFloat));
    auto p = params(y2, z2, wf, group, eps, out_dtype);
    p.out = out.data_ptr();
    p.rstd = rstd.data_ptr<float>();
    const int rc = k::gated_rms_norm_fwd(p, c10::cuda::getCurrentCUDAStream(y.device().index()).stream());
    PRISM_CHECK(rc == 0, "rms_norm_gated_cuda: forward kernel launch failed with cudaError ", rc);
    ctx->save_for_backward({y2, z2, weight, rstd});
    ctx->saved_data["group"] = group;
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["y_sizes"] = y.sizes().vec();
    return {out.view(y.sizes())};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    const auto &y2 = saved[0], &z2 = saved[1], &weight = saved[2], &rstd = saved[3];
    const int64_t group = ctx->saved_data["group"].toInt();
    const double eps = ctx->saved_data["eps"].toDouble();
    const auto sizes = ctx->saved_data["y_sizes"].toIntVector();
    const auto out_dtype = at::result_type(weight, y2);
    auto wf = weight.to(at::kFloat).contiguous();
    auto dout = grad_out[0].defined() ? grad_out[0].to(out_dtype).reshape({-1, y2.size(1)}).contiguous()
                                      : at::zeros(y2.sizes(), y2.options().dtype(out_dtype));
    const int64_t rows = y2.size(0), I = y2.size(1), G = I / group;
    // ~1024 blocks in all: enough to fill the GPU, few fp32 weight-grad partial rows.
    const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(rows, (1024 + G - 1) / G));
    auto dy = at::empty(y2.sizes(), y2.options().memory_format(at::MemoryFormat::Contiguous));
    auto dz = at::empty(z2.sizes(), z2.options().memory_format(at::MemoryFormat::Contiguous));
    auto dw_part = at::empty({chunks, I}, y2.options().dtype(at::kFloat));
    k::GatedRmsNormBwdParams q;
    q.f = params(y2, z2, wf, group, eps, out_dtype);
    q.f.rstd = rstd.data_ptr<float>();
    q.dout = dout.data_ptr();
    q.dy = dy.data_ptr();
    q.dz = dz.data_ptr();
    q.dw_partial = dw_part.data_ptr<float>();
    q.num_chunks = chunks;
    q.rows_per_chunk = (rows + chunks - 1) / chunks;
    const int rc = k::gated_rms_norm_bwd(q, c10::cuda::getCurrentCUDAStream(y2.device().index()).stream());
    PRISM_CHECK(rc == 0, "rms_norm_gated_cuda: backward kernel launch failed with cudaError ", rc);
    return {dy.view(sizes), dz.view(sizes), dw_part.sum(0).to(weight.scalar_type()), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool rms_norm_gated_cuda_supports(const at::Tensor& y, const at::Tensor& z, const at::Tensor& weight,
                                  int64_t group_size, bool needs_grad) {
  if (!y.is_cuda() || !kernel_dtype_ok(y.scalar_type()) || !kernel_dtype_ok(z.scalar_type()) ||
      !weight.is_floating_point() || !kernel_dtype_ok(at::result_type(weight, y)))
    return false;
  const int64_t rows = y.size(-1) ? y.numel() / y.size(-1) : 0;
  return rows > 0 && rows < (int64_t{1} << 31) && (!needs_grad || group_size <= k::kGatedNormMaxGroup);
}

at::Tensor rms_norm_gated_cuda(const at::Tensor& y, const at::Tensor& z, const at::Tensor& weight, int64_t group_size,
                               double eps) {
  return GatedRmsNormFn::apply(y, z, weight, group_size, eps)[0];
}

}  // namespace prism::ops
