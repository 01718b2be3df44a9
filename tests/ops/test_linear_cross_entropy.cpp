// linear_cross_entropy on the CPU: the chunked algorithm (ATen chunk step, gradients computed in
// forward and scaled in backward) against linear_cross_entropy_ref (matmul + ops::cross_entropy,
// ATen autograd) in float64, over chunk sizes that do and do not divide N, ignore_index rows,
// z-loss, logits scaling, one token, no tokens and all tokens ignored; central differences of the
// full objective; bf16/fp32 within twice the reference's error against float64; the grad-mode and
// requires_grad combinations; bad arguments. The CUDA kernel path is tested in
// test_linear_cross_entropy_cuda.cpp (GPU) and test_linear_cross_entropy_emu.cpp (its kernel on CPU).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "prism/core/error.h"
#include "prism/ops/cross_entropy.h"
#include "prism/ops/linear_cross_entropy.h"
#include "util/test_util.h"

namespace {

using prism::ops::Impl;
using prism::ops::linear_cross_entropy;
using prism::ops::linear_cross_entropy_ref;
using prism::ops::LinearCrossEntropyOptions;
using prism::test::close_rel;
using prism::test::max_abs;
using prism::test::max_abs_diff;

LinearCrossEntropyOptions opts(double z = 0.0, double scaling = 1.0, int64_t chunk = 0, int64_t ignore = -100) {
  LinearCrossEntropyOptions o;
  o.z_loss_weight = z;
  o.logits_scaling = scaling;
  o.chunk_tokens = chunk;
  o.ignore_index = ignore;
  return o;
}

at::Tensor random_labels(int64_t N, int64_t V, double ignored = 0.25, int64_t ignore = -100) {
  auto l = at::randint(0, V, {N}, at::kLong);
  return l.masked_fill(at::rand({N}).lt(ignored), ignore);
}

struct Grads {
  at::Tensor loss, loss_sum, z_sum, dh, dw;
};

// Forward + backward of `scale * loss` through either implementation.
Grads run(const at::Tensor& h0, const at::Tensor& w0, const at::Tensor& labels, const LinearCrossEntropyOptions& o,
          Impl impl, double scale = 1.0) {
  auto h = h0.detach().clone().requires_grad_(true);
  auto w = w0.detach().clone().requires_grad_(true);
  auto r = linear_cross_entropy(h, w, labels, o, impl);
  (r.loss * scale).backward();
  return {r.loss.detach(), r.loss_sum, r.z_loss_sum, h.grad(), w.grad()};
}

TEST(LinearCrossEntropy, ChunkedMatchesReferenceInFp64) {
  at::manual_seed(1);
  struct Shape {
    int64_t N, D, V;
  };
  for (const auto& s : std::vector<Shape>{{1, 8, 5}, {7, 16, 33}, {37, 24, 101}, {64, 12, 1000}}) {
    auto h = at::randn({s.N, s.D}, at::kDouble);
    auto w = at::randn({s.V, s.D}, at::kDouble) * 0.5;
    auto labels = random_labels(s.N, s.V);
    if (s.N > 1) labels[0] = -100;
    for (double z : {0.0, 1e-3}) {
      for (double scaling : {1.0, 0.37, 8.0}) {
        auto ref = run(h, w, labels, opts(z, scaling), Impl::kReference, 0.7);
        for (int64_t chunk : {int64_t{0}, int64_t{1}, int64_t{3}, int64_t{7}, s.N, s.N + 5}) {
          SCOPED_TRACE(::testing::Message()
                       << "N " << s.N << " V " << s.V << " z " << z << " scaling " << scaling << " chunk " << chunk);
          auto got = run(h, w, labels, opts(z, scaling, chunk), Impl::kAuto, 0.7);
          EXPECT_EQ(got.loss.scalar_type(), at::kDouble);
          EXPECT_TRUE(close_rel(got.loss, ref.loss, 1e-12, 1e-13, "loss"));
          EXPECT_TRUE(close_rel(got.loss_sum, ref.loss_sum, 1e-12, 1e-13, "loss_sum"));
          EXPECT_TRUE(close_rel(got.z_sum, ref.z_sum, 1e-12, 1e-15, "z_loss_sum"));
          EXPECT_TRUE(close_rel(got.dh, ref.dh, 1e-11, 1e-14, "d hidden"));
          EXPECT_TRUE(close_rel(got.dw, ref.dw, 1e-11, 1e-14, "d weight"));
        }
      }
    }
  }
}

TEST(LinearCrossEntropy, MatchesHandWrittenFloat64Oracle) {
  // Independent of ops::cross_entropy: log_softmax of (h W^T / s) at the label, summed.
  at::manual_seed(2);
  const int64_t N = 9, D = 5, V = 13;
  const double s = 2.5, zw = 1e-2;
  auto h = at::randn({N, D}, at::kDouble), w = at::randn({V, D}, at::kDouble);
  auto labels = random_labels(N, V);
  labels[2] = 4;
  auto z = at::matmul(h, w.t()) / s;
  auto ls = at::log_softmax(z, 1), lse = at::logsumexp(z, 1);
  double loss = 0, zs = 0;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t y = labels[i].item<int64_t>();
    if (y == -100) continue;
    loss -= ls[i][y].item<double>();
    zs += std::pow(lse[i].item<double>(), 2);
  }
  auto r = linear_cross_entropy(h, w, labels, opts(zw, s, 4));
  EXPECT_NEAR(r.loss_sum.item<double>(), loss, 1e-12 * std::abs(loss));
  EXPECT_NEAR(r.z_loss_sum.item<double>(), zw * zs, 1e-12 * zw * zs);
  EXPECT_NEAR(r.loss.item<double>(), loss + zw * zs, 1e-12 * (loss + zw * zs));
  EXPECT_EQ(r.num_tokens.item<int64_t>(), labels.ne(-100).sum().item<int64_t>());
  EXPECT_EQ(r.num_tokens.scalar_type(), at::kLong);
}

TEST(LinearCrossEntropy, GradientMatchesCentralDifferences) {
  at::manual_seed(3);
  const int64_t N = 4, D = 3, V = 6;
  auto h = at::randn({N, D}, at::kDouble), w = at::randn({V, D}, at::kDouble);
  auto labels = at::tensor({2, -100, 5, 0}, at::kLong);
  const auto o = opts(0.05, 1.7, 3);
  auto f = [&](const std::vector<at::Tensor>& in) {
    return linear_cross_entropy(in[0], in[1], labels, o).loss.item<double>();
  };
  auto g = run(h, w, labels, o, Impl::kAuto);
  auto fd_h = at::empty_like(h), fd_w = at::empty_like(w);
  for (int64_t k = 0; k < h.numel(); ++k) fd_h.view(-1)[k] = prism::test::central_difference(f, {h, w}, 0, k, 1e-6);
  for (int64_t k = 0; k < w.numel(); ++k) fd_w.view(-1)[k] = prism::test::central_difference(f, {h, w}, 1, k, 1e-6);
  EXPECT_TRUE(close_rel(g.dh, fd_h, 1e-7, 1e-9, "d hidden vs central differences"));
  EXPECT_TRUE(close_rel(g.dw, fd_w, 1e-7, 1e-9, "d weight vs central differences"));
}

TEST(LinearCrossEntropy, IgnoredTokensCustomIgnoreIndexAndDegenerateBatches) {
  at::manual_seed(4);
  const int64_t D = 6, V = 11;
  auto w = at::randn({V, D}, at::kDouble);
  // All ignored: zero sums, zero gradients (including for weight).
  {
    auto h = at::randn({5, D}, at::kDouble);
    auto labels = at::full({5}, -100, at::kLong);
    auto g = run(h, w, labels, opts(1e-3, 1.0, 2), Impl::kAuto);
    EXPECT_EQ(g.loss.item<double>(), 0.0);
    EXPECT_EQ(max_abs(g.dh), 0.0);
    EXPECT_EQ(max_abs(g.dw), 0.0);
  }
  // One token.
  {
    auto h = at::randn({1, D}, at::kDouble);
    auto labels = at::tensor({int64_t{3}}, at::kLong);
    auto ref = run(h, w, labels, opts(1e-3), Impl::kReference);
    auto got = run(h, w, labels, opts(1e-3), Impl::kAuto);
    EXPECT_TRUE(close_rel(got.loss, ref.loss, 1e-13, 0, "one token loss"));
    EXPECT_TRUE(close_rel(got.dh, ref.dh, 1e-12, 0, "one token d hidden"));
    EXPECT_TRUE(close_rel(got.dw, ref.dw, 1e-12, 0, "one token d weight"));
  }
  // No tokens.
  {
    auto h = at::empty({0, D}, at::kDouble);
    auto g = run(h, w, at::empty({0}, at::kLong), opts(), Impl::kAuto);
    EXPECT_EQ(g.loss.item<double>(), 0.0);
    EXPECT_EQ(g.dh.numel(), 0);
    EXPECT_EQ(max_abs(g.dw), 0.0);
  }
  // Custom ignore index (0), int32 labels.
  {
    auto h = at::randn({12, D}, at::kDouble);
    auto labels = at::randint(0, V, {12}, at::kInt);
    labels.index_put_({at::arange(0, 12, 3)}, 0);
    auto ref = run(h, w, labels, opts(0.0, 1.0, 0, 0), Impl::kReference);
    auto got = run(h, w, labels, opts(0.0, 1.0, 5, 0), Impl::kAuto);
    EXPECT_TRUE(close_rel(got.loss, ref.loss, 1e-12, 0, "ignore_index 0 loss"));
    EXPECT_TRUE(close_rel(got.dh, ref.dh, 1e-11, 1e-14, "ignore_index 0 d hidden"));
    auto r = linear_cross_entropy(h, w, labels, opts(0.0, 1.0, 5, 0));
    EXPECT_EQ(r.num_tokens.item<int64_t>(), labels.ne(0).sum().item<int64_t>());
  }
}

TEST(LinearCrossEntropy, GradModeAndRequiresGradCombinations) {
  at::manual_seed(5);
  const int64_t N = 10, D = 7, V = 19;
  auto h = at::randn({N, D}, at::kDouble), w = at::randn({V, D}, at::kDouble);
  auto labels = random_labels(N, V);
  auto full = run(h, w, labels, opts(1e-3, 1.0, 4), Impl::kAuto);
  {  // no grad mode: the same values, nothing differentiable
    at::NoGradGuard ng;
    auto r = linear_cross_entropy(h.clone().requires_grad_(true), w, labels, opts(1e-3, 1.0, 4));
    EXPECT_FALSE(r.loss.requires_grad());
    EXPECT_TRUE(close_rel(r.loss, full.loss, 1e-14, 0, "no-grad loss"));
  }
  {  // only hidden
    auto hg = h.clone().requires_grad_(true);
    auto r = linear_cross_entropy(hg, w, labels, opts(1e-3, 1.0, 4));
    EXPECT_TRUE(r.loss.requires_grad());
    EXPECT_FALSE(r.loss_sum.requires_grad());
    r.loss.backward();
    EXPECT_TRUE(close_rel(hg.grad(), full.dh, 1e-14, 0, "only-hidden d hidden"));
  }
  {  // only weight (a frozen trunk)
    auto wg = w.clone().requires_grad_(true);
    auto r = linear_cross_entropy(h, wg, labels, opts(1e-3, 1.0, 4));
    r.loss.backward();
    EXPECT_TRUE(close_rel(wg.grad(), full.dw, 1e-14, 0, "only-weight d weight"));
  }
  {  // hidden is a non-leaf view of a bigger graph: the gradient flows on
    auto base = h.view({2, N / 2, D}).clone().requires_grad_(true);
    auto r = linear_cross_entropy((base * 2.0).reshape({N, D}), w, labels, opts(1e-3, 1.0, 4));
    r.loss.backward();
    auto expect = run(h * 2.0, w, labels, opts(1e-3, 1.0, 4), Impl::kAuto).dh * 2.0;
    EXPECT_TRUE(close_rel(base.grad().reshape({N, D}), expect, 1e-13, 0, "through a view"));
  }
}

TEST(LinearCrossEntropy, BackwardTwiceIsAnErrorNotWrongGradients) {
  auto h = at::randn({3, 4}, at::kDouble).requires_grad_(true);
  auto w = at::randn({5, 4}, at::kDouble).requires_grad_(true);
  auto r = linear_cross_entropy(h, w, at::tensor({0, 1, 2}, at::kLong));
  r.loss.backward({}, /*retain_graph=*/true);
  try {
    r.loss.backward();
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("backward ran twice"), std::string::npos) << e.what();
  }
}

// bf16 / fp32 on the CPU: the chunked path's error against float64 is at most twice the
// reference's error in the same dtype (logits rounded by the same GEMM; the chunked path scales
// in fp32 and accumulates d weight in fp32 over chunks).
TEST(LinearCrossEntropy, LowPrecisionWithinTwiceReferenceError) {
  at::manual_seed(6);
  const int64_t N = 67, D = 32, V = 301;
  auto h64 = at::randn({N, D}, at::kDouble), w64 = at::randn({V, D}, at::kDouble) * 0.3;
  auto labels = random_labels(N, V);
  for (auto dt : {at::kBFloat16, at::kFloat}) {
    for (double scaling : {1.0, 4.0}) {
      SCOPED_TRACE(::testing::Message() << dt << " scaling " << scaling);
      auto h = h64.to(dt), w = w64.to(dt);
      const auto o = opts(1e-4, scaling, 16);
      // The truth: float64 on the same (rounded) inputs.
      auto truth = run(h.to(at::kDouble), w.to(at::kDouble), labels, o, Impl::kReference);
      auto ref = run(h, w, labels, o, Impl::kReference);
      auto got = run(h, w, labels, o, Impl::kAuto);
      EXPECT_EQ(got.dh.scalar_type(), dt);
      EXPECT_EQ(got.dw.scalar_type(), dt);
      auto rule = [&](const at::Tensor& g, const at::Tensor& r, const at::Tensor& t, const char* what) {
        const double floor = 1e-6 * max_abs(t);
        EXPECT_FALSE(g.isnan().any().item<bool>()) << what;
        EXPECT_LE(max_abs_diff(g, t), 2 * max_abs_diff(r, t) + floor) << what;
      };
      rule(got.loss_sum, ref.loss_sum, truth.loss_sum, "loss_sum");
      rule(got.z_sum, ref.z_sum, truth.z_sum, "z_loss_sum");
      rule(got.dh, ref.dh, truth.dh, "d hidden");
      rule(got.dw, ref.dw, truth.dw, "d weight");
    }
  }
}

TEST(LinearCrossEntropy, NoKernelOnCpuAndBadArguments) {
  auto h = at::randn({4, 3});
  auto w = at::randn({7, 3});
  auto l = at::tensor({0, 1, 2, 3}, at::kLong);
  EXPECT_FALSE(prism::ops::linear_cross_entropy_uses_kernel(h, w));
  auto expect_error = [](const std::function<void()>& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "expected an error containing '" << needle << "'";
    } catch (const prism::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([&] { linear_cross_entropy(h.view({2, 2, 3}), w, l); }, "hidden must be [N, D]");
  expect_error([&] { linear_cross_entropy(h, at::randn({7, 4}), l); }, "weight must be [V, D] with D = 3");
  expect_error([&] { linear_cross_entropy(h, w.to(at::kDouble), l); }, "must have the same floating dtype");
  expect_error([&] { linear_cross_entropy(h, w, l.narrow(0, 0, 3)); }, "labels must be [N] with N = 4");
  expect_error([&] { linear_cross_entropy(h, w, l.to(at::kFloat)); }, "labels must be an integer tensor");
  expect_error(
      [&] {
        linear_cross_entropy(h, w, at::tensor({0, 1, 7, -100}, at::kLong));
      },
      "labels must be in [0, 7) or ignore_index (-100)");
  expect_error([&] { linear_cross_entropy(h, w, l, opts(0, 0.0)); }, "logits_scaling must be > 0");
  expect_error([&] { linear_cross_entropy(h, w, l, opts(0, 1.0, -1)); }, "chunk_tokens must be >= 0");
  expect_error([&] { linear_cross_entropy_ref(h, w, at::tensor({0, 9, 1, 2}, at::kLong)); }, "labels must be in");
}

}  // namespace
