// RMSNorm with transformers' cast order (architectures.md §1.1): statistics in fp32, the
// normalized value is cast back to the input dtype *before* the weight multiply.
#pragma once

#include <ATen/core/Tensor.h>

namespace prism::ops {

/// x [..., D], weight [D] -> weight * cast(x32 * rsqrt(mean(x32^2) + eps)).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
at::Tensor rms_norm_ref(const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace prism::ops
