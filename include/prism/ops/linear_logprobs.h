// Per-token log-probabilities and entropies of an lm head, log softmax(hidden @ weight^T /
// (logits_scaling * temperature)) at the label and -sum p log p per row, without ever holding the
// [tokens x vocab] logits: what a policy-gradient loss (GRPO's ratio, a KL to a reference policy,
// an entropy bonus) needs per token. Tokens are processed in chunks like ops::linear_cross_entropy:
// one GEMM per chunk into a reused [chunk, V] buffer and a per-row reduction in fp32.
//
// Unlike linear_cross_entropy, whose gradient is fixed at forward time, the backward takes an
// arbitrary per-row upstream gradient for both outputs (a policy-gradient loss weights each token
// by its advantage and importance ratio). It recomputes each chunk's logits from hidden and weight
// and turns them in place into d(logits) = c (g_lp (onehot - p) - g_H p (log p + H)), c = 1 /
// (logits_scaling * temperature), followed by the two gradient GEMMs. One GEMM more than
// linear_cross_entropy (4 per chunk), nothing [N, V]-sized kept between forward and backward —
// unless keep_logits_bytes allows keeping the logits (3 GEMMs per chunk, for [N, V] of memory).
//
// Memory (N tokens, vocab V, hidden D): forward one [chunk, V] buffer in the inputs' dtype (plus an
// fp32 copy on the ATen path) and three fp32 [N] vectors (log-probs, entropies, logsumexps: the
// last two are what backward needs besides hidden and weight, which autograd keeps anyway);
// backward the same buffer, d hidden [N, D] and an fp32 [V, D] d weight accumulator for bf16/fp16.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "prism/ops/dispatch.h"

namespace prism::ops {

struct LinearLogprobsOptions {
  int64_t ignore_index = -100;  ///< rows with this label get log-prob 0, entropy 0 and no gradient
  double logits_scaling = 1.0;  ///< logits = hidden @ weight^T / logits_scaling (Granite); must be > 0
  /// The distribution is softmax(logits / temperature): a sampler with temperature T draws from
  /// it, and an importance ratio needs its log-probs. Must be > 0.
  double temperature = 1.0;
  /// Tokens per chunk; 0 = automatic (about 256 MiB of logits per chunk, as linear_cross_entropy).
  /// Results do not depend on it beyond floating-point summation order.
  int64_t chunk_tokens = 0;
  /// When a gradient is needed and the whole [N, V] logits take at most this many bytes, forward
  /// keeps them and backward reads them instead of recomputing each chunk: 3 GEMMs per chunk instead
  /// of 4 for N * V * element-size bytes held between forward and backward. 0 = never (the default:
  /// on a GPU the memory is what this op exists to save; on a CPU the GEMM is the cost).
  int64_t keep_logits_bytes = 0;
};

struct LinearLogprobsResult {
  /// [N] log p(label) (fp32; fp64 for fp64 inputs), 0 on ignored rows. Differentiable w.r.t. hidden
  /// and weight with any upstream gradient (first order only).
  at::Tensor logprobs;
  /// [N] entropy -sum_j p_j log p_j of the row's distribution (same dtype), 0 on ignored rows.
  /// Differentiable like logprobs; its gradient is computed only when one reaches it.
  at::Tensor entropy;
};

/// hidden [N, D], weight [V, D] (same floating dtype and device), labels [N] integer in [0, V) or
/// ignore_index. kAuto: on CUDA (fp32/fp16/bf16) the chunked algorithm with the fused kernels of
/// kernels/linear_cross_entropy/linear_logprobs_kernel.cuh, on CPU (or fp64) the same chunked
/// algorithm with ATen ops; kReference: linear_logprobs_ref.
LinearLogprobsResult linear_logprobs(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                                     const LinearLogprobsOptions& opts = {}, Impl impl = Impl::kAuto);

/// Plain ATen reference holding the full logits: matmul(hidden, weight^T) (divided by
/// logits_scaling in their dtype, as the model's lm_head does), then in fp32 (fp64 for fp64
/// inputs) divided by temperature, log_softmax, gather and -sum p log p, with ATen autograd.
LinearLogprobsResult linear_logprobs_ref(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                                         const LinearLogprobsOptions& opts = {});

/// Whether linear_logprobs(..., impl) would run the CUDA kernels for these inputs (for tests and
/// benchmarks that must not silently measure a fallback).
bool linear_logprobs_uses_kernel(const at::Tensor& hidden, const at::Tensor& weight, Impl impl = Impl::kAuto);

}  // namespace prism::ops
