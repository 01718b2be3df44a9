// RMSNorm reference in transformers' exact cast order (LlamaRMSNorm): fp32 statistics, cast back
// to the input dtype, then the weight multiply in that dtype.
#include <ATen/ATen.h>

#include "prism/ops/rmsnorm.h"

namespace prism::ops {

at::Tensor rms_norm_ref(const at::Tensor& x, const at::Tensor& weight, double eps) {
  auto stat_dtype = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto x32 = x.to(stat_dtype);
  auto var = x32.pow(2).mean(-1, /*keepdim=*/true);
  auto n = (x32 * at::rsqrt(var + eps)).to(x.scalar_type());
  return weight * n;
}

}  // namespace prism::ops
