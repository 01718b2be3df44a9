// DistributedAdamW on one rank: the update against a float64 AdamW written out from the paper's
// formula (Loshchilov & Hutter, decoupled decay; PyTorch's bias-corrected form), gradient
// accumulation through the post-accumulate hooks, clipping, and state save/load across bucket
// layouts. Multi-rank behaviour (ZeRO-1 shards, reduce-scatter) is covered end to end by
// test_mid_e2e.cpp with real processes.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "prism/core/fs.h"
#include "prism/distributed/communicator.h"
#include "prism/train/optimizer.h"
#include "util/test_util.h"

namespace {

using prism::train::DistributedAdamW;
using prism::train::OptimizerConfig;

std::unique_ptr<prism::distributed::Communicator> local_comm() {
  prism::distributed::DistEnv env;
  prism::distributed::CommOptions o;
  o.backend = "local";
  return prism::distributed::make_communicator(env, o);
}

struct Ref {  // float64 AdamW state of one tensor
  at::Tensor p, m, v;
};

// One float64 AdamW step (decoupled weight decay, bias correction), written out element-wise.
void ref_step(Ref& r, const at::Tensor& g64, double lr, double b1, double b2, double eps, double wd, int64_t t) {
  auto p = r.p.accessor<double, 1>();
  auto m = r.m.accessor<double, 1>();
  auto v = r.v.accessor<double, 1>();
  auto g = g64.accessor<double, 1>();
  for (int64_t i = 0; i < r.p.numel(); ++i) {
    p[i] *= 1.0 - lr * wd;
    m[i] = b1 * m[i] + (1 - b1) * g[i];
    v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
    const double mhat = m[i] / (1 - std::pow(b1, t)), vhat = v[i] / (1 - std::pow(b2, t));
    p[i] -= lr * mhat / (std::sqrt(vhat) + eps);
  }
}

std::vector<std::pair<std::string, at::Tensor>> make_params(uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<std::pair<std::string, at::Tensor>> ps = {
      {"model.embed_tokens.weight", at::randn({17, 8}, gen)},
      {"model.layers.0.input_layernorm.weight", at::randn({8}, gen)},
      {"model.layers.0.mlp.up_proj.weight", at::randn({13, 8}, gen)},
      {"model.layers.0.mlp.up_proj.bias", at::randn({13}, gen)},
      {"lm_head.weight", at::randn({17, 8}, gen)},
  };
  for (auto& [n, t] : ps) t.requires_grad_(true);
  return ps;
}

// Norm weights and biases (the 1-D tensors here) without weight decay.
std::vector<bool> decay_flags(const std::vector<std::pair<std::string, at::Tensor>>& ps) {
  std::vector<bool> d;
  for (const auto& [n, t] : ps) d.push_back(t.dim() > 1);
  return d;
}

// A loss whose gradient is known in closed form: sum(c * p) has gradient c.
at::Tensor linear_loss(const std::vector<std::pair<std::string, at::Tensor>>& ps, const std::vector<at::Tensor>& c) {
  at::Tensor l = at::zeros({}, at::kFloat);
  for (size_t i = 0; i < ps.size(); ++i) l = l + (ps[i].second * c[i]).sum();
  return l;
}

class AdamW : public ::testing::TestWithParam<bool> {};

TEST_P(AdamW, MatchesFloat64ReferenceWithDecayGroupsAndAccumulation) {
  auto comm = local_comm();
  auto ps = make_params(1);
  OptimizerConfig cfg;
  cfg.fused = GetParam();
  cfg.betas = {0.9, 0.95};
  cfg.eps = 1e-8;
  cfg.weight_decay = 0.1;
  cfg.bucket_mb = 200.0 * 4 / (1 << 20);  // ~200 elements per bucket: several buckets
  auto decay = decay_flags(ps);
  std::vector<Ref> ref;
  for (auto& [n, t] : ps) {
    auto p = t.detach().to(at::kDouble).reshape({-1}).clone();
    ref.push_back({p, at::zeros_like(p), at::zeros_like(p)});
  }
  DistributedAdamW opt(ps, decay, *comm, cfg);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const double lrs[] = {1e-2, 5e-3, 2e-3};
  for (int step = 1; step <= 3; ++step) {
    opt.zero_grad();
    std::vector<at::Tensor> c1, c2;
    for (auto& [n, t] : ps) {
      c1.push_back(at::randn(t.sizes(), gen));
      c2.push_back(at::randn(t.sizes(), gen));
    }
    opt.set_sync(false);
    linear_loss(ps, c1).backward();
    opt.set_sync(true);
    linear_loss(ps, c2).backward();
    opt.finish_grad_sync();
    // Hooks moved the gradient into the fp32 buckets; no per-parameter .grad is left behind.
    for (auto& [n, t] : ps) EXPECT_FALSE(t.grad().defined()) << n;
    double norm2 = 0;
    for (size_t i = 0; i < ps.size(); ++i) norm2 += (c1[i] + c2[i]).to(at::kDouble).pow(2).sum().item<double>();
    EXPECT_NEAR(opt.grad_norm(), std::sqrt(norm2), 1e-5 * std::sqrt(norm2));
    opt.step(lrs[step - 1]);
    for (size_t i = 0; i < ps.size(); ++i) {
      auto g = (c1[i] + c2[i]).to(at::kDouble).reshape({-1});
      ref_step(ref[i], g, lrs[step - 1], 0.9, 0.95, 1e-8, decay[i] ? 0.1 : 0.0, step);
      auto got = ps[i].second.detach().to(at::kDouble).reshape({-1});
      EXPECT_TRUE(prism::test::close_rel(got, ref[i].p, 2e-6)) << ps[i].first << " step " << step;
    }
  }
  EXPECT_EQ(opt.steps(), 3);
}

INSTANTIATE_TEST_SUITE_P(FusedAndReference, AdamW, ::testing::Values(true, false));

// update_ratio(lr) predicts ||delta w|| / ||w|| of the coming step (the divergence guard of the
// step helper) without touching the state: checked against a float64 AdamW, over three steps
// whose updates are still compared with the reference.
TEST(AdamWUpdateRatio, MatchesFloat64UpdateAndLeavesStateAlone) {
  auto comm = local_comm();
  auto ps = make_params(3);
  OptimizerConfig cfg;
  cfg.weight_decay = 0.1;
  cfg.bucket_mb = 200.0 * 4 / (1 << 20);
  auto decay = decay_flags(ps);
  std::vector<Ref> ref;
  for (auto& [n, t] : ps) {
    auto p = t.detach().to(at::kDouble).reshape({-1}).clone();
    ref.push_back({p, at::zeros_like(p), at::zeros_like(p)});
  }
  DistributedAdamW opt(ps, decay, *comm, cfg);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  const double lrs[] = {1e-2, 3e-1, 1e6};
  for (int step = 1; step <= 3; ++step) {
    opt.zero_grad();
    std::vector<at::Tensor> c;
    for (auto& [n, t] : ps) c.push_back(at::randn(t.sizes(), gen));
    opt.set_sync(true);
    linear_loss(ps, c).backward();
    opt.finish_grad_sync();
    const double lr = lrs[step - 1];
    const double got = opt.update_ratio(lr);
    double d2 = 0, w2 = 0;
    for (size_t i = 0; i < ps.size(); ++i) {
      auto before = ref[i].p.clone();
      ref_step(ref[i], c[i].to(at::kDouble).reshape({-1}), lr, cfg.betas[0], cfg.betas[1], cfg.eps,
               decay[i] ? 0.1 : 0.0, step);
      d2 += (ref[i].p - before).pow(2).sum().item<double>();
      w2 += before.pow(2).sum().item<double>();
    }
    const double want = std::sqrt(d2 / w2);
    EXPECT_NEAR(got, want, 1e-5 * want) << "step " << step;
    EXPECT_EQ(opt.steps(), step - 1);  // nothing applied yet
    opt.step(lr);
    for (size_t i = 0; i < ps.size(); ++i)
      EXPECT_TRUE(prism::test::close_rel(ps[i].second.detach().to(at::kDouble).reshape({-1}), ref[i].p, 2e-6))
          << ps[i].first << " step " << step;
  }
  EXPECT_GT(opt.steps(), 0);
}

// A parameter missing from a step's graph has a zero gradient in that step, even though the
// previous step left its gradient in the bucket (zero_grad does not clear the buckets).
TEST(AdamWUnused, ParameterWithoutGradientInAStepCountsAsZero) {
  auto comm = local_comm();
  auto ps = make_params(3);
  OptimizerConfig cfg;
  cfg.betas = {0.9, 0.95};
  cfg.eps = 1e-8;
  cfg.weight_decay = 0.1;
  auto decay = decay_flags(ps);
  std::vector<Ref> ref;
  for (auto& [n, t] : ps) {
    auto p = t.detach().to(at::kDouble).reshape({-1}).clone();
    ref.push_back({p, at::zeros_like(p), at::zeros_like(p)});
  }
  DistributedAdamW opt(ps, decay, *comm, cfg);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  const size_t skipped = 2;  // up_proj.weight: in the graph at step 1 only
  for (int step = 1; step <= 2; ++step) {
    opt.zero_grad();
    std::vector<at::Tensor> c;
    for (auto& [n, t] : ps) c.push_back(at::randn(t.sizes(), gen));
    at::Tensor l = at::zeros({}, at::kFloat);
    for (size_t i = 0; i < ps.size(); ++i)
      if (step == 1 || i != skipped) l = l + (ps[i].second * c[i]).sum();
    l.backward();
    opt.finish_grad_sync();
    double norm2 = 0;
    for (size_t i = 0; i < ps.size(); ++i)
      if (step == 1 || i != skipped) norm2 += c[i].to(at::kDouble).pow(2).sum().item<double>();
    EXPECT_NEAR(opt.grad_norm(), std::sqrt(norm2), 1e-5 * std::sqrt(norm2)) << "step " << step;
    opt.step(1e-2);
    for (size_t i = 0; i < ps.size(); ++i) {
      auto g = step == 2 && i == skipped ? at::zeros_like(ref[i].p) : c[i].to(at::kDouble).reshape({-1});
      ref_step(ref[i], g, 1e-2, 0.9, 0.95, 1e-8, decay[i] ? 0.1 : 0.0, step);
      auto got = ps[i].second.detach().to(at::kDouble).reshape({-1});
      EXPECT_TRUE(prism::test::close_rel(got, ref[i].p, 2e-6)) << ps[i].first << " step " << step;
    }
  }
}

TEST(AdamWClip, ScalesTheGradientToTheMaxNorm) {
  auto comm = local_comm();
  auto ps = make_params(2);
  OptimizerConfig cfg;
  cfg.weight_decay = 0;
  auto ps2 = make_params(2);
  DistributedAdamW a(ps, std::vector<bool>(ps.size(), true), *comm, cfg);
  DistributedAdamW b(ps2, std::vector<bool>(ps2.size(), true), *comm, cfg);
  std::vector<at::Tensor> c;
  for (auto& [n, t] : ps) c.push_back(at::full(t.sizes(), 3.0));
  a.zero_grad();
  linear_loss(ps, c).backward();
  a.finish_grad_sync();
  const double n = a.grad_norm();
  EXPECT_NEAR(a.clip_grads(n, 1.0), 1.0 / (n + 1e-6), 1e-12);
  EXPECT_NEAR(a.grad_norm(), 1.0, 1e-5);
  // Below the threshold nothing changes.
  EXPECT_EQ(a.clip_grads(a.grad_norm(), 10.0), 1.0);
  // A clipped gradient of constant 3 is a constant too: Adam's first step moves every element by
  // lr (m_hat / sqrt(v_hat) = sign(g)), exactly as the unclipped one does.
  std::vector<at::Tensor> c2;
  for (auto& [n2, t] : ps2) c2.push_back(at::full(t.sizes(), 3.0));
  b.zero_grad();
  linear_loss(ps2, c2).backward();
  b.finish_grad_sync();
  a.step(1e-3);
  b.step(1e-3);
  for (size_t i = 0; i < ps.size(); ++i)
    EXPECT_TRUE(prism::test::close_rel(ps[i].second.detach(), ps2[i].second.detach(), 1e-5)) << ps[i].first;
}

TEST(AdamWState, SaveLoadAcrossBucketLayoutsContinuesIdentically) {
  auto comm = local_comm();
  auto dir = prism::test::make_temp_dir("prism-optim");
  auto run = [&](std::vector<std::pair<std::string, at::Tensor>>& ps, DistributedAdamW& opt, int from, int to) {
    for (int s = from; s < to; ++s) {
      auto gen = at::make_generator<at::CPUGeneratorImpl>(100 + s);
      std::vector<at::Tensor> c;
      for (auto& [n, t] : ps) c.push_back(at::randn(t.sizes(), gen));
      opt.zero_grad();
      linear_loss(ps, c).backward();
      opt.finish_grad_sync();
      opt.step(1e-2);
    }
  };
  OptimizerConfig small;
  small.bucket_mb = 64.0 * 4 / (1 << 20);
  OptimizerConfig big;  // one bucket
  auto straight = make_params(3);
  DistributedAdamW a(straight, decay_flags(straight), *comm, small);
  run(straight, a, 0, 4);

  auto first = make_params(3);
  {
    DistributedAdamW b(first, decay_flags(first), *comm, small);
    run(first, b, 0, 2);
    b.save(dir);
  }
  ASSERT_TRUE(prism::fs::exists(prism::fs::join(dir, "optimizer-rank00000-of-00001.safetensors")));
  auto resumed = make_params(99);  // different values: load must overwrite them from the master copy
  DistributedAdamW c(resumed, decay_flags(resumed), *comm, big);
  c.load(dir);
  EXPECT_EQ(c.steps(), 2);
  for (size_t i = 0; i < first.size(); ++i)
    EXPECT_TRUE(at::equal(first[i].second.detach(), resumed[i].second.detach())) << first[i].first;
  run(resumed, c, 2, 4);
  for (size_t i = 0; i < straight.size(); ++i)
    EXPECT_TRUE(at::equal(straight[i].second.detach(), resumed[i].second.detach())) << straight[i].first;
  prism::fs::remove_all(dir);
}

TEST(AdamWState, LoadRefusesAnotherModel) {
  auto comm = local_comm();
  auto dir = prism::test::make_temp_dir("prism-optim");
  auto ps = make_params(4);
  {
    DistributedAdamW a(ps, decay_flags(ps), *comm, {});
    a.save(dir);
  }
  std::vector<std::pair<std::string, at::Tensor>> other = {{"w", at::randn({5, 5}).requires_grad_(true)}};
  DistributedAdamW b(other, {true}, *comm, {});
  try {
    b.load(dir);
    FAIL() << "expected an error";
  } catch (const prism::Error& e) {
    EXPECT_NE(std::string(e.what()).find("different model"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("optimizer-rank00000-of-00001.safetensors"), std::string::npos) << e.what();
  }
  prism::fs::remove_all(dir);
}

}  // namespace
