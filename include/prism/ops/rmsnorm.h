// RMSNorm with transformers' cast order (architectures.md §1.1): statistics in fp32, the
// normalized value is cast back to the input dtype *before* the weight multiply.
#pragma once

#include <ATen/core/Tensor.h>

namespace prism::ops {

/// x [..., D], weight [D] -> weight * cast(x32 * rsqrt(mean(x32^2) + eps)).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
at::Tensor rms_norm_ref(const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace prism::ops

namespace prism::ops {

/// Gated RMSNorm of the Mamba2 mixer (norm_before_gate = False, grouped): u = y32 * silu(z32),
/// normalised per group of `group_size` channels in fp32, cast to y's dtype, times weight
/// (transformers' NemotronHRMSNormGated / GraniteMoeHybridRMSNormGated).
at::Tensor rms_norm_gated(const at::Tensor& y, const at::Tensor& z, const at::Tensor& weight, int64_t group_size,
                          double eps);

}  // namespace prism::ops
