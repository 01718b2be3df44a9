// Token sampling from a batch of logits with per-row parameters, and the per-sample random
// streams that make a sample independent of the batch it runs in.
//
// Processing order (transformers' logits warpers): temperature, top-k, top-p (on the top-k
// renormalised distribution), min-p. Ties are broken by token id: top-k and top-p rank tokens by a
// stable descending sort, so of two equal logits the lower id ranks first; greedy takes the lowest
// id among the maxima.
//
// Drawing: Gumbel-max, token = argmax(processed logit + g) with g = -log(-log u) and u a
// counter-based uniform per (row key, token id). A row's token depends only on its logits,
// parameters and key, never on other rows; and unlike inverting the CDF (one uniform against V
// cumulative boundaries, where a 1e-6 change of the logits moves the result with probability
// about 2e-6 x V, 10% for a 49k vocabulary), a tiny numerical difference in the logits (another
// batch shape, thread count or kernel) changes the token only when the two best perturbed scores
// are within that difference.
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
/// parameters and random key keys[b] (sample_key).
SampleResult sample_tokens(const at::Tensor& logits, const std::vector<RowParams>& params,
                           const std::vector<uint64_t>& keys);

/// The processed distribution each row samples from, as fp32 log-probabilities [B, V] (-inf for
/// removed tokens). Greedy rows give 0 at the argmax and -inf elsewhere.
at::Tensor processed_logprobs(const at::Tensor& logits, const std::vector<RowParams>& params);

/// The random key of one draw: a hash of (seed, stream, step). The rollout engine uses stream =
/// sample index and step = token index, so every sample has its own random stream.
uint64_t sample_key(uint64_t seed, uint64_t stream, uint64_t step);

/// Uniforms in (0, 1), [keys.size(), vocab] fp64 on `device`: element (b, t) is
/// uniform_noise_scalar(keys[b], t) (splitmix64 of the key and the token id).
at::Tensor uniform_noise(const std::vector<uint64_t>& keys, int64_t vocab, const at::Device& device);
double uniform_noise_scalar(uint64_t key, int64_t token);

}  // namespace prism::generate
