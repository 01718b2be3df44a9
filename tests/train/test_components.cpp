// The training components on their own: parameter kinds from the model (the weight-decay mask),
// the step helper's normalisation and guards, the run lock.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <limits>
#include <map>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/models/causal_lm.h"
#include "prism/train/model_setup.h"
#include "prism/train/optimizer.h"
#include "prism/train/run_context.h"
#include "prism/train/run_lock.h"
#include "prism/train/step.h"
#include "util/test_util.h"

namespace prism::train {
namespace {

bool ends_with(const std::string& s, const std::string& t) {
  return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
}

// The oracle: the HF naming conventions of every family prism loads, written out independently of
// where the model declares its parameters.
std::string kind_from_hf_name(const std::string& name, int64_t dim, const models::ModelConfig& c) {
  if (name == c.embed_name) return "embedding";
  if (!c.tie_word_embeddings && name == c.lm_head_name) return "lm_head";
  if (ends_with(name, ".bias")) return "bias";
  if (ends_with(name, "A_log") || ends_with(name, ".D") || ends_with(name, "dt_bias")) return "ssm";
  if (dim <= 1) return "norm";
  return "matrix";
}

TEST(ParameterKinds, MatchHfNamingForEveryFixtureFamily) {
  std::vector<std::string> dirs = {fs::join(test::source_dir(), "configs/tiny/llama-tiny")};
  if (fs::is_directory(test::fixtures_dir()))
    for (const auto& f : fs::list_dir(test::fixtures_dir()))
      if (fs::exists(fs::join(test::fixtures_dir(), f + "/config.json"))) dirs.push_back(fs::join(test::fixtures_dir(), f));
  std::map<std::string, int> seen;
  for (const auto& dir : dirs) {
    SCOPED_TRACE(dir);
    models::LoadOptions lo;
    lo.device = "meta";
    auto m = models::CausalLM::from_config(models::CausalLM::read_config(dir), lo);
    const auto& ps = m->named_parameters();
    const auto& kinds = m->parameter_kinds();
    ASSERT_EQ(kinds.size(), ps.size());
    for (size_t i = 0; i < ps.size(); ++i) {
      const std::string got = models::parameter_kind_name(kinds[i]);
      EXPECT_EQ(got, kind_from_hf_name(ps[i].first, ps[i].second.dim(), m->config())) << ps[i].first;
      ++seen[got];
    }
  }
  EXPECT_GT(seen["embedding"], 0);
  EXPECT_GT(seen["lm_head"], 0);
  EXPECT_GT(seen["norm"], 0);
  EXPECT_GT(seen["matrix"], 0);
  if (dirs.size() > 1) EXPECT_GT(seen["ssm"], 0) << "the fixtures include Mamba2 families";
}

TEST(ModelSetup, DecayMaskFollowsNoDecayKinds) {
  models::LoadOptions lo;
  lo.device = "meta";
  auto m = models::CausalLM::from_config(
      models::CausalLM::read_config(fs::join(test::source_dir(), "configs/tiny/llama-tiny")), lo);
  const auto& ps = m->named_parameters();
  auto mask = decay_mask(*m, {"norm", "embedding"});
  ASSERT_EQ(mask.size(), ps.size());
  for (size_t i = 0; i < ps.size(); ++i) {
    const bool norm_or_embed = ends_with(ps[i].first, "norm.weight") || ps[i].first == "model.embed_tokens.weight";
    EXPECT_EQ(mask[i], !norm_or_embed) << ps[i].first;
  }
}

// train.trainable: kinds from the model's own ParameterInfo, regexes on names, the union of a list;
// a selector that matches nothing or does not parse names its list entry.
TEST(ModelSetup, TrainableMaskSelectsKindsAndNames) {
  models::LoadOptions lo;
  lo.device = "meta";
  auto m = models::CausalLM::from_config(
      models::CausalLM::read_config(fs::join(test::source_dir(), "configs/tiny/llama-tiny")), lo);
  const auto& ps = m->named_parameters();
  auto attn = trainable_mask(*m, {"attention"});
  auto all = trainable_mask(*m, {"all"});
  auto mixed = trainable_mask(*m, {"mlp", "^model\\.layers\\.1\\.input_layernorm"});
  int n_attn = 0;
  for (size_t i = 0; i < ps.size(); ++i) {
    const std::string& n = ps[i].first;
    const bool is_attn = n.find(".self_attn.") != std::string::npos;  // q/k/v/o_proj
    EXPECT_EQ(attn[i], is_attn) << n;
    EXPECT_TRUE(all[i]) << n;
    EXPECT_EQ(mixed[i], n.find(".mlp.") != std::string::npos || n == "model.layers.1.input_layernorm.weight") << n;
    n_attn += is_attn;
  }
  EXPECT_EQ(n_attn, 8);  // 2 layers x q, k, v, o (no biases)
  auto expect_error = [&](const std::vector<std::string>& sel, const std::string& needle) {
    try {
      trainable_mask(*m, sel);
      FAIL() << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error({"attention", "mamba2"}, "train.trainable[1]");  // a dense model has no Mamba2 block
  expect_error({"layers\\.7\\."}, "train.trainable[0]");
  expect_error({"q_proj("}, "not a valid regex");
  expect_error({}, "train.trainable");
}

// Frozen parameters are left out of the optimizer: no requires_grad, no buckets, no state.
TEST(ModelSetup, FrozenParametersGetNoGradientAndNoOptimizerState) {
  models::LoadOptions lo;
  lo.dtype = at::kFloat;
  auto m = models::CausalLM::from_pretrained(fs::join(test::source_dir(), "configs/tiny/llama-tiny"), lo);
  std::unique_ptr<RunContext> ctx = RunContext::create("cpu", {}, 1);
  OptimizerConfig oc;
  int64_t n_attn = 0;
  const auto mask = trainable_mask(*m, {"attention"});
  for (size_t i = 0; i < mask.size(); ++i)
    if (mask[i]) n_attn += m->named_parameters()[i].second.numel();
  auto opt = make_optimizer(*m, *ctx, oc, mask);
  for (size_t i = 0; i < mask.size(); ++i)
    EXPECT_EQ(m->named_parameters()[i].second.requires_grad(), mask[i]) << m->named_parameters()[i].first;
  // fp32 on one rank: gradient buffer + two moments (the parameters are their own master copy),
  // padded to 64 elements per bucket; nothing for the frozen ones.
  EXPECT_GE(opt->state_bytes(), 12 * n_attn);
  EXPECT_LT(opt->state_bytes(), 12 * (n_attn + 64 * 16));
  EXPECT_LT(n_attn * 3, m->num_parameters());
}

// A linear model (loss = sum(c * w)) whose gradients are known: the runner divides by the global
// normaliser, sums the micro-batches, and skips non-finite and absurd steps untouched.
struct LinearFixture {
  std::unique_ptr<RunContext> ctx = RunContext::create("cpu", {}, 1);
  std::vector<std::pair<std::string, at::Tensor>> ps = {{"w", at::full({4, 3}, 0.5).requires_grad_(true)}};
  std::unique_ptr<DistributedAdamW> opt;
  LinearFixture() {
    OptimizerConfig oc;
    oc.weight_decay = 0;
    oc.max_grad_norm = 0;
    opt = std::make_unique<DistributedAdamW>(ps, std::vector<bool>{true}, ctx->comm(), oc);
  }
  at::Tensor w() const { return ps[0].second.detach().clone(); }
};

TEST(StepRunner, NormalisesAccumulatesAndGuards) {
  LinearFixture f;
  StepRunner runner(*f.ctx, *f.opt, {0.0, /*max_update_ratio=*/1.0});
  const auto c1 = at::arange(12, at::kFloat).reshape({4, 3}), c2 = at::ones({4, 3});
  runner.begin(2, /*normaliser=*/4.0);
  runner.backward((f.ps[0].second * c1).sum(), 6.0);
  runner.backward((f.ps[0].second * c2).sum(), 2.0);
  auto r = runner.finish(1e-2, false, {3.0, 5.0});
  EXPECT_TRUE(r.applied) << r.skip_reason;
  EXPECT_DOUBLE_EQ(r.loss, 2.0);  // (6 + 2) / 4
  EXPECT_NEAR(r.grad_norm, ((c1 + c2) / 4).to(at::kDouble).norm().item<double>(), 1e-6);
  EXPECT_EQ(r.sums, (std::vector<double>{3.0, 5.0}));
  EXPECT_FALSE(r.stop);
  // First AdamW step: every element moves by lr (m_hat / sqrt(v_hat) = sign(g) = 1 here, except
  // the c1 = 0 element whose gradient 1/4 is still positive).
  EXPECT_TRUE(at::allclose(f.w(), at::full({4, 3}, 0.5 - 1e-2), 1e-5, 1e-6));

  // A NaN loss: skipped, weights untouched, streak counted.
  auto before = f.w();
  runner.begin(1, 4.0);
  runner.backward((f.ps[0].second * c1).sum() * std::numeric_limits<double>::quiet_NaN(), std::nan(""));
  r = runner.finish(1e-2, true);
  EXPECT_FALSE(r.applied);
  EXPECT_EQ(r.skip_reason, "non-finite loss");
  EXPECT_TRUE(r.stop);
  EXPECT_EQ(r.consecutive_skipped, 1);
  EXPECT_TRUE(at::equal(f.w(), before));

  // lr 1e6: finite gradient, absurd update (|dw| / |w| ~ 1e6 / 0.49): skipped, weights untouched.
  runner.begin(1, 4.0);
  runner.backward((f.ps[0].second * c2).sum(), 1.0);
  r = runner.finish(1e6);
  EXPECT_FALSE(r.applied);
  EXPECT_NE(r.skip_reason.find("update too large"), std::string::npos) << r.skip_reason;
  EXPECT_GT(r.update_ratio, 1e5);
  EXPECT_EQ(r.consecutive_skipped, 2);
  EXPECT_TRUE(at::equal(f.w(), before));
  EXPECT_EQ(f.opt->steps(), 1);

  // A normal step again resets the streak.
  runner.begin(1, 4.0);
  runner.backward((f.ps[0].second * c2).sum(), 1.0);
  r = runner.finish(1e-2);
  EXPECT_TRUE(r.applied);
  EXPECT_EQ(r.consecutive_skipped, 0);
  EXPECT_LT(r.update_ratio, 0.1);
}

TEST(StepRunner, MisuseIsAnError) {
  LinearFixture f;
  StepRunner runner(*f.ctx, *f.opt, {});
  runner.begin(2, 1.0);
  runner.backward(f.ps[0].second.sum(), 0.0);
  EXPECT_THROW(runner.finish(1e-3), Error);  // one of two micro-batches
}

// Issue 13 #1: a second writer is refused naming the holder; the lock dies with its holder.
TEST(RunLock, SecondWriterRefusedUntilHolderDies) {
  const auto dir = test::make_temp_dir("prism-runlock");
  int ready[2], release[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(release), 0);
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(release[1]);  // so the read below ends (EOF) if the parent dies before releasing
    ::close(ready[0]);
    RunLock held(dir);
    char c = 1;
    (void)!::write(ready[1], &c, 1);
    (void)!::read(release[0], &c, 1);  // hold until the parent says so (or is gone)
    ::_exit(0);                          // no destructor: like a killed process
  }
  ::close(release[0]);
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  try {
    RunLock second(dir);
    ADD_FAILURE() << "a second writer got the lock";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("run.lock"), std::string::npos) << m;
    EXPECT_NE(m.find("in use by another run"), std::string::npos) << m;
    EXPECT_NE(m.find("pid " + std::to_string(child)), std::string::npos) << m;
  }
  ::close(release[1]);  // EOF: the holder exits
  ::close(ready[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_NO_THROW(RunLock again(dir));  // released by the kernel when the holder exited
  fs::remove_all(dir);
}

}  // namespace
}  // namespace prism::train
