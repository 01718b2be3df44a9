// Token sampling from a batch of logits with per-row parameters, and the per-sample random
// streams that make a sample independent of the batch it runs in.
//
// Processing order (transformers' logits warpers): temperature, top-k, top-p (on the top-k
// renormalised distribution), min-p. Ties are broken by token id: top-k and top-p rank tokens by a
// stable descending sort, so of two equal logits the lower id ranks first; greedy takes the lowest
// id among the maxima. A row draws with one uniform number by inverting the processed
// distribution's CDF in token-id order, so the token depends only on the row's logits, parameters
// and uniform, never on other rows.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace prism::generate {

struct RowParams {
  double temperature = 1.0;  ///< 0 = greedy (argmax; the processed distribution is a point mass)
  int64_t top_k = 0;         ///< keep the k highest logits (0 = off)
  double top_p = 1.0;        ///< keep the smallest prefix (by probability, descending) whose mass reaches p
  double min_p = 0.0;        ///< drop tokens with probability < min_p x the highest probability (0 = off)
};

struct SampleResult {
  at::Tensor tokens;             ///< [B] int64
  at::Tensor logprobs;           ///< [B] fp32 log-prob of the token under log_softmax(logits) (unprocessed)
  at::Tensor sampling_logprobs;  ///< [B] fp32 log-prob under the processed distribution (0 for greedy)
};

/// Draws one token per row of `logits` [B, V] (any float dtype; computed in fp32) with row b's
/// parameters and uniform number uniforms[b] in [0, 1).
SampleResult sample_tokens(const at::Tensor& logits, const std::vector<RowParams>& params,
                           const std::vector<double>& uniforms);

/// The processed distribution each row samples from, as fp32 log-probabilities [B, V] (-inf for
/// removed tokens). Greedy rows give 0 at the argmax and -inf elsewhere.
at::Tensor processed_logprobs(const at::Tensor& logits, const std::vector<RowParams>& params);

/// Counter-based uniform in [0, 1) (Philox4x32-10, 53 bits): a pure function of (seed, stream,
/// step). The rollout engine uses stream = sample index and step = token index, so every sample
/// has its own random stream.
double philox_uniform(uint64_t seed, uint64_t stream, uint64_t step);

}  // namespace prism::generate
