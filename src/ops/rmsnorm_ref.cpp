// RMSNorm reference in transformers' exact cast order (LlamaRMSNorm): fp32 statistics, cast back
// to the input dtype, then the weight multiply in that dtype.
#include <ATen/ATen.h>

#include "prism/core/error.h"
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

namespace prism::ops {

at::Tensor rms_norm_gated_ref(const at::Tensor& y, const at::Tensor& z, const at::Tensor& weight, int64_t group_size,
                              double eps) {  // checked by rms_norm_gated (rms_norm_gated.cpp)
  const int64_t I = y.size(-1);
  auto stat_dtype = y.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto u = y.to(stat_dtype) * at::silu(z.to(stat_dtype));
  auto shape = u.sizes().vec();
  shape.back() = I / group_size;
  shape.push_back(group_size);
  auto g = u.view(shape);
  g = g * at::rsqrt(g.pow(2).mean(-1, true) + eps);
  return weight * g.view(u.sizes()).to(y.scalar_type());
}

}  // namespace prism::ops
