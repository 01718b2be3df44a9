// RMSNorm dispatch: the fused CUDA kernels (kernels/rmsnorm, forward and backward) for CUDA tensors
// when they are built and kAuto is asked for; a one-pass CPU autograd Function when training in
// fp32 / fp64 (rmsnorm_cpu.cpp); otherwise the reference (exact to transformers, differentiable
// through ATen).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "prism/core/error.h"
#include "prism/ops/rmsnorm.h"

namespace prism::ops {

#ifdef PRISM_HAS_CUDA_KERNELS
// rmsnorm_cuda.cpp: the autograd Function over the kernels, and the backward's row-length limit.
at::Tensor rms_norm_cuda(const at::Tensor& x, const at::Tensor& weight, double eps);
bool rms_norm_cuda_supports(const at::Tensor& x, const at::Tensor& weight, bool needs_grad);
#endif

// rmsnorm_cpu.cpp: the CPU autograd Function (fp32 / fp64, grad mode with a grad-requiring input).
bool rms_norm_cpu_supports(const at::Tensor& x, const at::Tensor& weight);
at::Tensor rms_norm_cpu(const at::Tensor& x, const at::Tensor& weight, double eps);

bool rms_norm_uses_kernel(const at::Tensor& x, const at::Tensor& weight, Impl impl) {
#ifdef PRISM_HAS_CUDA_KERNELS
  const bool needs_grad = at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad());
  return impl == Impl::kAuto && rms_norm_cuda_supports(x, weight, needs_grad);
#else
  (void)x;
  (void)weight;
  (void)impl;
  return false;
#endif
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps, Impl impl) {
  PRISM_CHECK(weight.dim() == 1 && x.dim() >= 1 && x.size(-1) == weight.size(0), "rms_norm: weight ", weight.sizes(),
              " does not match the last dim of x ", x.sizes());
#ifdef PRISM_HAS_CUDA_KERNELS
  if (rms_norm_uses_kernel(x, weight, impl)) return rms_norm_cuda(x, weight, eps);
#endif
  // Training on a CPU: one pass per row in forward and backward (rmsnorm_cpu.cpp). Inference keeps
  // the reference, so generation's numbers do not move.
  if (impl != Impl::kReference && rms_norm_cpu_supports(x, weight)) return rms_norm_cpu(x, weight, eps);
  return rms_norm_ref(x, weight, eps);
}

}  // namespace prism::ops
