// The GRPO objective as tensor functions: group advantages, the per-token clipped policy loss
// (asymmetric clip, dual clip, truncated importance sampling, GSPO's sequence ratio), KL
// estimators against a reference policy, and the four loss aggregations with normalisers that are
// global over micro-batches and ranks (docs/rl.md has every formula and where each system uses it).
//
// Why global normalisers: the loss of a step must not depend on how its rollouts are split into
// micro-batches or ranks (the classic "loss changes with gradient accumulation" bug). Each
// micro-batch therefore returns its *share* of the step's loss: local sums divided by counts the
// caller has reduced over the whole step (GlobalCounts). Summing the shares' gradients over
// micro-batches and ranks gives exactly the gradient of the whole-batch loss.
//
// Layout: the rollouts of a micro-batch are packed into one row of T tokens; `seq_ids` [T] (int64)
// names the sequence each token belongs to (0..S-1 in the micro-batch, every sequence whole), and
// `mask` [T] (bool) marks completion tokens that count (prompt tokens and masked samples: false).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace prism::rl {

enum class AdvantageMode {
  kGroupStd,    ///< (r - mean_g) / (std_g + eps): GRPO (DeepSeekMath), open-instruct "standard"
  kCentered,    ///< r - mean_g: Dr. GRPO, open-instruct's default "centered"
  kBatchStd,    ///< (r - mean_g) / (std over the whole batch + eps): TRL scale_rewards="batch"
  kLeaveOneOut  ///< r - mean of the other G-1 samples (RLOO)
};
AdvantageMode parse_advantage_mode(const std::string& s, const std::string& key = "advantage.mode");

struct AdvantageOptions {
  AdvantageMode mode = AdvantageMode::kCentered;
  int64_t ddof = 0;   ///< std's delta degrees of freedom: 0 = population (numpy, open-instruct), 1 = Bessel (torch, verl, TRL)
  double eps = 1e-8;  ///< added to the std (open-instruct 1e-8, verl 1e-6, TRL 1e-4)
  /// kBatchStd only: the std of all rewards of the step over every rank (batch_reward_std() of
  /// the reduced moments); < 0 = use the std of `rewards` itself (single process).
  double batch_std = -1.0;
};

/// rewards [P, G] (P prompts, G samples each; float) -> advantages [P, G] in fp64-accurate fp32
/// (fp64 for fp64 input). A group whose std is 0 gets advantage 0 in the std modes (its samples
/// carry no signal; GroupStats::zero_std counts them). G = 1 gives 0 everywhere.
at::Tensor compute_advantages(const at::Tensor& rewards, const AdvantageOptions& opts = {});

/// Sum, sum of squares and count of `rewards` as a [3] fp64 CPU tensor, to be all-reduced by the
/// caller; batch_reward_std turns the reduced moments into a std with `ddof`.
at::Tensor reward_moments(const at::Tensor& rewards);
double batch_reward_std(const at::Tensor& reduced_moments, int64_t ddof);

/// Fraction of groups (rows of rewards [P, G]) whose rewards are all equal.
double zero_std_fraction(const at::Tensor& rewards);

enum class KlEstimator {
  kK1,  ///< logp - ref
  kK2,  ///< (logp - ref)^2 / 2
  kK3   ///< exp(ref - logp) - (ref - logp) - 1 (Schulman's unbiased low-variance estimator; open-instruct, verl low_var_kl)
};
KlEstimator parse_kl_estimator(const std::string& s, const std::string& key = "kl.estimator");
/// Per-token KL estimate of KL(pi || ref) from log-probs (same shape). d = logp - ref is clamped
/// to [-20, 20] before exp, as verl does, so a far-off token cannot produce inf.
at::Tensor kl_estimate(const at::Tensor& logp, const at::Tensor& ref_logp, KlEstimator est);

enum class LossAggregation {
  kTokenMean,            ///< sum of token losses / tokens of the step (DAPO, open-instruct, the study)
  kSeqMeanTokenMean,     ///< mean over sequences of each sequence's token mean (original GRPO)
  kSeqMeanTokenSum,      ///< mean over sequences of each sequence's token sum
  kSeqMeanTokenSumNorm   ///< sum of token losses / (sequences of the step x constant) (Dr. GRPO; constant = max new tokens)
};
LossAggregation parse_loss_aggregation(const std::string& s, const std::string& key = "loss.aggregation");

/// What the step's normalisers need, summed over every micro-batch and rank of the step.
struct GlobalCounts {
  double tokens = 0;     ///< mask-true tokens
  double sequences = 0;  ///< sequences with at least one counted token
};

struct PolicyLossOptions {
  double clip_low = 0.2;    ///< ratio clipped to [1 - clip_low, 1 + clip_high]
  double clip_high = 0.2;   ///< clip-higher (DAPO 0.28, open-instruct 0.272)
  double dual_clip = 0.0;   ///< > 1: for A < 0 the loss is capped at -A * dual_clip (verl's clip_ratio_c, 3.0); 0 = off
  double tis_cap = 0.0;     ///< > 0: token loss times min(pi_old / pi_sampler, tis_cap), detached (the study: 2.0); 0 = off
  bool sequence_ratio = false;  ///< GSPO: one ratio per sequence, exp(mean over its tokens of logp - old)
  double kl_beta = 0.0;     ///< > 0: beta * KL estimate added to each token's loss
  KlEstimator kl_estimator = KlEstimator::kK3;
  double entropy_coef = 0.0;  ///< > 0: minus coef * entropy added to each token's loss (entropy bonus)
  LossAggregation aggregation = LossAggregation::kTokenMean;
  double norm_constant = 0.0;  ///< kSeqMeanTokenSumNorm's constant (max new tokens); must be > 0 there
};

/// Detached per-micro-batch statistics (sums over counted tokens; divide by the reduced count).
struct PolicyLossStats {
  double tokens = 0;           ///< counted tokens
  double clipped_low = 0;      ///< tokens where the lower clip was active (A < 0, ratio < 1 - clip_low)
  double clipped_high = 0;     ///< tokens where the upper clip was active (A > 0, ratio > 1 + clip_high)
  double dual_clipped = 0;     ///< tokens where the dual clip was active
  double ratio_sum = 0;        ///< sum of ratios
  double ratio_max = 0;        ///< max ratio
  double kl_sum = 0;           ///< sum of the KL estimate (also when kl_beta = 0 but ref_logp is given)
  double entropy_sum = 0;      ///< sum of entropies (when given)
  double tis_weight_sum = 0;   ///< sum of truncated IS weights (tokens when off)
  double pg_loss_sum = 0;      ///< sum of the clipped policy-gradient token losses
};

struct PolicyLossInputs {
  at::Tensor logp;          ///< [T] current policy log-probs of the sampled tokens (differentiable)
  at::Tensor old_logp;      ///< [T] log-probs under the policy that the update started from (detached)
  at::Tensor advantages;    ///< [T] per-token advantage (the sample's advantage broadcast over its tokens)
  at::Tensor mask;          ///< [T] bool: token counts
  at::Tensor seq_ids;       ///< [T] int64 sequence index within the micro-batch (0..S-1)
  int64_t num_seqs = 0;     ///< S
  at::Tensor sampler_logp;  ///< [T] log-probs under the sampling policy (for truncated IS); undefined = old_logp
  at::Tensor ref_logp;      ///< [T] reference policy log-probs (for KL); undefined = no KL
  at::Tensor entropy;       ///< [T] per-token entropy (differentiable for the bonus); undefined = none
};

struct PolicyLossResult {
  at::Tensor loss;         ///< scalar: this micro-batch's share of the step loss (differentiable)
  at::Tensor token_loss;   ///< [T] per-token loss before aggregation (0 where mask is false)
  PolicyLossStats stats;
};

PolicyLossResult policy_loss(const PolicyLossInputs& in, const GlobalCounts& counts, const PolicyLossOptions& opts);

/// Counts of one micro-batch for GlobalCounts (to be summed over micro-batches and ranks).
GlobalCounts local_counts(const at::Tensor& mask, const at::Tensor& seq_ids, int64_t num_seqs);

}  // namespace prism::rl
