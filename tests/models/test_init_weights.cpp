// CausalLM::init_weights: the distribution of every parameter kind on every fixture family
// (classified here by HF name, independently of the rule tags in causal_lm.cpp), exact values where
// the rule is deterministic, determinism (seed, thread count, dtype), the config fields it reads,
// and that a freshly initialised model predicts close to uniformly (loss ~ log V).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/models/causal_lm.h"
#include "util/test_util.h"

using prism::models::CausalLM;
using prism::models::ModelConfig;
using prism::test::fixture;

namespace {

std::unique_ptr<CausalLM> fresh(const ModelConfig& cfg, uint64_t seed, c10::ScalarType dt = at::kFloat,
                                double range = -1) {
  prism::models::LoadOptions lo;
  lo.dtype = dt;
  auto m = CausalLM::from_config(cfg, lo);
  m->init_weights(seed, range);
  return m;
}

std::string component(const std::string& name, int from_end) {  // "a.b.c", 1 -> "c", 2 -> "b"
  size_t end = name.size();
  for (int i = 1; i < from_end; ++i) end = name.rfind('.', end - 1);
  const size_t start = name.rfind('.', end - 1);
  return name.substr(start == std::string::npos ? 0 : start + 1, end - (start == std::string::npos ? 0 : start + 1));
}

// Sample mean and std of a N(0, s) tensor are within 5 standard errors.
void expect_normal(const at::Tensor& t, double s, const std::string& what) {
  auto x = t.to(at::kDouble);
  const double n = static_cast<double>(x.numel());
  const double mean = x.mean().item<double>(), sd = x.std().item<double>();
  EXPECT_LT(std::abs(mean), 5 * s / std::sqrt(n)) << what << " mean " << mean;
  EXPECT_LT(std::abs(sd / s - 1), 5 / std::sqrt(2 * n)) << what << " std " << sd << " vs " << s << " (n " << n << ")";
}

class InitWeights : public ::testing::TestWithParam<std::string> {};

TEST_P(InitWeights, EveryParameterFollowsItsFamilyRule) {
  const auto cfg = CausalLM::read_config(fixture(GetParam()));
  EXPECT_EQ(cfg.initializer_range, 0.02);  // written by transformers into every fixture config
  auto m = fresh(cfg, 1234);
  const double s = cfg.initializer_range;
  int normals = 0, ones = 0;
  for (const auto& [name, t] : m->named_parameters()) {
    const std::string last = component(name, 1), module = component(name, 2);
    if (last == "weight" && module.find("norm") != std::string::npos) {  // every RMSNorm, gated or not
      EXPECT_TRUE(at::equal(t, at::ones_like(t))) << name;
      ++ones;
    } else if (last == "bias") {
      EXPECT_TRUE(at::equal(t, at::zeros_like(t))) << name;
    } else if (last == "A_log") {
      auto expect = at::log(at::arange(1, t.size(0) + 1, at::kDouble)).to(at::kFloat);
      EXPECT_TRUE(at::equal(t, expect)) << name << " " << t;
    } else if (last == "D") {
      EXPECT_TRUE(at::equal(t, at::ones_like(t))) << name;
    } else if (last == "dt_bias") {
      if (cfg.mamba.dt_bias_init_ones) {  // transformers' Granite-4 / Bamba
        EXPECT_TRUE(at::equal(t, at::ones_like(t))) << name;
      } else {  // Nemotron-H: softplus(dt_bias) = dt in [time_step_min, time_step_max], all different
        auto dt = at::softplus(t.to(at::kDouble));
        EXPECT_GE(dt.min().item<double>(), cfg.mamba.time_step_min * (1 - 1e-5)) << name << " " << dt;
        EXPECT_LE(dt.max().item<double>(), cfg.mamba.time_step_max * (1 + 1e-5)) << name << " " << dt;
        EXPECT_EQ(std::get<0>(at::_unique(t)).numel(), t.numel()) << name;
      }
    } else if (cfg.rescale_prenorm_residual && name.ends_with("mixer.out_proj.weight")) {
      // U(-b, b), b = 1/sqrt(fan_in)/sqrt(num_layers): std b/sqrt(3)
      const double b = 1 / std::sqrt(static_cast<double>(t.size(1))) / std::sqrt(static_cast<double>(cfg.num_layers()));
      EXPECT_LE(t.abs().max().item<double>(), b) << name;
      EXPECT_GT(t.abs().max().item<double>(), 0.95 * b) << name;
      expect_normal(t, b / std::sqrt(3.0), name);  // mean/std test holds for any distribution
    } else {
      ASSERT_EQ(last, "weight") << "unclassified parameter " << name;
      expect_normal(t, s, name);
      ++normals;
    }
  }
  EXPECT_GT(normals, 3);
  EXPECT_EQ(ones, [&] {
    int n = 1;  // final norm
    for (const auto& l : cfg.layers) {
      n += static_cast<int>(l.blocks.size());
      for (const auto& b : l.blocks) n += b.kind == prism::models::BlockKind::kMamba2;
    }
    return n;
  }());
}

TEST_P(InitWeights, FreshModelPredictsNearlyUniformly) {
  const auto cfg = CausalLM::read_config(fixture(GetParam()));
  auto m = fresh(cfg, 7);
  at::NoGradGuard ng;
  auto ids = at::randint(0, cfg.vocab_size, {2, 24}, at::kLong);
  auto logits = m->forward(ids).logits;
  ASSERT_TRUE(at::isfinite(logits).all().item<bool>());
  auto loss = at::cross_entropy_loss(logits.reshape({-1, cfg.vocab_size}), ids.roll(-1, 1).reshape(-1)).item<double>();
  EXPECT_NEAR(loss, std::log(static_cast<double>(cfg.vocab_size)), 0.1);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, InitWeights, ::testing::ValuesIn(prism::test::model_fixtures()));

TEST(InitWeightsDeterminism, SameSeedSameWeightsOtherSeedOtherWeights) {
  const auto cfg = CausalLM::read_config(fixture("nemotron_h"));
  auto a = fresh(cfg, 42), b = fresh(cfg, 42), c = fresh(cfg, 43);
  const auto &pa = a->named_parameters(), &pb = b->named_parameters(), &pc = c->named_parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(at::equal(pa[i].second, pb[i].second)) << pa[i].first;
    const bool random = !at::equal(pa[i].second, at::full_like(pa[i].second, pa[i].second.view(-1)[0].item()));
    if (random && !pa[i].first.ends_with("A_log")) EXPECT_FALSE(at::equal(pa[i].second, pc[i].second)) << pa[i].first;
  }
  // Random tensors of the same shape differ (one stream per name, not one stream restarted).
  int pairs = 0;
  for (size_t i = 0; i < pa.size(); ++i)
    for (size_t j = i + 1; j < pa.size(); ++j)
      if (pa[i].first.ends_with("proj.weight") && pa[i].second.sizes() == pa[j].second.sizes()) {
        EXPECT_FALSE(at::equal(pa[i].second, pa[j].second)) << pa[i].first << " vs " << pa[j].first;
        ++pairs;
      }
  EXPECT_GT(pairs, 0);
}

TEST(InitWeightsDeterminism, IndependentOfThreadCountAndDtype) {
  auto cfg = CausalLM::read_config(fixture("granite4_hybrid"));
  cfg.vocab_size = 4096;  // 262144-element embedding: above ATen's parallel grain size
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  auto one = fresh(cfg, 5);
  at::set_num_threads(std::max(2, threads));
  auto many = fresh(cfg, 5);
  at::set_num_threads(threads);
  auto bf16 = fresh(cfg, 5, at::kBFloat16);
  auto f64 = fresh(cfg, 5, at::kDouble);
  for (size_t i = 0; i < one->named_parameters().size(); ++i) {
    const auto& [name, t] = one->named_parameters()[i];
    EXPECT_TRUE(at::equal(t, many->named_parameters()[i].second)) << name;
    EXPECT_TRUE(at::equal(t.to(at::kBFloat16), bf16->named_parameters()[i].second)) << name;
    EXPECT_TRUE(at::equal(t.to(at::kDouble), f64->named_parameters()[i].second)) << name;
  }
}

TEST(InitWeightsDeterminism, InPlaceSoHandedOutTensorsStayTheParameters) {
  auto m = CausalLM::from_pretrained(fixture("llama"));
  auto embed = m->named_parameters()[0].second;  // e.g. held by an optimizer
  const auto before = embed.clone();
  m->init_weights(3);
  EXPECT_FALSE(at::equal(embed, before));
  EXPECT_TRUE(embed.is_same(m->named_parameters()[0].second));
  // works on parameters that require grad, and leaves that flag alone
  for (auto& [n, p] : m->named_parameters()) p.requires_grad_(true);
  m->init_weights(3);
  EXPECT_TRUE(m->named_parameters()[0].second.requires_grad());
}

TEST(InitWeightsConfig, InitializerRangeFromConfigOrArgument) {
  auto cfg = CausalLM::read_config(fixture("llama"));
  cfg.initializer_range = 0.05;
  auto m = fresh(cfg, 1);
  expect_normal(m->named_parameters()[0].second, 0.05, "embedding, config range");
  m->init_weights(1, 0.1);
  expect_normal(m->named_parameters()[0].second, 0.1, "embedding, explicit range");
  EXPECT_THROW(m->init_weights(1, std::nan("")), prism::Error);
  prism::models::LoadOptions meta;
  meta.device = "meta";
  EXPECT_THROW(CausalLM::from_config(cfg, meta)->init_weights(1), prism::Error);
}

TEST(InitWeightsConfig, ParsesInitializerRangePadTokenAndMambaKeys) {
  const std::string dir = prism::test::make_temp_dir("init_cfg");
  std::string text = prism::fs::read_file(fixture("llama/config.json"));
  auto replace = [&](const std::string& from, const std::string& to) {
    const auto pos = text.find(from);
    ASSERT_NE(pos, std::string::npos) << from;
    text.replace(pos, from.size(), to);
  };
  replace("\"pad_token_id\": null", "\"pad_token_id\": 3");
  replace("\"initializer_range\": 0.02", "\"initializer_range\": 0.011");
  prism::fs::write_file_atomic(dir + "/config.json", text);
  auto cfg = CausalLM::read_config(dir);
  prism::fs::remove_all(dir);
  EXPECT_EQ(cfg.initializer_range, 0.011);
  ASSERT_TRUE(cfg.padding_idx.has_value());
  EXPECT_EQ(*cfg.padding_idx, 3);
  auto m = fresh(cfg, 9);
  const auto& embed = m->named_parameters()[0].second;
  EXPECT_TRUE(at::equal(embed[3], at::zeros_like(embed[3])));
  EXPECT_GT(embed[2].abs().max().item<double>(), 0.0);

  // pad_token_id null: no padding row. Nemotron-H has pad_token_id 0 but, as transformers'
  // NemotronHModel, no padding_idx; it reads the time_step_* init keys and rescale_prenorm_residual.
  EXPECT_FALSE(CausalLM::read_config(fixture("llama")).padding_idx.has_value());
  auto nh = CausalLM::read_config(fixture("nemotron_h"));
  EXPECT_FALSE(nh.padding_idx.has_value());
  EXPECT_TRUE(nh.rescale_prenorm_residual);
  EXPECT_EQ(nh.mamba.time_step_min, 0.001);
  EXPECT_EQ(nh.mamba.time_step_max, 0.1);
  EXPECT_EQ(nh.mamba.time_step_floor, 1e-4);
  EXPECT_FALSE(nh.mamba.dt_bias_init_ones);
  EXPECT_TRUE(CausalLM::read_config(fixture("bamba")).mamba.dt_bias_init_ones);
  EXPECT_TRUE(CausalLM::read_config(fixture("granite4_hybrid")).mamba.dt_bias_init_ones);
  EXPECT_FALSE(CausalLM::read_config(fixture("granite4_hybrid")).rescale_prenorm_residual);
}

TEST(InitWeightsConfig, DtBiasFloorApplies) {
  auto cfg = CausalLM::read_config(fixture("nemotron_h"));
  cfg.mamba.time_step_min = 1e-6;
  cfg.mamba.time_step_max = 2e-6;
  cfg.mamba.time_step_floor = 1e-3;  // above the whole range: every dt is the floor
  auto m = fresh(cfg, 11);
  for (const auto& [n, t] : m->named_parameters())
    if (n.ends_with("dt_bias")) {
      auto dt = at::softplus(t.to(at::kDouble));
      EXPECT_TRUE(prism::test::close_rel(dt, at::full_like(dt, 1e-3), 1e-5, 0, n));
    }
  cfg.mamba.time_step_min = 0.0;  // log(0): refused when initialising, not when loading
  EXPECT_THROW(fresh(cfg, 1), prism::Error);
}

}  // namespace
