// at::Tensor binding of kernels/linear_cross_entropy (compiled only when PRISM_HAS_CUDA_KERNELS):
// checks, device guard, current stream, launch check.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "linear_cross_entropy/linear_cross_entropy_params.h"
#include "prism/core/error.h"

namespace prism::ops {

void linear_ce_chunk_cuda(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& loss,
                          const at::Tensor& lse, int64_t ignore_index, double logit_scale, double z_loss_weight,
                          bool write_grad) {
  PRISM_CHECK(logits.is_cuda() && logits.dim() == 2 && logits.is_contiguous(),
              "linear_ce_chunk_cuda: logits must be a contiguous [n, V] CUDA tensor, got ", logits.sizes());
  const int64_t n = logits.size(0);
  PRISM_CHECK(labels.device() == logits.device() && labels.scalar_type() == at::kLong && labels.dim() == 1 &&
                  labels.size(0) == n && labels.is_contiguous(),
              "linear_ce_chunk_cuda: labels must be contiguous int64 [", n, "] on ", logits.device());
  for (const auto* t : {&loss, &lse})
    PRISM_CHECK(t->device() == logits.device() && t->scalar_type() == at::kFloat && t->dim() == 1 && t->size(0) == n &&
                    t->is_contiguous(),
                "linear_ce_chunk_cuda: loss / lse must be contiguous fp32 [", n, "] on ", logits.device());
  kernels::LinearCeChunkParams p;
  p.logits = logits.data_ptr();
  p.labels = labels.data_ptr<int64_t>();
  p.loss = loss.data_ptr<float>();
  p.lse = lse.data_ptr<float>();
  p.rows = n;
  p.vocab = logits.size(1);
  p.ignore_index = ignore_index;
  p.logit_scale = static_cast<float>(logit_scale);
  p.z_loss_weight = static_cast<float>(z_loss_weight);
  p.grad_scale = 1.f;
  p.write_grad = write_grad;
  switch (logits.scalar_type()) {
    case at::kFloat:
      p.dtype = kernels::DType::kFloat32;
      break;
    case at::kHalf:
      p.dtype = kernels::DType::kFloat16;
      break;
    case at::kBFloat16:
      p.dtype = kernels::DType::kBFloat16;
      break;
    default:
      throw Error(prism::str("linear_ce_chunk_cuda: unsupported dtype ", logits.scalar_type(), " (fp32, fp16, bf16)"));
  }
  const c10::cuda::CUDAGuard guard(logits.device());
  const int rc = kernels::linear_ce_chunk(p, c10::cuda::getCurrentCUDAStream(logits.device().index()).stream());
  PRISM_CHECK(rc == 0, "linear_ce_chunk_cuda: kernel launch failed with cudaError ", rc);
}

}  // namespace prism::ops
