// RMSNorm dispatch: the fused CUDA kernel (kernels/rmsnorm, forward only) when the tensor is on a
// GPU, the kernel is built and no gradient is needed; otherwise the reference (exact to
// transformers, differentiable). The backward kernel belongs to the kernels issue.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "prism/core/error.h"
#include "prism/ops/rmsnorm.h"

namespace prism::ops {

#ifdef PRISM_HAS_CUDA_KERNELS
at::Tensor rms_norm_cuda(const at::Tensor& x, const at::Tensor& weight, double eps);  // rmsnorm_cuda.cpp
#endif

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  PRISM_CHECK(weight.dim() == 1 && x.size(-1) == weight.size(0), "rms_norm: weight ", weight.sizes(),
              " does not match the last dim of x ", x.sizes());
#ifdef PRISM_HAS_CUDA_KERNELS
  const bool needs_grad = at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad());
  if (x.is_cuda() && !needs_grad && x.scalar_type() == weight.scalar_type() && x.scalar_type() != at::kDouble)
    return rms_norm_cuda(x, weight, eps);
#endif
  return rms_norm_ref(x, weight, eps);
}

}  // namespace prism::ops
