// Token cross-entropy for LM training: per-token CE in fp32 summed (not averaged) over the
// tokens whose label is not ignored, plus PaLM's z-loss. Sums, because the trainer normalises by
// the global token count (across micro-batches and ranks), which no single call knows.
//
// Memory: logits are upcast to fp32 one chunk of rows at a time in forward and again in backward
// (recomputing softmax from the saved per-token logsumexp), so an [N, V] fp32 copy of bf16 logits
// never exists. The gradient is written into one [N, V] tensor of the logits' dtype. A fused
// linear + CE kernel that never materialises the logits at all belongs to the kernels issue.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace prism::ops {

struct CrossEntropyOptions {
  int64_t ignore_index = -100;  ///< labels equal to this contribute nothing (and get zero gradient)
  double z_loss_weight = 0.0;   ///< z_loss_sum = z_loss_weight * sum(logsumexp^2) (PaLM); 0 = off
  int64_t chunk_tokens = 1024;  ///< rows upcast at once: at V = 128K, 1024 rows are 512 MB in fp32
};

struct CrossEntropyResult {
  at::Tensor loss_sum;    ///< scalar fp32 (fp64 for fp64 logits): sum over kept tokens of -log p(label)
  at::Tensor z_loss_sum;  ///< scalar, same dtype: z_loss_weight * sum over kept tokens of logsumexp^2
  at::Tensor num_tokens;  ///< scalar int64 on the logits' device: kept tokens (a tensor: no host sync)
};

/// logits [N, V] of any float dtype, labels [N] integer (ignore_index allowed) on the same device.
/// Differentiable w.r.t. logits through loss_sum and z_loss_sum (first order only); all-ignored
/// input gives zero sums and a zero gradient.
CrossEntropyResult cross_entropy(const at::Tensor& logits, const at::Tensor& labels,
                                 const CrossEntropyOptions& opts = {});

/// Plain ATen reference (whole-tensor fp32 upcast, autograd through ATen ops); chunk_tokens unused.
CrossEntropyResult cross_entropy_ref(const at::Tensor& logits, const at::Tensor& labels,
                                     const CrossEntropyOptions& opts = {});

}  // namespace prism::ops
