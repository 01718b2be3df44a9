// Linear + cross-entropy: the LM loss of cross_entropy(hidden @ weight^T / logits_scaling, labels)
// without ever holding the [tokens x vocab] logits. Tokens are processed in chunks: the chunk's
// logits come from one GEMM in the input dtype, a fused kernel turns them in place into
// d(loss)/d(logits) while computing max / logsumexp / label logit / loss / z-loss in fp32, and two
// more GEMMs turn that into the chunk's d hidden and its share of d weight. This happens in the
// forward when a gradient is needed (Liger-Kernel / "cut cross-entropy" style); the backward only
// scales the stashed gradients by the incoming gradient, so nothing is recomputed.
//
// Memory (bf16, N tokens, vocab V, hidden D): one [chunk, V] logits buffer, the [N, D] d hidden and
// an fp32 [V, D] d weight accumulator (so the sum over chunks is rounded once), instead of [N, V]
// logits and their gradient. Sums, not means, like ops::cross_entropy: the trainer divides by the
// global token count.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "prism/ops/dispatch.h"

namespace prism::ops {

struct LinearCrossEntropyOptions {
  int64_t ignore_index = -100;  ///< labels equal to this contribute nothing (and get zero gradient)
  double z_loss_weight = 0.0;   ///< z_loss_sum = z_loss_weight * sum(logsumexp^2) (PaLM); 0 = off
  double logits_scaling = 1.0;  ///< logits = hidden @ weight^T / logits_scaling (Granite); must be > 0
  /// Tokens per chunk; 0 = automatic (about 256 MiB of logits per chunk, e.g. 1024 tokens at
  /// V = 128K in bf16). Results do not depend on it beyond floating-point summation order.
  int64_t chunk_tokens = 0;
};

struct LinearCrossEntropyResult {
  /// loss_sum + z_loss_sum, the differentiable output (w.r.t. hidden and weight; first order,
  /// one backward). The gradient of both terms is computed together in the forward, which is why
  /// they are not differentiable separately.
  at::Tensor loss;
  at::Tensor loss_sum;    ///< scalar fp32 (fp64 for fp64 inputs), detached: sum of -log p(label) over kept tokens
  at::Tensor z_loss_sum;  ///< scalar, detached: z_loss_weight * sum over kept tokens of logsumexp^2
  at::Tensor num_tokens;  ///< scalar int64 on the inputs' device: kept tokens
};

/// hidden [N, D], weight [V, D] (same floating dtype and device), labels [N] integer in [0, V) or
/// ignore_index. kAuto: on CUDA (fp32/fp16/bf16) the chunked algorithm with the fused kernel, on
/// CPU (or fp64) the same chunked algorithm with ATen ops; kReference: linear_cross_entropy_ref.
LinearCrossEntropyResult linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight,
                                              const at::Tensor& labels, const LinearCrossEntropyOptions& opts = {},
                                              Impl impl = Impl::kAuto);

/// Plain ATen reference: logits = matmul(hidden, weight^T) (divided by logits_scaling in their
/// dtype, as the model's lm_head does), then ops::cross_entropy. Holds the full logits.
LinearCrossEntropyResult linear_cross_entropy_ref(const at::Tensor& hidden, const at::Tensor& weight,
                                                  const at::Tensor& labels, const LinearCrossEntropyOptions& opts = {});

/// Whether linear_cross_entropy(..., impl) would run the fused CUDA kernel for these inputs (for
/// tests and benchmarks that must not silently measure a fallback).
bool linear_cross_entropy_uses_kernel(const at::Tensor& hidden, const at::Tensor& weight, Impl impl = Impl::kAuto);

}  // namespace prism::ops
