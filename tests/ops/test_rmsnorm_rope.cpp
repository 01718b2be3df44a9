// RMSNorm, RoPE and SwiGLU against hand-computed values (double loops, closed-form formulas) and
// float64 autograd.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "prism/ops/rmsnorm.h"
#include "prism/ops/rotary.h"
#include "prism/ops/swiglu.h"
#include "util/test_util.h"

TEST(RmsNorm, MatchesFloat64Loop) {
  at::manual_seed(0);
  auto x = at::randn({3, 5, 16}, at::kDouble);
  auto w = at::randn({16}, at::kDouble);
  auto y = prism::ops::rms_norm(x, w, 1e-5);
  auto xa = x.accessor<double, 3>();
  auto ya = y.accessor<double, 3>();
  for (int i = 0; i < 3; ++i)
    for (int t = 0; t < 5; ++t) {
      double ms = 0;
      for (int c = 0; c < 16; ++c) ms += xa[i][t][c] * xa[i][t][c];
      ms /= 16;
      for (int c = 0; c < 16; ++c)
        EXPECT_NEAR(ya[i][t][c], w[c].item<double>() * xa[i][t][c] / std::sqrt(ms + 1e-5), 1e-12);
    }
}

TEST(RmsNorm, Bf16CastsBeforeWeightMultiply) {
  // HF order: normalise in fp32, round to bf16, then multiply by the bf16 weight (rounding again).
  at::manual_seed(1);
  auto x = at::randn({4, 64}).to(at::kBFloat16);
  auto w = (at::rand({64}) * 3).to(at::kBFloat16);
  auto y = prism::ops::rms_norm(x, w, 1e-6);
  auto x32 = x.to(at::kFloat);
  auto n = (x32 * at::rsqrt(x32.pow(2).mean(-1, true) + 1e-6)).to(at::kBFloat16);
  EXPECT_TRUE(at::equal(y, w * n));
  auto fused = (w.to(at::kFloat) * (x32 * at::rsqrt(x32.pow(2).mean(-1, true) + 1e-6))).to(at::kBFloat16);
  EXPECT_FALSE(at::equal(y, fused)) << "the weight must be applied after rounding (differs from fp32-weight order)";
}

// Training on a CPU (grad mode, an input that requires grad) runs the one-pass autograd Function
// of rmsnorm_cpu.cpp: output, d x and d weight against torch autograd through the reference's
// formula in float64, for fp32 and fp64 inputs; 210 rows make 4 blocks of the weight-gradient sum
// (the last partial), and that sum is bit-identical at 1 and 2 threads.
TEST(RmsNorm, CpuTrainingPathMatchesFloat64Autograd) {
  at::manual_seed(3);
  auto x64 = at::randn({3, 70, 40}, at::kDouble) * 2;
  auto w64 = at::randn({40}, at::kDouble);
  auto g64 = at::randn({3, 70, 40}, at::kDouble);
  auto xo = x64.clone().requires_grad_(true), wo = w64.clone().requires_grad_(true);
  auto yo = wo * (xo * at::rsqrt(xo.pow(2).mean(-1, true) + 1e-5));
  yo.backward(g64);
  for (auto dt : {at::kFloat, at::kDouble}) {
    SCOPED_TRACE(::testing::Message() << dt);
    auto x = x64.to(dt).clone().requires_grad_(true), w = w64.to(dt).clone().requires_grad_(true);
    auto y = prism::ops::rms_norm(x, w, 1e-5);
    y.backward(g64.to(dt));
    const double tol = dt == at::kFloat ? 2e-6 : 1e-13;
    EXPECT_TRUE(prism::test::close_rel(y, yo.detach(), tol, 0, "y"));
    EXPECT_TRUE(prism::test::close_rel(x.grad(), xo.grad(), tol * 4, 0, "d x"));
    EXPECT_TRUE(prism::test::close_rel(w.grad(), wo.grad(), tol * 4, 0, "d weight"));
    // Only the weight needs a gradient (a frozen input): d weight alone, the same values.
    auto w2 = w64.to(dt).clone().requires_grad_(true);
    prism::ops::rms_norm(x64.to(dt), w2, 1e-5).backward(g64.to(dt));
    EXPECT_TRUE(at::equal(w2.grad(), w.grad()));
  }
  const int threads = at::get_num_threads();
  std::vector<at::Tensor> dws;
  for (int t : {1, 2}) {
    at::set_num_threads(t);
    auto x = x64.to(at::kFloat).requires_grad_(true), w = w64.to(at::kFloat).requires_grad_(true);
    prism::ops::rms_norm(x, w, 1e-5).backward(g64.to(at::kFloat));
    dws.push_back(w.grad());
  }
  at::set_num_threads(threads);
  EXPECT_TRUE(at::equal(dws[0], dws[1]));
}

TEST(Rope, DefaultInvFreqMatchesFormula) {
  prism::ops::RopeConfig rc;
  rc.theta = 500000.0;
  rc.dim = 16;
  auto f = prism::ops::rope_inv_freq(rc, at::kCPU);
  ASSERT_EQ(f.size(0), 8);
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(f[i].item<double>(), 1.0 / std::pow(500000.0, 2.0 * i / 16), 1e-6 * f[i].item<double>());
}

TEST(Rope, Llama3ScalingMatchesHandComputation) {
  prism::ops::RopeConfig rc;
  rc.type = "llama3";
  rc.theta = 500000.0;
  rc.dim = 128;
  rc.factor = 8;
  rc.low_freq_factor = 1;
  rc.high_freq_factor = 4;
  rc.original_max_position_embeddings = 8192;
  auto f = prism::ops::rope_inv_freq(rc, at::kCPU);
  int scaled = 0, smoothed = 0, kept = 0;
  for (int i = 0; i < 64; ++i) {
    double base = 1.0 / std::pow(500000.0, 2.0 * i / 128);
    double wl = 2 * M_PI / base;
    double expect;
    if (wl < 8192.0 / 4) expect = base, ++kept;
    else if (wl > 8192.0 / 1) expect = base / 8, ++scaled;
    else {
      double s = (8192.0 / wl - 1) / (4 - 1);
      expect = (1 - s) * base / 8 + s * base;
      ++smoothed;
    }
    EXPECT_NEAR(f[i].item<double>(), expect, 2e-6 * expect) << "i=" << i;
  }
  EXPECT_GT(scaled, 0);
  EXPECT_GT(smoothed, 0);
  EXPECT_GT(kept, 0);
}

TEST(Rope, RotatesHalvesAndKeepsNorm) {
  at::manual_seed(2);
  auto x = at::randn({1, 2, 3, 8}, at::kDouble);
  auto pos = at::tensor(std::vector<int64_t>{0, 1, 5}, at::kLong).unsqueeze(0);
  prism::ops::RopeConfig rc;
  rc.dim = 8;
  auto [c, s] = prism::ops::rope_cos_sin(prism::ops::rope_inv_freq(rc, at::kCPU), pos, at::kDouble);
  auto y = prism::ops::apply_rope(x, c, s);
  // position 0 is the identity; rotation preserves each (j, j+4) pair's norm
  EXPECT_TRUE(prism::test::close_rel(y.select(2, 0), x.select(2, 0), 0, 1e-7, "pos0"));
  double th = 5.0 * (1.0 / std::pow(10000.0, 2.0 / 8));  // channel pair j=1 at position 5
  double x1 = x[0][1][2][1].item<double>(), x2 = x[0][1][2][5].item<double>();
  EXPECT_NEAR(y[0][1][2][1].item<double>(), x1 * std::cos(th) - x2 * std::sin(th), 1e-6);
  EXPECT_NEAR(y[0][1][2][5].item<double>(), x2 * std::cos(th) + x1 * std::sin(th), 1e-6);
}

// Training on a CPU (grad mode, x requires grad) runs the one-pass autograd Function of
// rotary_cpu.cpp. q arrives as a transposed view ([B, L, H, d] memory seen as [B, H, L, d]); cos
// and sin are random here (halves differ) so each half of the formula is checked: the forward
// bit-identical to the inference composite in fp32, the gradient against torch autograd through
// y = x * cos + cat(-x2, x1) * sin in float64.
TEST(Rope, CpuTrainingPathMatchesCompositeAndFloat64Autograd) {
  at::manual_seed(5);
  auto base64 = at::randn({2, 5, 3, 8}, at::kDouble);
  auto c64 = at::randn({2, 5, 8}, at::kDouble), s64 = at::randn({2, 5, 8}, at::kDouble);
  auto g64 = at::randn({2, 3, 5, 8}, at::kDouble);
  auto xo = base64.clone().requires_grad_(true);
  auto xt = xo.transpose(1, 2);
  auto yo = xt * c64.unsqueeze(1) + at::cat({-xt.narrow(-1, 4, 4), xt.narrow(-1, 0, 4)}, -1) * s64.unsqueeze(1);
  yo.backward(g64);
  for (auto dt : {at::kFloat, at::kDouble}) {
    SCOPED_TRACE(::testing::Message() << dt);
    auto base = base64.to(dt).clone().requires_grad_(true);
    auto c = c64.to(dt), s = s64.to(dt);
    auto y = prism::ops::apply_rope(base.transpose(1, 2), c, s);
    at::Tensor composite;
    {
      at::NoGradGuard ng;
      composite = prism::ops::apply_rope(base.detach().transpose(1, 2), c, s);
    }
    EXPECT_TRUE(at::equal(y.detach(), composite));
    y.backward(g64.to(dt));
    const double tol = dt == at::kFloat ? 1e-6 : 1e-14;
    EXPECT_TRUE(prism::test::close_rel(y, yo.detach(), tol, 0, "y"));
    EXPECT_TRUE(prism::test::close_rel(base.grad(), xo.grad(), tol, 0, "d x"));
  }
}

// Training on a CPU runs swiglu's blocked autograd Function (64-row blocks at I = 1000: 210 rows
// make 4, the last partial): the product bit-identical to the composite at::silu(gate) * up, the
// gradients against torch autograd of the composite in float64; a frozen gate (only up needs a
// gradient) gives the same d up.
TEST(Swiglu, CpuTrainingPathMatchesCompositeAndFloat64Autograd) {
  at::manual_seed(7);
  auto g64 = at::randn({3, 70, 1000}, at::kDouble) * 3, u64 = at::randn({3, 70, 1000}, at::kDouble);
  auto d64 = at::randn({3, 70, 1000}, at::kDouble);
  auto go = g64.clone().requires_grad_(true), uo = u64.clone().requires_grad_(true);
  (at::silu(go) * uo).backward(d64);
  for (auto dt : {at::kFloat, at::kDouble}) {
    SCOPED_TRACE(::testing::Message() << dt);
    auto g = g64.to(dt).clone().requires_grad_(true), u = u64.to(dt).clone().requires_grad_(true);
    auto y = prism::ops::swiglu(g, u);
    EXPECT_TRUE(at::equal(y.detach(), at::silu(g.detach()) * u.detach()));
    y.backward(d64.to(dt));
    const double tol = dt == at::kFloat ? 2e-6 : 1e-14;
    EXPECT_TRUE(prism::test::close_rel(g.grad(), go.grad(), tol, 0, "d gate"));
    EXPECT_TRUE(prism::test::close_rel(u.grad(), uo.grad(), tol, 0, "d up"));
    auto u2 = u64.to(dt).clone().requires_grad_(true);
    prism::ops::swiglu(g64.to(dt).clone(), u2).backward(d64.to(dt));
    EXPECT_TRUE(at::equal(u2.grad(), u.grad()));
  }
}
