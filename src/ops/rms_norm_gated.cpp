// rms_norm_gated: argument checks and dispatch (style.md §3 rule 4, the kernel triplet): the
// fused CUDA kernel (kernels/gated_rmsnorm, forward and backward through an autograd Function in
// rms_norm_gated_cuda.cpp) for CUDA tensors in fp32/fp16/bf16, unless `impl` forces the
// reference; everything else runs rms_norm_gated_ref (rmsnorm_ref.cpp).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "prism/core/error.h"
#include "prism/ops/rmsnorm.h"

namespace prism::ops {

#ifdef PRISM_HAS_CUDA_KERNELS
bool rms_norm_gated_cuda_supports(const at::Tensor& y, const at::Tensor& z, const at::Tensor& weight,
                                  int64_t group_size, bool needs_grad);  // rms_norm_gated_cuda.cpp
at::Tensor rms_norm_gated_cuda(const at::Tensor& y, const at::Tensor& z, const at::Tensor& weight, int64_t group_size,
                               double eps);
#endif

at::Tensor rms_norm_gated(const at::Tensor& y, const at::Tensor& z, const at::Tensor& weight, int64_t group_size,
                          double eps, Impl impl) {
  PRISM_CHECK(y.defined() && y.dim() >= 1, "rms_norm_gated: y must be [..., I], got ",
              y.defined() ? y.sizes() : at::IntArrayRef{});
  const int64_t I = y.size(-1);
  PRISM_CHECK(group_size > 0 && I % group_size == 0, "rms_norm_gated: group_size ", group_size, " must divide ", I);
  PRISM_CHECK(z.defined() && z.sizes() == y.sizes(), "rms_norm_gated: gate z ",
              z.defined() ? z.sizes() : at::IntArrayRef{}, " must match y ", y.sizes());
  PRISM_CHECK(weight.defined() && weight.dim() == 1 && weight.size(0) == I, "rms_norm_gated: weight must be [I] = [",
              I, "], got ", weight.defined() ? weight.sizes() : at::IntArrayRef{});
  PRISM_CHECK(z.device() == y.device() && weight.device() == y.device(),
              "rms_norm_gated: y, z and weight must be on one device, got ", y.device(), ", ", z.device(), ", ",
              weight.device());
#ifdef PRISM_HAS_CUDA_KERNELS
  const bool needs_grad =
      at::GradMode::is_enabled() && (y.requires_grad() || z.requires_grad() || weight.requires_grad());
  if (impl == Impl::kAuto && rms_norm_gated_cuda_supports(y, z, weight, group_size, needs_grad))
    return rms_norm_gated_cuda(y, z, weight, group_size, eps);
#endif
  return rms_norm_gated_ref(y, z, weight, group_size, eps);
}

}  // namespace prism::ops
