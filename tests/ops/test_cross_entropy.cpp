// cross_entropy (chunked custom autograd) and cross_entropy_ref against: literal numbers worked
// out by hand, a float64 oracle built from log_softmax, ATen's cross_entropy_loss (reduction sum)
// in float64 for gradients, and central differences of the z-loss term. Also: ignore_index,
// all-ignored input, bf16 logits, chunk sizes that do not divide N, and bad arguments.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "prism/core/error.h"
#include "prism/ops/cross_entropy.h"
#include "util/test_util.h"

namespace {

using prism::ops::cross_entropy;
using prism::ops::cross_entropy_ref;
using prism::ops::CrossEntropyOptions;
using prism::test::close_rel;

CrossEntropyOptions opts(double z = 0.0, int64_t chunk = 1024, int64_t ignore = -100) {
  CrossEntropyOptions o;
  o.z_loss_weight = z;
  o.chunk_tokens = chunk;
  o.ignore_index = ignore;
  return o;
}

/// The oracle: -log_softmax at the label, and logsumexp^2, summed over kept rows, in float64.
std::pair<double, double> oracle(const at::Tensor& logits, const at::Tensor& labels, double z, int64_t ignore = -100) {
  auto x = logits.to(at::kDouble);
  auto ls = at::log_softmax(x, 1);
  auto lse = at::logsumexp(x, 1);
  double loss = 0, zs = 0;
  for (int64_t i = 0; i < labels.size(0); ++i) {
    const int64_t y = labels[i].item<int64_t>();
    if (y == ignore) continue;
    loss -= ls[i][y].item<double>();
    zs += std::pow(lse[i].item<double>(), 2);
  }
  return {loss, z * zs};
}

/// Random labels in [0, V) with about a quarter set to ignore_index.
at::Tensor random_labels(int64_t N, int64_t V, int64_t ignore = -100) {
  auto l = at::randint(0, V, {N}, at::kLong);
  return l.masked_fill(at::rand({N}).lt(0.25), ignore);
}

TEST(CrossEntropy, HandComputedExample) {
  // row 0: lse(1,2,3) = 3.40760596444438, CE = lse - 3; row 1: CE = log 3; row 2 ignored.
  auto logits = at::tensor({1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 5.0, -1.0, 2.0}, at::kDouble).view({3, 3});
  auto labels = at::tensor({2, 0, -100}, at::kLong);
  for (int64_t chunk : {1, 2, 3, 1024}) {
    auto r = cross_entropy(logits, labels, opts(1e-4, chunk));
    EXPECT_NEAR(r.loss_sum.item<double>(), 1.50621825311249, 1e-14) << "chunk " << chunk;
    EXPECT_NEAR(r.z_loss_sum.item<double>(),
                1e-4 * (3.40760596444438 * 3.40760596444438 + std::log(3.0) * std::log(3.0)), 1e-16);
    EXPECT_NEAR(r.z_loss_sum.item<double>(), 0.0012818727369729496, 1e-16);
    EXPECT_EQ(r.num_tokens.item<int64_t>(), 2);
    EXPECT_EQ(r.num_tokens.scalar_type(), at::kLong);
  }
  // d loss_sum / d logits: softmax - onehot on kept rows, 0 on the ignored one.
  auto x = logits.clone().requires_grad_(true);
  cross_entropy(x, labels, opts(0.0, 2)).loss_sum.backward();
  auto expect = at::tensor({0.09003057317038048, 0.2447284710547977, 0.665240955774822 - 1.0,  //
                            1.0 / 3 - 1.0, 1.0 / 3, 1.0 / 3, 0.0, 0.0, 0.0},
                           at::kDouble)
                    .view({3, 3});
  EXPECT_TRUE(close_rel(x.grad(), expect, 1e-14, 0, "hand-computed gradient"));
}

TEST(CrossEntropy, MatchesLogSoftmaxOracleFp32AndFp64) {
  at::manual_seed(1);
  const int64_t N = 37, V = 53;
  for (auto dt : {at::kFloat, at::kDouble}) {
    auto logits = (at::randn({N, V}, at::kDouble) * 4).to(dt);
    auto labels = random_labels(N, V);
    auto [loss, zs] = oracle(logits, labels, 1e-3);
    const double tol = dt == at::kDouble ? 1e-12 : 2e-6;
    for (int64_t chunk : {1, 5, 8, 37, 100}) {
      auto r = cross_entropy(logits, labels, opts(1e-3, chunk));
      EXPECT_EQ(r.loss_sum.scalar_type(), dt == at::kDouble ? at::kDouble : at::kFloat);
      EXPECT_NEAR(r.loss_sum.item<double>(), loss, tol * std::abs(loss)) << "chunk " << chunk;
      EXPECT_NEAR(r.z_loss_sum.item<double>(), zs, tol * std::abs(zs)) << "chunk " << chunk;
      EXPECT_EQ(r.num_tokens.item<int64_t>(), labels.ne(-100).sum().item<int64_t>());
    }
    auto rr = cross_entropy_ref(logits, labels, opts(1e-3));
    EXPECT_NEAR(rr.loss_sum.item<double>(), loss, tol * std::abs(loss));
    EXPECT_NEAR(rr.z_loss_sum.item<double>(), zs, tol * std::abs(zs));
  }
}

TEST(CrossEntropy, GradientMatchesAtenCrossEntropyInFp64) {
  at::manual_seed(2);
  const int64_t N = 29, V = 41;
  auto base = at::randn({N, V}, at::kDouble) * 3;
  auto labels = random_labels(N, V);
  auto a = base.clone().requires_grad_(true);
  auto b = base.clone().requires_grad_(true);
  auto c = base.clone().requires_grad_(true);
  auto r = cross_entropy(a, labels, opts(0.0, 7));
  r.loss_sum.backward();
  // at::cross_entropy_loss(reduction = Sum = 2, ignore_index) is the independent oracle.
  auto ref = at::cross_entropy_loss(b, labels, {}, at::Reduction::Sum, -100);
  ref.backward();
  EXPECT_NEAR(r.loss_sum.item<double>(), ref.item<double>(), 1e-12 * ref.item<double>());
  EXPECT_TRUE(close_rel(a.grad(), b.grad(), 1e-12, 0, "grad vs at::cross_entropy_loss"));
  cross_entropy_ref(c, labels, opts()).loss_sum.backward();
  EXPECT_TRUE(close_rel(c.grad(), b.grad(), 1e-12, 0, "ref grad vs at::cross_entropy_loss"));
  // Ignored rows get exactly zero.
  auto ignored = labels.eq(-100);
  ASSERT_GT(ignored.sum().item<int64_t>(), 0);
  EXPECT_EQ(a.grad().masked_select(ignored.unsqueeze(1)).abs().max().item<double>(), 0.0);
}

TEST(CrossEntropy, CombinedGradientMatchesCentralDifferences) {
  // loss = 0.7 * loss_sum + 1.3 * z_loss_sum exercises both incoming gradients.
  at::manual_seed(3);
  const int64_t N = 6, V = 9;
  const double w = 0.05;
  auto x = at::randn({N, V}, at::kDouble) * 2;
  auto labels = random_labels(N, V);
  labels[0].fill_(3);  // at least one kept row
  auto f = [&](const std::vector<at::Tensor>& in) {
    auto r = cross_entropy(in[0], labels, opts(w, 4));
    return (0.7 * r.loss_sum + 1.3 * r.z_loss_sum).item<double>();
  };
  auto xg = x.clone().requires_grad_(true);
  auto r = cross_entropy(xg, labels, opts(w, 4));
  (0.7 * r.loss_sum + 1.3 * r.z_loss_sum).backward();
  auto fd = at::empty_like(x);
  for (int64_t k = 0; k < x.numel(); ++k) fd.view(-1)[k] = prism::test::central_difference(f, {x}, 0, k, 1e-6);
  EXPECT_TRUE(close_rel(xg.grad(), fd, 1e-7, 1e-9, "grad vs central differences"));
  // and the reference's autograd agrees
  auto xr = x.clone().requires_grad_(true);
  auto rr = cross_entropy_ref(xr, labels, opts(w));
  (0.7 * rr.loss_sum + 1.3 * rr.z_loss_sum).backward();
  EXPECT_TRUE(close_rel(xg.grad(), xr.grad(), 1e-12, 0, "chunked vs ref gradient"));
}

TEST(CrossEntropy, OnlyZLossUsedStillBackpropagates) {
  at::manual_seed(4);
  auto x = (at::randn({10, 7}, at::kDouble)).requires_grad_(true);
  auto labels = random_labels(10, 7);
  cross_entropy(x, labels, opts(0.1, 3)).z_loss_sum.backward();
  auto xr = x.detach().clone().requires_grad_(true);
  cross_entropy_ref(xr, labels, opts(0.1)).z_loss_sum.backward();
  EXPECT_TRUE(close_rel(x.grad(), xr.grad(), 1e-12, 0, "z-loss-only gradient"));
}

TEST(CrossEntropy, AllIgnoredGivesZeroAndZeroGradient) {
  auto x = at::randn({5, 11}, at::kFloat).requires_grad_(true);
  auto labels = at::full({5}, -100, at::kLong);
  auto r = cross_entropy(x, labels, opts(1e-4, 2));
  EXPECT_EQ(r.loss_sum.item<double>(), 0.0);
  EXPECT_EQ(r.z_loss_sum.item<double>(), 0.0);
  EXPECT_EQ(r.num_tokens.item<int64_t>(), 0);
  (r.loss_sum + r.z_loss_sum).backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_EQ(x.grad().abs().max().item<double>(), 0.0);
  // and the degenerate empty batch
  auto e = at::empty({0, 11}, at::kFloat).requires_grad_(true);
  auto re = cross_entropy(e, at::empty({0}, at::kLong), opts());
  EXPECT_EQ(re.loss_sum.item<double>(), 0.0);
  re.loss_sum.backward();
  EXPECT_EQ(e.grad().numel(), 0);
}

TEST(CrossEntropy, CustomIgnoreIndex) {
  at::manual_seed(5);
  auto x = at::randn({12, 6}, at::kDouble);
  auto labels = at::randint(0, 6, {12}, at::kLong);
  labels.index_put_({at::arange(0, 12, 3)}, 0);  // 0 is the ignore index here
  auto [loss, zs] = oracle(x, labels, 0.0, /*ignore=*/0);
  auto r = cross_entropy(x, labels, opts(0.0, 5, /*ignore=*/0));
  EXPECT_NEAR(r.loss_sum.item<double>(), loss, 1e-12 * loss);
  EXPECT_EQ(r.num_tokens.item<int64_t>(), labels.ne(0).sum().item<int64_t>());
}

TEST(CrossEntropy, Bf16LogitsComputeInFp32) {
  at::manual_seed(6);
  const int64_t N = 19, V = 300;
  auto logits = (at::randn({N, V}) * 5).to(at::kBFloat16);
  auto labels = random_labels(N, V);
  // The oracle sees the same bf16 values, upcast exactly: only fp32 summation error remains.
  auto [loss, zs] = oracle(logits, labels, 1e-4);
  auto x = logits.clone().requires_grad_(true);
  auto r = cross_entropy(x, labels, opts(1e-4, 4));
  EXPECT_EQ(r.loss_sum.scalar_type(), at::kFloat);
  EXPECT_NEAR(r.loss_sum.item<double>(), loss, 1e-5 * loss);
  EXPECT_NEAR(r.z_loss_sum.item<double>(), zs, 1e-5 * zs);
  (r.loss_sum + r.z_loss_sum).backward();
  EXPECT_EQ(x.grad().scalar_type(), at::kBFloat16);
  auto x64 = logits.to(at::kDouble).requires_grad_(true);
  auto r64 = cross_entropy(x64, labels, opts(1e-4, 4));
  (r64.loss_sum + r64.z_loss_sum).backward();
  // bf16 has an 8-bit mantissa: the gradient is the fp64 one rounded once.
  EXPECT_TRUE(close_rel(x.grad(), x64.grad(), 1e-2, 0, "bf16 gradient"));
}

TEST(CrossEntropy, DoesNotModifyFp32LogitsInBackward) {
  // fp32 logits are not copied by the upcast; backward must not write into them.
  auto x = at::randn({8, 5}).requires_grad_(true);
  auto keep = x.detach().clone();
  cross_entropy(x, at::randint(0, 5, {8}, at::kLong), opts(0.1, 3)).loss_sum.backward();
  EXPECT_TRUE(at::equal(x.detach(), keep));
}

TEST(CrossEntropy, RejectsBadArguments) {
  auto x = at::randn({4, 5});
  EXPECT_THROW(cross_entropy(x, at::tensor({0, 1, 5, 2}, at::kLong), opts()), prism::Error);   // label >= V
  EXPECT_THROW(cross_entropy(x, at::tensor({0, 1, -2, 2}, at::kLong), opts()), prism::Error);  // negative
  EXPECT_THROW(cross_entropy(x, at::tensor({0, 1, 2}, at::kLong), opts()), prism::Error);      // N mismatch
  EXPECT_THROW(cross_entropy(x.view({2, 2, 5}), at::zeros({2}, at::kLong), opts()), prism::Error);
  EXPECT_THROW(cross_entropy(x, at::zeros({4}, at::kFloat), opts()), prism::Error);
  EXPECT_THROW(cross_entropy(x, at::zeros({4}, at::kLong), opts(0.0, 0)), prism::Error);
  EXPECT_NO_THROW(cross_entropy(x, at::tensor({0, 1, -100, 4}, at::kLong), opts()));
  EXPECT_NO_THROW(cross_entropy(x, at::tensor({0, 1, -100, 4}, at::kInt), opts()));
}

}  // namespace
