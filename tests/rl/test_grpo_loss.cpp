// GRPO objective pieces against values computed by hand (written out below) and against the
// whole-batch loss for micro-batch splits.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "prism/core/error.h"
#include "prism/rl/grpo_loss.h"

namespace prism::rl {
namespace {

at::Tensor d(std::initializer_list<double> v) { return at::tensor(std::vector<double>(v), at::kDouble); }

void expect_near(const at::Tensor& got, std::initializer_list<double> want, double tol = 1e-12) {
  auto g = got.to(at::kDouble).reshape({-1}).contiguous();
  ASSERT_EQ(g.numel(), static_cast<int64_t>(want.size()));
  int64_t i = 0;
  for (double w : want) {
    EXPECT_NEAR(g[i].item<double>(), w, tol) << "element " << i;
    ++i;
  }
}

// rewards: group 0 = {1, 0, 0, 1} (mean 0.5), group 1 all equal (no signal), group 2 = {0, 0, 0, 3} (mean 0.75).
at::Tensor rewards() { return d({1, 0, 0, 1, 2, 2, 2, 2, 0, 0, 0, 3}).reshape({3, 4}); }

TEST(Advantages, CenteredIsRewardMinusGroupMean) {
  AdvantageOptions o;
  o.mode = AdvantageMode::kCentered;
  expect_near(compute_advantages(rewards(), o), {0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0, -0.75, -0.75, -0.75, 2.25});
}

TEST(Advantages, GroupStdPopulationAndBessel) {
  AdvantageOptions o;
  o.mode = AdvantageMode::kGroupStd;
  o.eps = 0;
  o.ddof = 0;  // group 0: std 0.5; group 2: std sqrt(1.6875) = 1.299038...
  expect_near(compute_advantages(rewards(), o),
              {1, -1, -1, 1, 0, 0, 0, 0, -0.5773502691896257, -0.5773502691896257, -0.5773502691896257, 1.7320508075688772});
  o.ddof = 1;  // group 0: std sqrt(1/3) -> 0.5 / 0.57735 = 0.866025...
  auto a = compute_advantages(rewards(), o);
  EXPECT_NEAR(a[0][0].item<double>(), 0.8660254037844387, 1e-12);
  EXPECT_EQ(a[1].abs().sum().item<double>(), 0.0);  // zero-std group: exactly 0, not 0/eps
  o.eps = 1e-8;
  o.ddof = 0;
  EXPECT_NEAR(compute_advantages(rewards(), o)[0][0].item<double>(), 0.5 / (0.5 + 1e-8), 1e-15);
}

TEST(Advantages, BatchStdUsesTheStdOfAllRewards) {
  AdvantageOptions o;
  o.mode = AdvantageMode::kBatchStd;
  o.eps = 0;
  // 12 rewards: sum 13, sum of squares 27 -> population std sqrt(27/12 - (13/12)^2) = 1.0374916...
  auto a = compute_advantages(rewards(), o);
  EXPECT_NEAR(a[0][0].item<double>(), 0.48193159734149926, 1e-12);
  EXPECT_NEAR(a[2][0].item<double>(), -0.7228973960122489, 1e-12);
  // The same from moments reduced over two "ranks" (rows split 2 + 1).
  auto r = rewards();
  auto m = reward_moments(r.slice(0, 0, 2)) + reward_moments(r.slice(0, 2, 3));
  EXPECT_NEAR(batch_reward_std(m, 0), 1.0374916331657278, 1e-12);
  o.batch_std = batch_reward_std(m, 0);
  EXPECT_TRUE(at::allclose(compute_advantages(r, o), a, 0, 1e-14));
}

TEST(Advantages, LeaveOneOut) {
  AdvantageOptions o;
  o.mode = AdvantageMode::kLeaveOneOut;
  // sample 0 of group 0: 1 - mean(0, 0, 1) = 2/3; sample 3 of group 2: 3 - 0 = 3.
  auto a = compute_advantages(rewards(), o);
  EXPECT_NEAR(a[0][0].item<double>(), 2.0 / 3.0, 1e-12);
  EXPECT_NEAR(a[0][1].item<double>(), -2.0 / 3.0, 1e-12);
  EXPECT_NEAR(a[2][3].item<double>(), 3.0, 1e-12);
  EXPECT_NEAR(a[2][0].item<double>(), -1.0, 1e-12);
}

TEST(Advantages, ZeroStdFractionAndSingleSample) {
  EXPECT_NEAR(zero_std_fraction(rewards()), 1.0 / 3.0, 1e-15);
  AdvantageOptions o;
  o.mode = AdvantageMode::kGroupStd;
  EXPECT_EQ(compute_advantages(d({1, 2, 3}).reshape({3, 1}), o).abs().sum().item<double>(), 0.0);
  EXPECT_THROW(parse_advantage_mode("zscore"), Error);
}

TEST(Kl, EstimatorsByHand) {
  auto logp = d({0.5, -1.0});
  auto ref = d({0.0, 0.0});  // d = logp - ref = 0.5, -1
  expect_near(kl_estimate(logp, ref, KlEstimator::kK1), {0.5, -1.0});
  expect_near(kl_estimate(logp, ref, KlEstimator::kK2), {0.125, 0.5});
  // k3 = exp(-d) + d - 1
  expect_near(kl_estimate(logp, ref, KlEstimator::kK3), {0.10653065971263342, 0.7182818284590451});
  EXPECT_TRUE(std::isfinite(kl_estimate(d({200.0}), d({0.0}), KlEstimator::kK3).item<double>()));  // clamped
}

// Six packed tokens, two sequences. Token 0 is prompt (masked). Sequence 0 (tokens 1, 2) has
// advantage +1, sequence 1 (tokens 3, 4, 5) -1; old log-probs are 0 so ratio = exp(logp):
//   t1 r=1.5 (A>0, above 1+0.28: clipped high, loss -1.28, no gradient)
//   t2 r=0.9 (A>0, inside: loss -0.9, d/dlogp = -0.9)
//   t3 r=0.5 (A<0, below 1-0.2: clipped low, loss 0.8, no gradient)
//   t4 r=1.1 (A<0, inside: loss 1.1, d/dlogp = 1.1)
//   t5 r=4.0 (A<0: unclipped loss 4, dual clip c=3 caps it at 3, no gradient)
// Sum of token losses = -1.28 - 0.9 + 0.8 + 1.1 + 3 = 2.72.
PolicyLossInputs fixed_inputs() {
  PolicyLossInputs in;
  in.logp = d({0.0, std::log(1.5), std::log(0.9), std::log(0.5), std::log(1.1), std::log(4.0)}).requires_grad_(true);
  in.old_logp = at::zeros({6}, at::kDouble);
  in.advantages = d({1, 1, 1, -1, -1, -1});
  in.mask = at::tensor(std::vector<int64_t>{0, 1, 1, 1, 1, 1}).to(at::kBool);
  in.seq_ids = at::tensor(std::vector<int64_t>{0, 0, 0, 1, 1, 1});
  in.num_seqs = 2;
  return in;
}

PolicyLossOptions fixed_options() {
  PolicyLossOptions o;
  o.clip_low = 0.2;
  o.clip_high = 0.28;
  o.dual_clip = 3.0;
  return o;
}

TEST(PolicyLoss, TokenMeanClipsAndGradientByHand) {
  auto in = fixed_inputs();
  auto counts = local_counts(in.mask, in.seq_ids, in.num_seqs);
  EXPECT_EQ(counts.tokens, 5);
  EXPECT_EQ(counts.sequences, 2);
  auto r = policy_loss(in, counts, fixed_options());
  expect_near(r.token_loss, {0, -1.28, -0.9, 0.8, 1.1, 3.0}, 1e-12);
  EXPECT_NEAR(r.loss.item<double>(), 2.72 / 5, 1e-12);
  r.loss.backward();
  expect_near(in.logp.grad(), {0, 0, -0.9 / 5, 0, 1.1 / 5, 0}, 1e-12);
  EXPECT_EQ(r.stats.clipped_high, 1);
  EXPECT_EQ(r.stats.clipped_low, 1);
  EXPECT_EQ(r.stats.dual_clipped, 1);
  EXPECT_NEAR(r.stats.ratio_max, 4.0, 1e-12);
  EXPECT_NEAR(r.stats.ratio_sum, 1.5 + 0.9 + 0.5 + 1.1 + 4.0, 1e-12);
  // The normaliser is the step's, not the micro-batch's: with 10 tokens in the step the share halves.
  GlobalCounts step{10, 4};
  EXPECT_NEAR(policy_loss(fixed_inputs(), step, fixed_options()).loss.item<double>(), 0.272, 1e-12);
}

TEST(PolicyLoss, WithoutDualClipTheNegativeAdvantageTokenIsUnbounded) {
  auto o = fixed_options();
  o.dual_clip = 0;
  auto in = fixed_inputs();
  auto r = policy_loss(in, local_counts(in.mask, in.seq_ids, 2), o);
  EXPECT_NEAR(r.token_loss[5].item<double>(), 4.0, 1e-12);
  EXPECT_NEAR(r.loss.item<double>(), 3.72 / 5, 1e-12);
}

TEST(PolicyLoss, AggregationsByHand) {
  auto o = fixed_options();
  GlobalCounts c{5, 2};
  o.aggregation = LossAggregation::kSeqMeanTokenMean;  // ((-1.28-0.9)/2 + (0.8+1.1+3)/3) / 2
  EXPECT_NEAR(policy_loss(fixed_inputs(), c, o).loss.item<double>(), (-1.09 + 4.9 / 3) / 2, 1e-12);
  o.aggregation = LossAggregation::kSeqMeanTokenSum;  // 2.72 / 2
  EXPECT_NEAR(policy_loss(fixed_inputs(), c, o).loss.item<double>(), 1.36, 1e-12);
  o.aggregation = LossAggregation::kSeqMeanTokenSumNorm;  // 2.72 / (2 * 4)
  o.norm_constant = 4;
  EXPECT_NEAR(policy_loss(fixed_inputs(), c, o).loss.item<double>(), 0.34, 1e-12);
  o.norm_constant = 0;
  EXPECT_THROW(policy_loss(fixed_inputs(), c, o), Error);
}

TEST(PolicyLoss, TruncatedImportanceSamplingWeight) {
  auto in = fixed_inputs();
  // pi_old / pi_sampler = 3 on every token, capped at 2: every token loss doubles.
  in.sampler_logp = at::full({6}, -std::log(3.0), at::kDouble);
  auto o = fixed_options();
  o.tis_cap = 2.0;
  auto r = policy_loss(in, GlobalCounts{5, 2}, o);
  expect_near(r.token_loss, {0, -2.56, -1.8, 1.6, 2.2, 6.0}, 1e-12);
  EXPECT_NEAR(r.stats.tis_weight_sum, 10.0, 1e-12);
}

TEST(PolicyLoss, SequenceRatioGspo) {
  auto o = fixed_options();
  o.dual_clip = 0;
  o.sequence_ratio = true;
  // seq 0 ratio = sqrt(1.5 * 0.9) = 1.161895 (inside the clip, A=+1 -> -1.161895 per token);
  // seq 1 ratio = (0.5 * 1.1 * 4)^(1/3) = 1.300591 (A=-1: max(1.300591, 1.28) = 1.300591 per token).
  auto r = policy_loss(fixed_inputs(), GlobalCounts{5, 2}, o);
  EXPECT_NEAR(r.loss.item<double>(), 0.3155968665659422, 1e-12);
}

TEST(PolicyLoss, OnPolicyRatioIsOneAndKlZero) {
  auto in = fixed_inputs();
  in.old_logp = in.logp.detach().clone();
  in.ref_logp = in.logp.detach().clone();
  auto o = fixed_options();
  o.kl_beta = 0.05;
  auto r = policy_loss(in, GlobalCounts{5, 2}, o);
  EXPECT_EQ(r.stats.ratio_sum, 5.0);  // exactly
  EXPECT_EQ(r.stats.ratio_max, 1.0);
  EXPECT_EQ(r.stats.kl_sum, 0.0);
  EXPECT_EQ(r.stats.clipped_low + r.stats.clipped_high, 0.0);
  // loss = -A per token: (-1 -1 +1 +1 +1) / 5
  EXPECT_NEAR(r.loss.item<double>(), 0.2, 1e-15);
  // d/dlogp of beta*k3 at d = 0 is 0, so the gradient is -A * ratio / N.
  r.loss.backward();
  expect_near(in.logp.grad(), {0, -0.2, -0.2, 0.2, 0.2, 0.2}, 1e-15);
}

TEST(PolicyLoss, KlInLossAddsBetaTimesK3) {
  auto in = fixed_inputs();
  in.ref_logp = in.logp.detach() - 0.5;  // d = 0.5 on every token
  auto o = fixed_options();
  o.kl_beta = 0.05;
  auto r = policy_loss(in, GlobalCounts{5, 2}, o);
  EXPECT_NEAR(r.loss.item<double>(), (2.72 + 5 * 0.05 * 0.10653065971263342) / 5, 1e-12);
  EXPECT_NEAR(r.stats.kl_sum, 5 * 0.10653065971263342, 1e-12);
}

// The same rollouts split into 1 x 8 or 8 x 1 micro-batches give the same loss and gradient for
// every aggregation, because each share is divided by the step's counts.
TEST(PolicyLoss, MicroBatchSplitInvariance) {
  at::manual_seed(0);
  const int64_t S = 8, L = 7;
  auto logp_all = (at::randn({S * L}, at::kDouble) * 0.3 - 1.0);
  auto old = logp_all + at::randn({S * L}, at::kDouble) * 0.2;
  auto ref = logp_all + at::randn({S * L}, at::kDouble) * 0.2;
  auto adv = at::randn({S}, at::kDouble).repeat_interleave(L);
  auto mask = at::rand({S * L}) > 0.3;
  auto seq = at::arange(S).repeat_interleave(L);
  for (auto agg : {LossAggregation::kTokenMean, LossAggregation::kSeqMeanTokenMean, LossAggregation::kSeqMeanTokenSum,
                   LossAggregation::kSeqMeanTokenSumNorm}) {
    PolicyLossOptions o;
    o.clip_low = 0.2;
    o.clip_high = 0.28;
    o.kl_beta = 0.05;
    o.aggregation = agg;
    o.norm_constant = L;
    auto whole_logp = logp_all.clone().requires_grad_(true);
    PolicyLossInputs in{whole_logp, old, adv, mask, seq, S, {}, ref, {}};
    auto counts = local_counts(mask, seq, S);
    auto whole = policy_loss(in, counts, o).loss;
    whole.backward();
    auto split_logp = logp_all.clone().requires_grad_(true);
    double total = 0;
    for (int64_t i = 0; i < S; ++i) {
      auto sl = [&](const at::Tensor& t) { return t.slice(0, i * L, (i + 1) * L); };
      PolicyLossInputs mi{sl(split_logp), sl(old), sl(adv), sl(mask), at::zeros({L}, at::kLong), 1, {}, sl(ref), {}};
      auto l = policy_loss(mi, counts, o).loss;
      l.backward();
      total += l.item<double>();
    }
    EXPECT_NEAR(total, whole.item<double>(), 1e-12) << static_cast<int>(agg);
    EXPECT_TRUE(at::allclose(split_logp.grad(), whole_logp.grad(), 0, 1e-14)) << static_cast<int>(agg);
  }
}

}  // namespace
}  // namespace prism::rl
