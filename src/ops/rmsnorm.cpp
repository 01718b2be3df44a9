// RMSNorm dispatch: the fused CUDA kernel belongs to the kernels issue; until then every device
// runs the reference, which is already exact to transformers.
#include <ATen/ATen.h>

#include "prism/core/error.h"
#include "prism/ops/rmsnorm.h"

namespace prism::ops {

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  PRISM_CHECK(weight.dim() == 1 && x.size(-1) == weight.size(0), "rms_norm: weight ", weight.sizes(),
              " does not match the last dim of x ", x.sizes());
  return rms_norm_ref(x, weight, eps);
}

}  // namespace prism::ops
