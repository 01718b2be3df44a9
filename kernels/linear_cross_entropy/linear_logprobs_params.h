// Plain parameters of the per-row log-prob / entropy kernels of linear_logprobs (no torch types;
// src/ops/linear_logprobs_cuda.cpp fills them from at::Tensors).
#pragma once

#include <cstdint>

#include "common/kernel_dtype.h"

namespace prism::kernels {

struct LinearLogprobsChunkParams {
  void* logits = nullptr;           // [rows, vocab] dtype, contiguous: hidden @ W^T of one token chunk
  const int64_t* labels = nullptr;  // [rows]
  // Per-row fp32 statistics of z = logits * logit_scale; 0 on ignored rows. Written by the forward
  // kernel, read by the backward one.
  float* logprob = nullptr;  // z[label] - lse
  float* entropy = nullptr;  // -sum_j p_j log p_j, p = softmax(z)
  float* lse = nullptr;      // logsumexp(z)
  // Backward only: per-row upstream gradients of logprob and entropy (fp32); either may be null
  // (= zero), not both.
  const float* grad_logprob = nullptr;
  const float* grad_entropy = nullptr;
  int64_t rows = 0;
  int64_t vocab = 0;
  int64_t ignore_index = -100;  // rows with this label (or one outside [0, vocab)) are ignored
  float logit_scale = 1.f;      // 1 / (logits_scaling * temperature)
  DType dtype = DType::kBFloat16;
};

/// Forward: per row, logprob / entropy / lse in fp32 from one read of the row; logits untouched.
int linear_logprobs_fwd_chunk(const LinearLogprobsChunkParams& p, void* stream);

/// Backward: overwrites the logits, in place, with the gradient with respect to the *unscaled*
/// logits of sum_r grad_logprob[r] * logprob[r] + grad_entropy[r] * entropy[r]:
///   d[j] = logit_scale * (g_lp [j == label] - p_j (g_lp + g_H (log p_j + H))),
/// p_j = exp(z_j - lse) from the lse and entropy H the forward kernel wrote. Zero rows where ignored.
/// Both launch on `stream` (a cudaStream_t) and return a cudaError_t value (0 = success).
int linear_logprobs_bwd_chunk(const LinearLogprobsChunkParams& p, void* stream);

}  // namespace prism::kernels
