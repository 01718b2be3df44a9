// Rollouts as training data: each sample's prompt + completion packed (best-fit decreasing, with
// document boundaries) into micro-batch rows, and the per-token log-probabilities of a model on
// those rows through the training forward (the same one mid-training uses) and
// ops::linear_logprobs, so no [tokens, vocab] logits are materialised.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <span>
#include <vector>

#include "prism/ops/dispatch.h"

namespace prism::models {
class CausalLM;
}

namespace prism::rl {

/// One sampled completion and what the loss needs of it.
struct Rollout {
  std::vector<int64_t> prompt;
  std::vector<int64_t> completion;       ///< at least one token
  std::vector<float> sampler_logprobs;   ///< per completion token, as the rollout engine computed them
  double advantage = 0;
  bool counted = true;                   ///< false: the sample carries no loss (masked truncation)
};

/// One packed row of several rollouts. Token j of a sequence predicts token j + 1; the sequence is
/// prompt + completion without its last token, and exactly the positions that predict a
/// completion token are labelled.
struct MicroBatch {
  std::vector<int64_t> rollouts;  ///< indices into the rollout list, in row order
  at::Tensor input_ids;           ///< [1, T] int64
  at::Tensor position_ids;        ///< [1, T] int64, restarting at 0 in every sequence
  at::Tensor cu_seqlens;          ///< [S + 1] int64
  at::Tensor labels;              ///< [T] int64: the next token where it is a completion token, else -100
  at::Tensor mask;                ///< [T] bool: labelled and the rollout is counted
  at::Tensor advantages;          ///< [T] fp32 (the rollout's advantage on its labelled tokens)
  at::Tensor sampler_logp;        ///< [T] fp32 (the engine's log-probs on labelled tokens, 0 elsewhere)
  at::Tensor seq_ids;             ///< [T] int64 sequence index in the row
  int64_t num_seqs = 0;
  at::Tensor old_logp;            ///< [T] fp32, filled before an off-policy update (undefined: on-policy)
  at::Tensor ref_logp;            ///< [T] fp32, filled when there is a reference policy
};

/// Packs rollouts[indices] into rows of at most `capacity` tokens (CPU tensors). Throws naming the
/// rollout when one sequence is longer than `capacity`.
std::vector<MicroBatch> pack_rollouts(const std::vector<Rollout>& rollouts, std::span<const int64_t> indices,
                                      int64_t capacity);

struct TokenLogprobs {
  at::Tensor logp;     ///< [T] fp32 (0 where unlabelled)
  at::Tensor entropy;  ///< [T] fp32
};

/// Log-probs of the labels of `mb` under `model` (on `device`): the packed training forward
/// (cu_seqlens) up to the final norm, then ops::linear_logprobs. Differentiable when grad mode is on.
TokenLogprobs token_logprobs(const models::CausalLM& model, const MicroBatch& mb, const c10::Device& device,
                             ops::Impl impl = ops::Impl::kAuto, bool activation_checkpointing = false);

}  // namespace prism::rl
