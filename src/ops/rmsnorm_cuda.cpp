// at::Tensor binding of kernels/rmsnorm (compiled only when PRISM_HAS_CUDA_KERNELS): checks,
// current stream, launch check.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>

#include "prism/core/error.h"
#include "rmsnorm/rmsnorm_params.h"

namespace prism::ops {

at::Tensor rms_norm_cuda(const at::Tensor& x, const at::Tensor& weight, double eps) {
  PRISM_CHECK(x.is_cuda() && weight.is_cuda() && x.device() == weight.device(),
              "rms_norm_cuda: x and weight must be on the same CUDA device");
  PRISM_CHECK(x.scalar_type() == weight.scalar_type(), "rms_norm_cuda: x (", x.scalar_type(), ") and weight (",
              weight.scalar_type(), ") dtypes differ");
  auto xc = x.contiguous();
  auto wc = weight.contiguous();
  auto out = at::empty_like(xc);
  kernels::RmsNormParams p;
  p.x = xc.data_ptr();
  p.w = wc.data_ptr();
  p.out = out.data_ptr();
  p.cols = x.size(-1);
  p.rows = p.cols ? xc.numel() / p.cols : 0;
  p.eps = static_cast<float>(eps);
  switch (x.scalar_type()) {
    case at::kFloat: p.dtype = kernels::DType::kFloat32; break;
    case at::kHalf: p.dtype = kernels::DType::kFloat16; break;
    case at::kBFloat16: p.dtype = kernels::DType::kBFloat16; break;
    default: throw Error(prism::str("rms_norm_cuda: unsupported dtype ", x.scalar_type(), " (fp32, fp16, bf16)"));
  }
  const int rc = kernels::rms_norm_forward(p, c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
  PRISM_CHECK(rc == 0, "rms_norm_cuda: kernel launch failed with cudaError ", rc);
  return out;
}

}  // namespace prism::ops
