// RMSNorm with transformers' cast order (architectures.md §1.1): statistics in fp32, the
// normalized value is cast back to the input dtype *before* the weight multiply.
#pragma once

#include <ATen/core/Tensor.h>

#include "prism/ops/dispatch.h"

namespace prism::ops {

/// x [..., D], weight [D] -> weight * cast(x32 * rsqrt(mean(x32^2) + eps)).
/// kAuto: the fused CUDA kernel (kernels/rmsnorm, forward + backward through a custom autograd
/// Function) for CUDA fp32/fp16/bf16 tensors with the weight in x's dtype; on a CPU in training
/// (grad mode, an input that requires grad, fp32/fp64 x and weight of one dtype) a one-pass
/// autograd Function with the same math; else the reference.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps, Impl impl = Impl::kAuto);
at::Tensor rms_norm_ref(const at::Tensor& x, const at::Tensor& weight, double eps);
/// Whether rms_norm(x, weight, eps, impl) would run the fused kernel (in the current grad mode).
bool rms_norm_uses_kernel(const at::Tensor& x, const at::Tensor& weight, Impl impl = Impl::kAuto);

}  // namespace prism::ops

namespace prism::ops {

/// Gated RMSNorm of the Mamba2 mixer (norm_before_gate = False, grouped): u = y32 * silu(z32),
/// normalised per group of `group_size` channels in fp32, cast to y's dtype, times weight
/// (transformers' NemotronHRMSNormGated / GraniteMoeHybridRMSNormGated).
/// kAuto: the fused CUDA kernel (kernels/gated_rmsnorm, forward + backward) for CUDA tensors.
at::Tensor rms_norm_gated(const at::Tensor& y, const at::Tensor& z, const at::Tensor& weight, int64_t group_size,
                          double eps, Impl impl = Impl::kAuto);
at::Tensor rms_norm_gated_ref(const at::Tensor& y, const at::Tensor& z, const at::Tensor& weight, int64_t group_size,
                              double eps);

}  // namespace prism::ops
