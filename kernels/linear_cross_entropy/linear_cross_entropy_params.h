// Plain parameters of the fused cross-entropy chunk kernel of linear_cross_entropy (no torch
// types; src/ops/linear_cross_entropy_cuda.cpp fills them from at::Tensors).
#pragma once

#include <cstdint>

#include "common/kernel_dtype.h"

namespace prism::kernels {

struct LinearCeChunkParams {
  void* logits = nullptr;          // [rows, vocab] dtype, contiguous: hidden @ W^T of one token chunk;
                                   // overwritten with d(loss)/d(logits) when write_grad
  const int64_t* labels = nullptr; // [rows]
  float* loss = nullptr;           // [rows] fp32: lse - z[label] (0 for ignored rows)
  float* lse = nullptr;            // [rows] fp32: logsumexp of the scaled row (0 for ignored rows)
  int64_t rows = 0;
  int64_t vocab = 0;
  int64_t ignore_index = -100;     // rows with this label (or a label outside [0, vocab)) are ignored
  float logit_scale = 1.f;         // z = logits * logit_scale (1 / Granite's logits_scaling)
  float z_loss_weight = 0.f;       // per kept row: z_loss_weight * lse^2 (PaLM z-loss)
  float grad_scale = 1.f;          // multiplies the written gradient
  bool write_grad = true;          // false: statistics only, logits left as they are
  DType dtype = DType::kBFloat16;
};

/// Per row: max, logsumexp, label logit, loss in fp32 (one read of the row), then (write_grad)
/// the gradient of loss + z_loss_weight * lse^2 with respect to the *unscaled* logits, in place:
///   grad[j] = grad_scale * logit_scale * (softmax(z)[j] * (1 + 2 z_loss_weight lse) - [j == label]).
/// Launches on `stream` (a cudaStream_t); returns a cudaError_t value (0 = success).
int linear_ce_chunk(const LinearCeChunkParams& p, void* stream);

}  // namespace prism::kernels
