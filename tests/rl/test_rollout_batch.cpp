// Packed rollouts and their per-token log-probs: token_logprobs on one packed fp32 row (documents
// of different lengths, prompt rows left out of the lm-head) against each rollout run alone through
// the fp64 model with full logits and log_softmax — values, entropies and parameter gradients.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "prism/models/causal_lm.h"
#include "prism/rl/rollout_batch.h"
#include "util/test_util.h"

using prism::models::CausalLM;
using prism::rl::Rollout;

namespace {

std::unique_ptr<CausalLM> load(at::ScalarType dt) {
  prism::models::LoadOptions lo;
  lo.dtype = dt;
  auto m = CausalLM::from_pretrained(prism::test::source_dir() + "/configs/tiny/llama-tiny", lo);
  for (auto& [n, p] : m->named_parameters()) p.requires_grad_(true);
  return m;
}

std::vector<Rollout> rollouts() {
  std::vector<Rollout> rs(4);
  rs[0].prompt = {5, 17, 33};
  rs[0].completion = {40, 41, 2};
  rs[1].prompt = {9};
  rs[1].completion = {100, 7, 7, 8, 120, 3, 2};
  rs[2].prompt = {11, 12, 13, 14, 15, 16};
  rs[2].completion = {200};
  rs[3].prompt = {1, 2, 3, 4};
  rs[3].completion = {50, 60};
  for (auto& r : rs) r.sampler_logprobs.assign(r.completion.size(), -1.f);
  return rs;
}

TEST(TokenLogprobs, PackedRowEqualsEachRolloutAloneInFloat64) {
  auto m32 = load(at::kFloat);
  auto m64 = load(at::kDouble);
  const auto rs = rollouts();
  const std::vector<int64_t> idx = {0, 1, 2, 3};
  auto mbs = prism::rl::pack_rollouts(rs, idx, 64);
  ASSERT_EQ(mbs.size(), 1u);
  const auto& mb = mbs[0];
  ASSERT_EQ(mb.num_seqs, 4);

  auto lp = prism::rl::token_logprobs(*m32, mb, at::kCPU);
  at::manual_seed(3);
  auto w = at::randn({mb.labels.size(0)}, at::kFloat);
  (lp.logp * w).sum().backward();

  // Oracle: each rollout alone (no packing, no cu_seqlens), full logits, log_softmax in fp64.
  auto expect_lp = at::zeros({mb.labels.size(0)}, at::kDouble), expect_h = at::zeros_like(expect_lp);
  at::Tensor oracle_loss = at::zeros({}, at::kDouble);
  int64_t t = 0;
  for (size_t s = 0; s < mb.rollouts.size(); ++s) {
    const auto& r = rs[static_cast<size_t>(mb.rollouts[s])];
    std::vector<int64_t> seq(r.prompt);
    seq.insert(seq.end(), r.completion.begin(), r.completion.end() - 1);
    const auto n = static_cast<int64_t>(seq.size());
    // The ATen references (RMSNorm, attention) in the oracle: the packed fp32 row runs the CPU
    // training paths (one-pass RMSNorm Function, per-document SDPA, blocked head steps).
    prism::models::ForwardOptions fo;
    fo.impl = prism::ops::Impl::kReference;
    auto logits = m64->forward(at::tensor(seq, at::kLong).reshape({1, n}), fo).logits[0];  // [n, V]
    auto logp = at::log_softmax(logits, -1);
    const auto P = static_cast<int64_t>(r.prompt.size());
    for (int64_t j = P - 1; j < n; ++j) {
      const int64_t label = r.completion[static_cast<size_t>(j + 1 - P)];
      ASSERT_EQ(mb.labels[t + j].item<int64_t>(), label);
      auto v = logp[j][label];
      expect_lp[t + j] = v.detach();
      expect_h[t + j] = -(logp[j].exp() * logp[j]).sum().detach();
      oracle_loss = oracle_loss + v * w[t + j].item<double>();
    }
    t += n;
  }
  ASSERT_EQ(t, mb.labels.size(0));
  oracle_loss.backward();

  EXPECT_TRUE(prism::test::close_rel(lp.logp.detach().to(at::kDouble), expect_lp, 1e-5, 1e-6, "logp"));
  EXPECT_TRUE(prism::test::close_rel(lp.entropy.detach().to(at::kDouble), expect_h, 1e-5, 1e-6, "entropy"));
  EXPECT_TRUE(lp.logp.detach().masked_select(mb.labels.eq(-100)).eq(0).all().item<bool>()) << "prompt rows must be 0";
  const auto& p32 = m32->named_parameters();
  const auto& p64 = m64->named_parameters();
  ASSERT_EQ(p32.size(), p64.size());
  for (size_t i = 0; i < p32.size(); ++i) {
    ASSERT_TRUE(p32[i].second.grad().defined()) << p32[i].first;
    EXPECT_TRUE(prism::test::close_rel(p32[i].second.grad().to(at::kDouble), p64[i].second.grad(), 1e-4, 1e-7,
                                       "grad " + p32[i].first));
  }
}

}  // namespace
