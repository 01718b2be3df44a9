// at::Tensor binding of kernels/linear_cross_entropy/linear_logprobs* (compiled only when
// PRISM_HAS_CUDA_KERNELS): checks, device guard, current stream, launch check.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "linear_cross_entropy/linear_logprobs_params.h"
#include "prism/core/error.h"

namespace prism::ops {

namespace {

void check_row_vector(const at::Tensor& t, const at::Tensor& logits, const char* what) {
  const int64_t n = logits.size(0);
  PRISM_CHECK(t.device() == logits.device() && t.scalar_type() == at::kFloat && t.dim() == 1 && t.size(0) == n &&
                  t.is_contiguous(),
              "linear_logprobs_cuda: ", what, " must be contiguous fp32 [", n, "] on ", logits.device(), ", got ",
              t.scalar_type(), " ", t.sizes(), " on ", t.device());
}

kernels::LinearLogprobsChunkParams params(const at::Tensor& logits, const at::Tensor& labels, int64_t ignore_index,
                                          double logit_scale) {
  PRISM_CHECK(logits.is_cuda() && logits.dim() == 2 && logits.is_contiguous(),
              "linear_logprobs_cuda: logits must be a contiguous [n, V] CUDA tensor, got ", logits.sizes());
  const int64_t n = logits.size(0);
  PRISM_CHECK(labels.device() == logits.device() && labels.scalar_type() == at::kLong && labels.dim() == 1 &&
                  labels.size(0) == n && labels.is_contiguous(),
              "linear_logprobs_cuda: labels must be contiguous int64 [", n, "] on ", logits.device());
  kernels::LinearLogprobsChunkParams p;
  p.logits = logits.data_ptr();
  p.labels = labels.data_ptr<int64_t>();
  p.rows = n;
  p.vocab = logits.size(1);
  p.ignore_index = ignore_index;
  p.logit_scale = static_cast<float>(logit_scale);
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
      throw Error(prism::str("linear_logprobs_cuda: unsupported dtype ", logits.scalar_type(), " (fp32, fp16, bf16)"));
  }
  return p;
}

}  // namespace

void linear_logprobs_fwd_chunk_cuda(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& logprob,
                                    const at::Tensor& entropy, const at::Tensor& lse, int64_t ignore_index,
                                    double logit_scale) {
  auto p = params(logits, labels, ignore_index, logit_scale);
  check_row_vector(logprob, logits, "logprob");
  check_row_vector(entropy, logits, "entropy");
  check_row_vector(lse, logits, "lse");
  p.logprob = logprob.data_ptr<float>();
  p.entropy = entropy.data_ptr<float>();
  p.lse = lse.data_ptr<float>();
  const c10::cuda::CUDAGuard guard(logits.device());
  const int rc =
      kernels::linear_logprobs_fwd_chunk(p, c10::cuda::getCurrentCUDAStream(logits.device().index()).stream());
  PRISM_CHECK(rc == 0, "linear_logprobs_fwd_chunk_cuda: kernel launch failed with cudaError ", rc);
}

void linear_logprobs_bwd_chunk_cuda(const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& lse,
                                    const at::Tensor& entropy, const at::Tensor& grad_logprob,
                                    const at::Tensor& grad_entropy, int64_t ignore_index, double logit_scale) {
  auto p = params(logits, labels, ignore_index, logit_scale);
  check_row_vector(lse, logits, "lse");
  check_row_vector(entropy, logits, "entropy");
  PRISM_CHECK(grad_logprob.defined() || grad_entropy.defined(),
              "linear_logprobs_bwd_chunk_cuda: needs the gradient of logprob, of entropy, or both");
  p.lse = lse.data_ptr<float>();
  p.entropy = entropy.data_ptr<float>();
  if (grad_logprob.defined()) {
    check_row_vector(grad_logprob, logits, "grad_logprob");
    p.grad_logprob = grad_logprob.data_ptr<float>();
  }
  if (grad_entropy.defined()) {
    check_row_vector(grad_entropy, logits, "grad_entropy");
    p.grad_entropy = grad_entropy.data_ptr<float>();
  }
  const c10::cuda::CUDAGuard guard(logits.device());
  const int rc =
      kernels::linear_logprobs_bwd_chunk(p, c10::cuda::getCurrentCUDAStream(logits.device().index()).stream());
  PRISM_CHECK(rc == 0, "linear_logprobs_bwd_chunk_cuda: kernel launch failed with cudaError ", rc);
}

}  // namespace prism::ops
