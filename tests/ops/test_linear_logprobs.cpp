// linear_logprobs on the CPU: the chunked algorithm (ATen chunk steps, logits recomputed in
// backward) and linear_logprobs_ref against a float64 oracle written here with torch autograd
// (matmul, / logits_scaling / temperature, log_softmax, gather, -sum p log p; the objective
// sum(g_lp * logprobs) + sum(g_H * entropy) with random per-row upstream gradients), for values
// and for d hidden / d weight; chunk sizes that do and do not divide N, N = 1, N = 0, ignore_index
// rows, logits scaling and temperature; a hand-computed tempered distribution; -sum(logprobs)
// against linear_cross_entropy (loss and gradients); central differences; the chunked path
// against the reference in fp32; bf16 / fp32 within twice the reference's error against float64;
// which outputs are differentiated (entropy only, log-probs only, both), grad mode and
// requires_grad combinations, double backward refused; bad arguments. The CUDA kernel path:
// test_linear_logprobs_emu.cpp (its kernels on the CPU) and test_linear_logprobs_cuda.cpp (GPU).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "prism/core/error.h"
#include "prism/ops/linear_cross_entropy.h"
#include "prism/ops/linear_logprobs.h"
#include "util/test_util.h"

namespace {

using prism::ops::Impl;
using prism::ops::linear_logprobs;
using prism::ops::linear_logprobs_ref;
using prism::ops::LinearLogprobsOptions;
using prism::test::close_rel;
using prism::test::max_abs;
using prism::test::max_abs_diff;

LinearLogprobsOptions opts(double scaling = 1.0, double temperature = 1.0, int64_t chunk = 0, int64_t ignore = -100) {
  LinearLogprobsOptions o;
  o.logits_scaling = scaling;
  o.temperature = temperature;
  o.chunk_tokens = chunk;
  o.ignore_index = ignore;
  return o;
}

at::Tensor random_labels(int64_t N, int64_t V, double ignored = 0.25, int64_t ignore = -100) {
  auto l = at::randint(0, V, {N}, at::kLong);
  return l.masked_fill(at::rand({N}).lt(ignored), ignore);
}

// Which outputs the objective uses.
enum class Use { kLogprobs, kEntropy, kBoth };

struct Out {
  at::Tensor logprobs, entropy, dh, dw;
};

// The oracle: everything in float64 through torch autograd, independent of prism's ops.
Out oracle(const at::Tensor& h0, const at::Tensor& w0, const at::Tensor& labels, const LinearLogprobsOptions& o,
           const at::Tensor& g_lp, const at::Tensor& g_h, Use use) {
  auto h = h0.detach().to(at::kDouble).requires_grad_(true);
  auto w = w0.detach().to(at::kDouble).requires_grad_(true);
  auto z = at::matmul(h, w.t()) / o.logits_scaling / o.temperature;
  auto logp = at::log_softmax(z, 1);
  auto keep = labels.ne(o.ignore_index);
  auto safe = labels.masked_fill(keep.logical_not(), 0).to(at::kLong).unsqueeze(1);
  auto lp = logp.gather(1, safe).squeeze(1) * keep.to(at::kDouble);
  auto ent = -(logp.exp() * logp).sum(1) * keep.to(at::kDouble);
  at::Tensor obj = at::zeros({}, at::kDouble);
  if (use != Use::kEntropy) obj = obj + (lp * g_lp.to(at::kDouble)).sum();
  if (use != Use::kLogprobs) obj = obj + (ent * g_h.to(at::kDouble)).sum();
  obj.backward();
  return {lp.detach(), ent.detach(), h.grad(), w.grad()};
}

// Forward + backward of the same objective through linear_logprobs(impl).
Out run(const at::Tensor& h0, const at::Tensor& w0, const at::Tensor& labels, const LinearLogprobsOptions& o,
        const at::Tensor& g_lp, const at::Tensor& g_h, Use use, Impl impl) {
  auto h = h0.detach().clone().requires_grad_(true);
  auto w = w0.detach().clone().requires_grad_(true);
  auto r = linear_logprobs(h, w, labels, o, impl);
  std::vector<at::Tensor> outs, grads;
  if (use != Use::kEntropy) {
    outs.push_back(r.logprobs);
    grads.push_back(g_lp.to(r.logprobs.scalar_type()));
  }
  if (use != Use::kLogprobs) {
    outs.push_back(r.entropy);
    grads.push_back(g_h.to(r.entropy.scalar_type()));
  }
  torch::autograd::backward(outs, grads);
  return {r.logprobs.detach(), r.entropy.detach(), h.grad(), w.grad()};
}

TEST(LinearLogprobs, ChunkedAndReferenceMatchFloat64Oracle) {
  at::manual_seed(1);
  struct Shape {
    int64_t N, D, V;
  };
  for (const auto& s : std::vector<Shape>{{1, 8, 5}, {7, 16, 33}, {37, 24, 101}}) {
    auto h = at::randn({s.N, s.D}, at::kDouble);
    auto w = at::randn({s.V, s.D}, at::kDouble) * 0.5;
    auto labels = random_labels(s.N, s.V);
    if (s.N > 1) labels[0] = -100;
    auto g_lp = at::randn({s.N}, at::kDouble), g_h = at::randn({s.N}, at::kDouble);
    for (double scaling : {1.0, 0.37, 8.0}) {
      for (double temp : {1.0, 0.6, 1.7}) {
        for (Use use : {Use::kLogprobs, Use::kEntropy, Use::kBoth}) {
          const auto truth = oracle(h, w, labels, opts(scaling, temp), g_lp, g_h, use);
          for (int64_t chunk : {int64_t{-1}, int64_t{0}, int64_t{1}, int64_t{3}, int64_t{7}, s.N, s.N + 5}) {
            SCOPED_TRACE(::testing::Message() << "N " << s.N << " V " << s.V << " scaling " << scaling << " T " << temp
                                              << " use " << static_cast<int>(use) << " chunk " << chunk);
            // chunk -1: the reference
            const auto got = chunk < 0 ? run(h, w, labels, opts(scaling, temp), g_lp, g_h, use, Impl::kReference)
                                       : run(h, w, labels, opts(scaling, temp, chunk), g_lp, g_h, use, Impl::kAuto);
            EXPECT_EQ(got.logprobs.scalar_type(), at::kDouble);
            EXPECT_EQ(got.entropy.scalar_type(), at::kDouble);
            EXPECT_TRUE(close_rel(got.logprobs, truth.logprobs, 1e-12, 1e-13, "logprobs"));
            EXPECT_TRUE(close_rel(got.entropy, truth.entropy, 1e-12, 1e-13, "entropy"));
            EXPECT_TRUE(close_rel(got.dh, truth.dh, 1e-11, 1e-14, "d hidden"));
            EXPECT_TRUE(close_rel(got.dw, truth.dw, 1e-11, 1e-14, "d weight"));
          }
        }
      }
    }
  }
}

TEST(LinearLogprobs, HandComputedTemperedDistribution) {
  // hidden [1] . weight rows {0, 1, 2, -1} = logits (0, 2, 4, -2); / scaling 2 / temperature 0.5 = z = (0, 2, 4, -2).
  auto h = at::tensor({1.0}, at::kDouble).view({1, 1});
  auto w = at::tensor({0.0, 2.0, 4.0, -2.0}, at::kDouble).view({4, 1});
  const double z[4] = {0, 2, 4, -2};
  double sum = 0;
  for (double v : z) sum += std::exp(v);
  const double lse = std::log(sum);
  double ent = 0;
  for (double v : z) ent -= std::exp(v - lse) * (v - lse);
  for (Impl impl : {Impl::kAuto, Impl::kReference}) {
    auto r = linear_logprobs(h, w, at::tensor({int64_t{1}}, at::kLong), opts(2.0, 0.5), impl);
    EXPECT_NEAR(r.logprobs.item<double>(), 2.0 - lse, 1e-14);
    EXPECT_NEAR(r.entropy.item<double>(), ent, 1e-14);
    // At temperature 1 the same logits / 2 are (0, 1, 2, -1): a different distribution.
    auto r1 = linear_logprobs(h, w, at::tensor({int64_t{1}}, at::kLong), opts(2.0, 1.0), impl);
    EXPECT_NEAR(r1.logprobs.item<double>(), 1.0 - std::log(1 + std::exp(1) + std::exp(2) + std::exp(-1)), 1e-14);
  }
}

TEST(LinearLogprobs, SumOfNegativeLogprobsIsLinearCrossEntropy) {
  // Another op as the oracle: -sum(logprobs) is linear_cross_entropy's loss_sum, and its gradient
  // (an all-ones upstream gradient, which autograd hands over as an expanded stride-0 tensor) is
  // the one linear_cross_entropy computes in forward.
  at::manual_seed(8);
  const int64_t N = 23, D = 9, V = 41;
  auto h = at::randn({N, D}, at::kDouble), w = at::randn({V, D}, at::kDouble);
  auto labels = random_labels(N, V);
  prism::ops::LinearCrossEntropyOptions co;
  co.logits_scaling = 3.0;
  co.chunk_tokens = 5;
  auto hc = h.clone().requires_grad_(true), wc = w.clone().requires_grad_(true);
  auto ce = prism::ops::linear_cross_entropy(hc, wc, labels, co);
  ce.loss.backward();
  auto hl = h.clone().requires_grad_(true), wl = w.clone().requires_grad_(true);
  auto lp = linear_logprobs(hl, wl, labels, opts(3.0, 1.0, 7)).logprobs;
  auto loss = -lp.sum();
  loss.backward();
  EXPECT_TRUE(close_rel(loss.detach(), ce.loss_sum, 1e-13, 0, "loss"));
  EXPECT_TRUE(close_rel(hl.grad(), hc.grad(), 1e-12, 1e-15, "d hidden"));
  EXPECT_TRUE(close_rel(wl.grad(), wc.grad(), 1e-12, 1e-15, "d weight"));
}

TEST(LinearLogprobs, GradientMatchesCentralDifferences) {
  at::manual_seed(3);
  const int64_t N = 4, D = 3, V = 6;
  auto h = at::randn({N, D}, at::kDouble), w = at::randn({V, D}, at::kDouble);
  auto labels = at::tensor({2, -100, 5, 0}, at::kLong);
  auto g_lp = at::randn({N}, at::kDouble), g_h = at::randn({N}, at::kDouble);
  const auto o = opts(1.7, 0.8, 3);
  auto f = [&](const std::vector<at::Tensor>& in) {
    auto r = linear_logprobs(in[0], in[1], labels, o);
    return ((r.logprobs * g_lp).sum() + (r.entropy * g_h).sum()).item<double>();
  };
  auto g = run(h, w, labels, o, g_lp, g_h, Use::kBoth, Impl::kAuto);
  auto fd_h = at::empty_like(h), fd_w = at::empty_like(w);
  for (int64_t k = 0; k < h.numel(); ++k) fd_h.view(-1)[k] = prism::test::central_difference(f, {h, w}, 0, k, 1e-6);
  for (int64_t k = 0; k < w.numel(); ++k) fd_w.view(-1)[k] = prism::test::central_difference(f, {h, w}, 1, k, 1e-6);
  EXPECT_TRUE(close_rel(g.dh, fd_h, 1e-7, 1e-9, "d hidden vs central differences"));
  EXPECT_TRUE(close_rel(g.dw, fd_w, 1e-7, 1e-9, "d weight vs central differences"));
  EXPECT_EQ(max_abs(g.dh[1]), 0.0) << "an ignored row gets no gradient";
}

TEST(LinearLogprobs, ChunkedEqualsReferenceInFp32) {
  at::manual_seed(4);
  const int64_t N = 53, D = 40, V = 517;
  auto h = at::randn({N, D}), w = at::randn({V, D}) * 0.2;
  auto labels = random_labels(N, V);
  auto g_lp = at::randn({N}), g_h = at::randn({N});
  for (double temp : {1.0, 0.7}) {
    SCOPED_TRACE(::testing::Message() << "T " << temp);
    auto ref = run(h, w, labels, opts(2.0, temp), g_lp, g_h, Use::kBoth, Impl::kReference);
    auto got = run(h, w, labels, opts(2.0, temp, 16), g_lp, g_h, Use::kBoth, Impl::kAuto);
    EXPECT_EQ(got.logprobs.scalar_type(), at::kFloat);
    EXPECT_EQ(got.entropy.scalar_type(), at::kFloat);
    EXPECT_EQ(got.dh.scalar_type(), at::kFloat);
    EXPECT_TRUE(close_rel(got.logprobs, ref.logprobs, 2e-6, 0, "logprobs"));
    EXPECT_TRUE(close_rel(got.entropy, ref.entropy, 2e-6, 0, "entropy"));
    EXPECT_TRUE(close_rel(got.dh, ref.dh, 2e-5, 0, "d hidden"));
    EXPECT_TRUE(close_rel(got.dw, ref.dw, 2e-5, 0, "d weight"));
  }
}

// keep_logits_bytes: forward keeps the [N, V] logits and backward reads them (3 GEMMs per chunk,
// not 4). Same values and gradients against the float64 oracle; a budget one byte short falls back
// to recomputing; a retained graph gives the same gradient twice (the kept logits are not
// overwritten by the first backward).
TEST(LinearLogprobs, KeptLogitsMatchOracleAndSurviveRepeatedBackward) {
  at::manual_seed(11);
  const int64_t N = 37, D = 24, V = 301;
  auto h = at::randn({N, D}), w = at::randn({V, D}) * 0.3;
  auto labels = random_labels(N, V);
  auto g_lp = at::randn({N}), g_h = at::randn({N});
  const int64_t bytes = N * V * 4;
  for (int64_t budget : {bytes, bytes - 1}) {
    for (int64_t chunk : {int64_t{0}, int64_t{8}}) {
      SCOPED_TRACE(::testing::Message() << "budget " << budget << " chunk " << chunk);
      auto o = opts(1.5, 0.8, chunk);
      o.keep_logits_bytes = budget;
      auto want = oracle(h, w, labels, o, g_lp, g_h, Use::kBoth);
      auto got = run(h, w, labels, o, g_lp, g_h, Use::kBoth, Impl::kAuto);
      EXPECT_TRUE(close_rel(got.logprobs, want.logprobs, 2e-6, 1e-7, "logprobs"));
      EXPECT_TRUE(close_rel(got.entropy, want.entropy, 2e-6, 1e-7, "entropy"));
      EXPECT_TRUE(close_rel(got.dh, want.dh, 2e-5, 1e-7, "d hidden"));
      EXPECT_TRUE(close_rel(got.dw, want.dw, 2e-5, 1e-7, "d weight"));
      auto hg = h.clone().requires_grad_(true);
      auto r = linear_logprobs(hg, w, labels, o);
      auto obj = (r.logprobs * g_lp).sum() + (r.entropy * g_h).sum();
      obj.backward({}, /*retain_graph=*/true);
      auto first = hg.grad().clone();
      obj.backward();
      EXPECT_TRUE(close_rel(hg.grad(), first * 2.0, 1e-6, 0, "two backwards"));
    }
  }
}

// On a CPU the chunk steps walk their rows in blocks of ~1 MiB of logits (a 49K vocabulary: 5 rows
// per block). A vocabulary of 100,003 makes 2-row blocks, so 9 rows per chunk end in a partial
// block; with ignored rows, labels 0 and V - 1, scaling and temperature, the
// kept logits and recomputed ones, fp32 and bf16 (steps in fp32, cast into the bf16 buffer):
// values and both gradients against the float64 oracle.
TEST(LinearLogprobs, CpuBlockedStepsMatchOracleAcrossBlocks) {
  at::manual_seed(17);
  const int64_t N = 23, D = 8, V = 100003;
  auto h64 = at::randn({N, D}, at::kDouble), w64 = at::randn({V, D}, at::kDouble) * 0.6;
  auto labels = random_labels(N, V, 0.3);
  labels[4] = -100;
  labels[5] = 0;
  labels[V % 7] = V - 1;
  auto g_lp = at::randn({N}, at::kDouble), g_h = at::randn({N}, at::kDouble);
  for (auto dt : {at::kFloat, at::kBFloat16}) {
    for (int64_t keep : {int64_t{0}, int64_t{1} << 30}) {
      for (auto use : {Use::kBoth, Use::kLogprobs}) {
        SCOPED_TRACE(::testing::Message() << dt << " keep " << keep << " use " << static_cast<int>(use));
        auto o = opts(1.5, 0.7, 9);
        o.keep_logits_bytes = keep;
        auto h = h64.to(dt), w = w64.to(dt);
        auto want = oracle(h, w, labels, o, g_lp, g_h, use);
        auto got = run(h, w, labels, o, g_lp, g_h, use, Impl::kAuto);
        const double tol = dt == at::kFloat ? 1e-5 : 2e-2;
        EXPECT_TRUE(close_rel(got.logprobs, want.logprobs, tol, 1e-6, "logprobs"));
        EXPECT_TRUE(close_rel(got.entropy, want.entropy, tol, 1e-6, "entropy"));
        EXPECT_TRUE(close_rel(got.dh, want.dh, dt == at::kFloat ? 1e-4 : 5e-2, 1e-6, "d hidden"));
        EXPECT_TRUE(close_rel(got.dw, want.dw, dt == at::kFloat ? 1e-4 : 5e-2, 1e-6, "d weight"));
      }
    }
  }
}

// bf16 / fp32: the chunked path's error against float64 (on the same rounded inputs) is at most
// twice the reference's error in the same dtype.
TEST(LinearLogprobs, LowPrecisionWithinTwiceReferenceError) {
  at::manual_seed(6);
  const int64_t N = 67, D = 32, V = 301;
  auto h64 = at::randn({N, D}, at::kDouble), w64 = at::randn({V, D}, at::kDouble) * 0.3;
  auto labels = random_labels(N, V);
  auto g_lp = at::randn({N}, at::kDouble), g_h = at::randn({N}, at::kDouble);
  for (auto dt : {at::kBFloat16, at::kFloat}) {
    for (double scaling : {1.0, 4.0}) {
      for (double temp : {1.0, 0.6}) {
        SCOPED_TRACE(::testing::Message() << dt << " scaling " << scaling << " T " << temp);
        auto h = h64.to(dt), w = w64.to(dt);
        const auto o = opts(scaling, temp, 16);
        auto truth = oracle(h, w, labels, o, g_lp, g_h, Use::kBoth);
        auto ref = run(h, w, labels, o, g_lp, g_h, Use::kBoth, Impl::kReference);
        auto got = run(h, w, labels, o, g_lp, g_h, Use::kBoth, Impl::kAuto);
        EXPECT_EQ(got.logprobs.scalar_type(), at::kFloat);
        EXPECT_EQ(got.entropy.scalar_type(), at::kFloat);
        EXPECT_EQ(got.dh.scalar_type(), dt);
        EXPECT_EQ(got.dw.scalar_type(), dt);
        auto rule = [&](const at::Tensor& g, const at::Tensor& r, const at::Tensor& t, const char* what) {
          const double floor = 1e-6 * max_abs(t);
          EXPECT_FALSE(g.isnan().any().item<bool>()) << what;
          EXPECT_LE(max_abs_diff(g, t), 2 * max_abs_diff(r, t) + floor) << what;
        };
        rule(got.logprobs, ref.logprobs, truth.logprobs, "logprobs");
        rule(got.entropy, ref.entropy, truth.entropy, "entropy");
        rule(got.dh, ref.dh, truth.dh, "d hidden");
        rule(got.dw, ref.dw, truth.dw, "d weight");
      }
    }
  }
}

TEST(LinearLogprobs, IgnoredRowsCustomIgnoreIndexAndDegenerateBatches) {
  at::manual_seed(5);
  const int64_t D = 6, V = 11;
  auto w = at::randn({V, D}, at::kDouble);
  {  // all ignored: zero outputs and zero gradients, including for weight
    auto h = at::randn({5, D}, at::kDouble);
    auto g = run(h, w, at::full({5}, -100, at::kLong), opts(1.0, 1.0, 2), at::randn({5}, at::kDouble),
                 at::randn({5}, at::kDouble), Use::kBoth, Impl::kAuto);
    EXPECT_EQ(max_abs(g.logprobs), 0.0);
    EXPECT_EQ(max_abs(g.entropy), 0.0);
    EXPECT_EQ(max_abs(g.dh), 0.0);
    EXPECT_EQ(max_abs(g.dw), 0.0);
  }
  {  // huge upstream gradients on ignored rows change nothing
    auto h = at::randn({6, D}, at::kDouble);
    auto labels = at::tensor({1, -100, 3, -100, 0, 10}, at::kLong);
    auto g_lp = at::randn({6}, at::kDouble), g_h = at::randn({6}, at::kDouble);
    auto a = run(h, w, labels, opts(1.0, 1.0, 4), g_lp, g_h, Use::kBoth, Impl::kAuto);
    g_lp.index_put_({at::tensor({1, 3})}, 1e30);
    g_h.index_put_({at::tensor({1, 3})}, -1e30);
    auto b = run(h, w, labels, opts(1.0, 1.0, 4), g_lp, g_h, Use::kBoth, Impl::kAuto);
    EXPECT_TRUE(at::equal(a.dh, b.dh));
    EXPECT_TRUE(at::equal(a.dw, b.dw));
    EXPECT_EQ(max_abs(a.dh[1]), 0.0);
    EXPECT_EQ(max_abs(a.dh[3]), 0.0);
  }
  {  // no tokens
    auto h = at::empty({0, D}, at::kDouble);
    auto g = run(h, w, at::empty({0}, at::kLong), opts(), at::empty({0}, at::kDouble), at::empty({0}, at::kDouble),
                 Use::kBoth, Impl::kAuto);
    EXPECT_EQ(g.logprobs.numel(), 0);
    EXPECT_EQ(g.dh.numel(), 0);
    EXPECT_EQ(max_abs(g.dw), 0.0);
  }
  {  // custom ignore index (0), int32 labels
    auto h = at::randn({12, D}, at::kDouble);
    auto labels = at::randint(0, V, {12}, at::kInt);
    labels.index_put_({at::arange(0, 12, 3)}, 0);
    auto g_lp = at::randn({12}, at::kDouble), g_h = at::randn({12}, at::kDouble);
    auto truth = oracle(h, w, labels, opts(1.0, 1.0, 0, 0), g_lp, g_h, Use::kBoth);
    auto got = run(h, w, labels, opts(1.0, 1.0, 5, 0), g_lp, g_h, Use::kBoth, Impl::kAuto);
    EXPECT_TRUE(close_rel(got.logprobs, truth.logprobs, 1e-12, 0, "ignore_index 0 logprobs"));
    EXPECT_TRUE(close_rel(got.dh, truth.dh, 1e-11, 1e-14, "ignore_index 0 d hidden"));
    EXPECT_EQ(max_abs(got.logprobs.index({at::arange(0, 12, 3)})), 0.0);
  }
}

TEST(LinearLogprobs, GradModeRequiresGradAndRepeatedBackward) {
  at::manual_seed(7);
  const int64_t N = 10, D = 7, V = 19;
  auto h = at::randn({N, D}, at::kDouble), w = at::randn({V, D}, at::kDouble);
  auto labels = random_labels(N, V);
  auto g_lp = at::randn({N}, at::kDouble), g_h = at::randn({N}, at::kDouble);
  const auto o = opts(1.0, 1.0, 4);
  auto full = run(h, w, labels, o, g_lp, g_h, Use::kBoth, Impl::kAuto);
  {  // no grad mode: the same values, nothing differentiable
    at::NoGradGuard ng;
    auto r = linear_logprobs(h.clone().requires_grad_(true), w, labels, o);
    EXPECT_FALSE(r.logprobs.requires_grad());
    EXPECT_FALSE(r.entropy.requires_grad());
    EXPECT_TRUE(at::equal(r.logprobs, full.logprobs));
    EXPECT_TRUE(at::equal(r.entropy, full.entropy));
  }
  {  // only hidden
    auto hg = h.clone().requires_grad_(true);
    auto r = linear_logprobs(hg, w, labels, o);
    ((r.logprobs * g_lp).sum() + (r.entropy * g_h).sum()).backward();
    EXPECT_TRUE(close_rel(hg.grad(), full.dh, 1e-14, 0, "only-hidden d hidden"));
  }
  {  // only weight (a frozen trunk)
    auto wg = w.clone().requires_grad_(true);
    auto r = linear_logprobs(h, wg, labels, o);
    ((r.logprobs * g_lp).sum() + (r.entropy * g_h).sum()).backward();
    EXPECT_TRUE(close_rel(wg.grad(), full.dw, 1e-14, 0, "only-weight d weight"));
  }
  {  // hidden is a non-leaf view of a bigger graph: the gradient flows on
    auto base = h.view({2, N / 2, D}).clone().requires_grad_(true);
    auto r = linear_logprobs((base * 2.0).reshape({N, D}), w, labels, o);
    (r.logprobs * g_lp).sum().backward();
    auto expect = run(h * 2.0, w, labels, o, g_lp, g_h, Use::kLogprobs, Impl::kAuto).dh * 2.0;
    EXPECT_TRUE(close_rel(base.grad().reshape({N, D}), expect, 1e-13, 0, "through a view"));
  }
  {  // recomputed in backward: a retained graph gives the same gradient twice (accumulated)
    auto hg = h.clone().requires_grad_(true);
    auto r = linear_logprobs(hg, w, labels, o);
    auto obj = (r.logprobs * g_lp).sum() + (r.entropy * g_h).sum();
    obj.backward({}, /*retain_graph=*/true);
    obj.backward();
    EXPECT_TRUE(close_rel(hg.grad(), full.dh * 2.0, 1e-14, 0, "two backwards"));
  }
  {  // the returned entropy may be modified in place (backward keeps its own copy)
    auto hg = h.clone().requires_grad_(true);
    auto r = linear_logprobs(hg, w, labels, o);
    auto obj = (r.logprobs * g_lp).sum();
    at::NoGradGuard ng;
    r.entropy.zero_();
    at::AutoGradMode on(true);
    obj.backward();
    auto expect = run(h, w, labels, o, g_lp, g_h, Use::kLogprobs, Impl::kAuto).dh;
    EXPECT_TRUE(close_rel(hg.grad(), expect, 1e-14, 0, "after an in-place change of entropy"));
  }
  {  // second derivatives are refused, not silently wrong
    auto hg = h.clone().requires_grad_(true);
    auto r = linear_logprobs(hg, w, labels, o);
    try {
      torch::autograd::grad({r.logprobs.sum()}, {hg}, {}, /*retain_graph=*/true, /*create_graph=*/true);
      FAIL() << "expected an error";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("double backward"), std::string::npos) << e.what();
    }
  }
}

TEST(LinearLogprobs, NoKernelOnCpuAndBadArguments) {
  auto h = at::randn({4, 3});
  auto w = at::randn({7, 3});
  auto l = at::tensor({0, 1, 2, 3}, at::kLong);
  EXPECT_FALSE(prism::ops::linear_logprobs_uses_kernel(h, w));
  auto expect_error = [](const std::function<void()>& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "expected an error containing '" << needle << "'";
    } catch (const prism::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([&] { linear_logprobs(h.view({2, 2, 3}), w, l); }, "linear_logprobs: hidden must be [N, D]");
  expect_error([&] { linear_logprobs(h, at::randn({7, 4}), l); }, "weight must be [V, D] with D = 3");
  expect_error([&] { linear_logprobs(h, w.to(at::kDouble), l); }, "must have the same floating dtype");
  expect_error([&] { linear_logprobs(h, w, l.narrow(0, 0, 3)); }, "labels must be [N] with N = 4");
  expect_error([&] { linear_logprobs(h, w, l.to(at::kFloat)); }, "labels must be an integer tensor");
  expect_error(
      [&] {
        linear_logprobs(h, w, at::tensor({0, 1, 7, -100}, at::kLong));
      },
      "labels must be in [0, 7) or ignore_index (-100)");
  expect_error([&] { linear_logprobs(h, w, l, opts(0.0)); }, "logits_scaling must be > 0");
  expect_error([&] { linear_logprobs(h, w, l, opts(1.0, 0.0)); }, "temperature must be finite and > 0");
  expect_error([&] { linear_logprobs(h, w, l, opts(1.0, -1.0)); }, "temperature must be finite and > 0");
  expect_error([&] { linear_logprobs(h, w, l, opts(1.0, 1.0, -1)); }, "chunk_tokens must be >= 0");
  expect_error([&] { linear_logprobs_ref(h, w, at::tensor({0, 9, 1, 2}, at::kLong)); }, "labels must be in");
  expect_error([&] { linear_logprobs_ref(h, w, l, opts(1.0, 0.0)); }, "temperature must be");
}

}  // namespace
