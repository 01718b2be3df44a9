// ForwardOptions::skip_lm_head + CausalLM::lm_head_weight() + ops::linear_cross_entropy (what the
// trainer does) against the plain forward's logits + ops::cross_entropy, in float64 on fixture
// families with and without tied embeddings and with Granite's logits_scaling: last_hidden is the
// final-norm output (= hidden_states.back()), no logits are computed, and the loss and every
// parameter gradient agree to 1e-10.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "prism/models/causal_lm.h"
#include "prism/ops/cross_entropy.h"
#include "prism/ops/linear_cross_entropy.h"
#include "util/test_util.h"

using prism::models::CausalLM;
using prism::models::ForwardOptions;
using prism::test::close_rel;
using prism::test::fixture;

namespace {

class LmHeadSplit : public ::testing::TestWithParam<std::string> {};

TEST_P(LmHeadSplit, LinearCrossEntropyOnLastHiddenEqualsCrossEntropyOnLogits) {
  prism::models::LoadOptions lo;
  lo.dtype = at::kDouble;
  auto m = CausalLM::from_pretrained(fixture(GetParam()), lo);
  for (auto& [n, p] : m->named_parameters()) p.requires_grad_(true);
  const auto& cfg = m->config();
  // lm_head_weight(): the embedding when tied, else the lm_head parameter.
  const auto& w = m->lm_head_weight();
  ASSERT_EQ(w.sizes(), (at::IntArrayRef{cfg.vocab_size, cfg.hidden_size}));
  bool found = false;
  for (const auto& [n, p] : m->named_parameters()) found = found || p.is_same(w);
  EXPECT_TRUE(found) << "lm_head_weight() must be a live parameter";

  at::manual_seed(7);
  auto ids = at::randint(cfg.vocab_size, {2, 11}, at::kLong);
  auto labels = at::randint(cfg.vocab_size, {22}, at::kLong);
  labels.index_put_({at::arange(0, 22, 5)}, -100);
  const double z = 1e-3;

  auto grads = [&]() {
    std::vector<at::Tensor> g;
    for (auto& [n, p] : m->named_parameters()) {
      g.push_back(p.grad().defined() ? p.grad().clone() : at::Tensor());
      p.mutable_grad() = at::Tensor();
    }
    return g;
  };

  ForwardOptions fo;
  fo.output_hidden_states = true;
  auto full = m->forward(ids, fo);
  EXPECT_FALSE(full.last_hidden.defined());
  prism::ops::CrossEntropyOptions co;
  co.z_loss_weight = z;
  auto ce = prism::ops::cross_entropy(full.logits.reshape({-1, cfg.vocab_size}), labels, co);
  auto loss_a = ce.loss_sum + ce.z_loss_sum;
  loss_a.backward();
  auto ga = grads();

  fo.skip_lm_head = true;
  auto split = m->forward(ids, fo);
  EXPECT_FALSE(split.logits.defined());
  ASSERT_TRUE(split.last_hidden.defined());
  EXPECT_TRUE(close_rel(split.last_hidden, full.hidden_states.back(), 0, 0, "last_hidden vs final norm output"));
  prism::ops::LinearCrossEntropyOptions lo2;
  lo2.z_loss_weight = z;
  lo2.logits_scaling = cfg.logits_scaling;
  lo2.chunk_tokens = 5;
  auto lce = prism::ops::linear_cross_entropy(split.last_hidden.reshape({-1, cfg.hidden_size}), m->lm_head_weight(),
                                              labels, lo2);
  EXPECT_TRUE(close_rel(lce.loss, loss_a, 1e-12, 0, "loss"));
  lce.loss.backward();
  auto gb = grads();
  const auto& params = m->named_parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    ASSERT_EQ(ga[i].defined(), gb[i].defined()) << params[i].first;
    if (ga[i].defined()) EXPECT_TRUE(close_rel(gb[i], ga[i], 1e-10, 1e-13, params[i].first));
  }
}

// llama: untied; llama_sharded: tied; granite: tied + logits_scaling 16; nemotron_h: Mamba2 blocks.
INSTANTIATE_TEST_SUITE_P(Families, LmHeadSplit, ::testing::Values("llama", "llama_sharded", "granite", "nemotron_h"));

}  // namespace
