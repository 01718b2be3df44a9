// causal_conv1d_ref / causal_conv1d against a hand-written float64 loop of
// out[c, t] = bias[c] + sum_j w[c, j] * x[c, t-(K-1)+j] (left context from the initial state or
// zeros, cut at document starts), against ATen's conv1d in fp32 and bf16, and gradients against
// fp64 autograd and central finite differences.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "prism/core/error.h"
#include "prism/ops/causal_conv1d.h"
#include "util/test_util.h"

namespace {

using prism::ops::CausalConv1dParams;
using prism::test::close_rel;

CausalConv1dParams params(const at::Tensor& init = {}, const std::vector<int64_t>& cu = {}, bool silu = true) {
  CausalConv1dParams p;
  p.initial_state = init;
  if (!cu.empty()) p.cu_seqlens = at::tensor(cu, at::kLong);
  p.silu = silu;
  return p;
}

/// The oracle, one output at a time in float64. w is [C, K].
at::Tensor conv_loop(const at::Tensor& x_, const at::Tensor& w_, const at::Tensor& bias_, const at::Tensor& init_,
                     const std::vector<int64_t>& cu, bool silu) {
  auto x = x_.to(at::kDouble).contiguous();
  auto w = w_.to(at::kDouble).reshape({w_.size(0), w_.size(-1)}).contiguous();
  const int64_t Bsz = x.size(0), C = x.size(1), L = x.size(2), K = w.size(1);
  std::vector<int64_t> start(L, 0);
  for (size_t i = 0; i + 1 < cu.size(); ++i)
    for (int64_t t = cu[i]; t < cu[i + 1]; ++t) start[t] = cu[i];
  auto out = at::zeros({Bsz, C, L}, at::kDouble);
  auto xa = x.accessor<double, 3>(), oa = out.accessor<double, 3>();
  auto wa = w.accessor<double, 2>();
  at::Tensor init = init_.defined() ? init_.to(at::kDouble).contiguous() : at::zeros({Bsz, C, K - 1}, at::kDouble);
  auto ia = init.accessor<double, 3>();
  at::Tensor bias = bias_.defined() ? bias_.to(at::kDouble).contiguous() : at::zeros({C}, at::kDouble);
  auto ba = bias.accessor<double, 1>();
  for (int64_t b = 0; b < Bsz; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < L; ++t) {
        double s = ba[c];
        for (int64_t j = 0; j < K; ++j) {
          const int64_t i = t - (K - 1) + j;
          double v;
          if (start[t] > 0 && i < start[t]) v = 0;  // another document
          else if (i < 0) v = ia[b][c][K - 1 + i];   // the cache (first document only)
          else v = xa[b][c][i];
          s += wa[c][j] * v;
        }
        oa[b][c][t] = silu ? s / (1 + std::exp(-s)) : s;
      }
  return out;
}

struct ConvCase {
  const char* name;
  int64_t Bsz, C, L, K;
  bool bias, init, silu, weight3d;
};

class CausalConv1dVsLoop : public ::testing::TestWithParam<ConvCase> {};

TEST_P(CausalConv1dVsLoop, MatchesFloat64Loop) {
  const auto& c = GetParam();
  at::manual_seed(3);
  auto o = at::TensorOptions().dtype(at::kDouble);
  auto x = at::randn({c.Bsz, c.C, c.L}, o);
  auto w = at::randn(c.weight3d ? std::vector<int64_t>{c.C, 1, c.K} : std::vector<int64_t>{c.C, c.K}, o);
  auto bias = c.bias ? at::randn({c.C}, o) : at::Tensor();
  auto init = c.init ? at::randn({c.Bsz, c.C, c.K - 1}, o) : at::Tensor();
  auto r = prism::ops::causal_conv1d(x, w, bias, params(init, {}, c.silu));
  EXPECT_EQ(r.out.scalar_type(), at::kDouble);
  EXPECT_TRUE(close_rel(r.out, conv_loop(x, w, bias, init, {}, c.silu), 1e-12, 0, std::string(c.name) + " fp64"));
  // Final state: the last K-1 inputs of [initial state or zeros | x].
  auto left = c.init ? init : at::zeros({c.Bsz, c.C, c.K - 1}, o);
  auto xp = at::cat({left, x}, -1);
  EXPECT_TRUE(at::equal(r.final_state, xp.narrow(-1, xp.size(-1) - (c.K - 1), c.K - 1))) << c.name;

  auto f = at::kFloat;
  auto r32 = prism::ops::causal_conv1d(x.to(f), w.to(f), c.bias ? bias.to(f) : bias,
                                       params(c.init ? init.to(f) : init, {}, c.silu));
  EXPECT_EQ(r32.out.scalar_type(), at::kFloat);
  EXPECT_TRUE(close_rel(r32.out, conv_loop(x.to(f), w.to(f), c.bias ? bias.to(f) : bias, c.init ? init.to(f) : init,
                                           {}, c.silu),
                        1e-6, 0, std::string(c.name) + " fp32"));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, CausalConv1dVsLoop,
    ::testing::Values(ConvCase{"k4_bias_silu", 2, 6, 11, 4, true, false, true, true},
                      ConvCase{"k4_init", 2, 5, 9, 4, true, true, true, false},
                      ConvCase{"k4_no_bias_no_silu", 1, 3, 7, 4, false, true, false, true},
                      ConvCase{"short_L_lt_K_minus_1", 2, 4, 2, 4, true, true, true, true},
                      ConvCase{"single_token", 1, 4, 1, 4, true, true, true, false},
                      ConvCase{"k2", 1, 8, 10, 2, true, true, false, false},
                      ConvCase{"k1", 1, 8, 10, 1, true, false, true, true}),
    [](const auto& info) { return std::string(info.param.name); });

/// Same as PyTorch's depthwise conv1d (groups = C, K-1 zeros of left padding, truncated to L) + SiLU,
/// which is what HF torch_forward runs: fp32 closely, and bf16 rounded the same way.
TEST(CausalConv1d, MatchesAtenConv1d) {
  at::manual_seed(4);
  const int64_t C = 64, L = 257, K = 4;
  auto x = at::randn({2, C, L});
  auto w = at::randn({C, 1, K}) * 0.5;
  auto b = at::randn({C});
  auto aten = [&](const at::Tensor& xx, const at::Tensor& ww, const at::Tensor& bb) {
    return at::silu(at::conv1d(xx, ww, bb, /*stride=*/1, /*padding=*/K - 1, /*dilation=*/1, /*groups=*/C)
                        .narrow(-1, 0, L));
  };
  auto r = prism::ops::causal_conv1d(x, w, b, params());
  EXPECT_TRUE(close_rel(r.out, aten(x, w, b), 1e-6, 0, "fp32 vs at::conv1d"));

  auto bf = at::kBFloat16;
  auto rb = prism::ops::causal_conv1d(x.to(bf), w.to(bf), b.to(bf), params());
  EXPECT_EQ(rb.out.scalar_type(), bf);
  EXPECT_EQ(rb.final_state.scalar_type(), bf);
  auto ab = aten(x.to(bf), w.to(bf), b.to(bf));
  // One rounding of the fp32 sum (bias included), then SiLU on the bf16 tensor: bit-identical to
  // ATen's CPU bf16 conv1d + silu (two roundings of conv and bias would differ on ~20% of outputs).
  EXPECT_TRUE(at::equal(rb.out, ab)) << "max diff "
                                     << (rb.out.to(at::kFloat) - ab.to(at::kFloat)).abs().max().item<float>();
}

/// Packed documents == separate calls (output, final state, gradients); the initial state feeds
/// document 0 only; a final document shorter than K-1 keeps zeros in front of it.
TEST(CausalConv1d, PackedDocumentsEqualSeparateCalls) {
  at::manual_seed(5);
  const int64_t C = 6, K = 4;
  for (std::vector<int64_t> cu : {std::vector<int64_t>{0, 2, 3, 3, 9, 14}, std::vector<int64_t>{0, 5, 12}}) {
    const int64_t L = cu.back();
    auto x = at::randn({1, C, L}, at::kDouble);
    auto w = at::randn({C, 1, K}, at::kDouble);
    auto b = at::randn({C}, at::kDouble);
    auto init = at::randn({1, C, K - 1}, at::kDouble);
    auto gw = at::randn({1, C, L}, at::kDouble), gf = at::randn({1, C, K - 1}, at::kDouble);

    auto xp = x.clone().requires_grad_(), wp = w.clone().requires_grad_(), bp = b.clone().requires_grad_();
    auto ip = init.clone().requires_grad_();
    auto packed = prism::ops::causal_conv1d(xp, wp, bp, params(ip, cu));
    EXPECT_TRUE(close_rel(packed.out, conv_loop(x, w, b, init, cu, true), 1e-12, 0, "packed vs loop"));
    ((packed.out * gw).sum() + (packed.final_state * gf).sum()).backward();

    auto xs = x.clone().requires_grad_(), ws = w.clone().requires_grad_(), bs = b.clone().requires_grad_();
    auto is = init.clone().requires_grad_();
    std::vector<at::Tensor> outs;
    at::Tensor last;
    for (size_t d = 0; d + 1 < cu.size(); ++d) {
      const int64_t a = cu[d], len = cu[d + 1] - cu[d];
      if (len == 0) continue;
      auto r = prism::ops::causal_conv1d(xs.narrow(-1, a, len), ws, bs, params(d == 0 ? is : at::Tensor()));
      outs.push_back(r.out);
      last = r.final_state;
    }
    auto sep = at::cat(outs, -1);
    EXPECT_TRUE(close_rel(packed.out, sep, 1e-14, 0, "packed vs separate out"));
    EXPECT_TRUE(close_rel(packed.final_state, last, 0, 0, "packed vs separate final state"));
    ((sep * gw).sum() + (last * gf).sum()).backward();
    EXPECT_TRUE(close_rel(xp.grad(), xs.grad(), 1e-13, 0, "dx"));
    EXPECT_TRUE(close_rel(wp.grad(), ws.grad(), 1e-13, 0, "dweight"));
    EXPECT_TRUE(close_rel(bp.grad(), bs.grad(), 1e-13, 0, "dbias"));
    EXPECT_TRUE(close_rel(ip.grad(), is.grad(), 1e-13, 0, "dinitial_state"));
  }
}

/// Streaming: prefill, then one token at a time from the returned state == one call.
TEST(CausalConv1d, StreamingEqualsFullPass) {
  at::manual_seed(6);
  const int64_t C = 5, L = 12, K = 4;
  auto x = at::randn({2, C, L}, at::kDouble);
  auto w = at::randn({C, K}, at::kDouble);
  auto b = at::randn({C}, at::kDouble);
  auto full = prism::ops::causal_conv1d(x, w, b, params());
  auto r = prism::ops::causal_conv1d(x.narrow(-1, 0, 2), w, b, params());  // L = 2 < K-1
  std::vector<at::Tensor> outs{r.out};
  auto state = r.final_state;
  for (int64_t t = 2; t < L; ++t) {
    auto s = prism::ops::causal_conv1d(x.narrow(-1, t, 1), w, b, params(state));
    outs.push_back(s.out);
    state = s.final_state;
  }
  EXPECT_TRUE(close_rel(at::cat(outs, -1), full.out, 1e-14, 0, "streamed out"));
  EXPECT_TRUE(at::equal(state, full.final_state));
}

TEST(CausalConv1d, GradsMatchFp64AndFiniteDifferences) {
  at::manual_seed(7);
  const int64_t C = 4, L = 9, K = 4;
  const std::vector<int64_t> cu = {0, 4, 9};
  auto x = at::randn({1, C, L}, at::kDouble), w = at::randn({C, 1, K}, at::kDouble);
  auto b = at::randn({C}, at::kDouble), init = at::randn({1, C, K - 1}, at::kDouble);
  auto gw = at::randn({1, C, L}, at::kDouble), gf = at::randn({1, C, K - 1}, at::kDouble);
  auto loss = [&](const std::vector<at::Tensor>& v) {
    auto r = prism::ops::causal_conv1d_ref(v[0], v[1], v[2], params(v[3], cu));
    return (r.out * gw.to(r.out.scalar_type())).sum() + (r.final_state * gf.to(r.out.scalar_type())).sum();
  };
  const char* names[] = {"x", "weight", "bias", "initial_state"};
  std::vector<at::Tensor> l64, l32;
  for (auto& t : {x, w, b, init}) {
    l64.push_back(t.clone().requires_grad_());
    l32.push_back(t.to(at::kFloat).requires_grad_());
  }
  loss(l64).backward();
  loss(l32).backward();
  for (size_t i = 0; i < l64.size(); ++i) {
    EXPECT_TRUE(close_rel(l32[i].grad(), l64[i].grad(), 1e-5, 0, std::string("fp32 vs fp64 d") + names[i]));
    const int64_t n = l64[i].numel();
    for (int64_t k : {int64_t{0}, n / 2, n - 1}) {
      const double fd = prism::test::central_difference(
          [&](const std::vector<at::Tensor>& v) { return loss(v).item<double>(); }, l64, i, k);
      EXPECT_NEAR(l64[i].grad().view(-1)[k].item<double>(), fd, 1e-7 * std::max(1.0, std::abs(fd)))
          << "d" << names[i] << "[" << k << "]";
    }
  }
}

TEST(CausalConv1d, ErrorsNameArgumentAndShape) {
  auto x = at::randn({1, 6, 5});
  auto msg = [&](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const prism::Error& e) {
      return e.what();
    }
    return "<no error>";
  };
  EXPECT_EQ(msg([&] { prism::ops::causal_conv1d(x, at::randn({5, 4}), {}, params()); }),
            "causal_conv1d: weight must be [C, K] or [C, 1, K] with C = 6, got [5, 4]");
  EXPECT_EQ(msg([&] { prism::ops::causal_conv1d(x, at::randn({6, 4}), at::randn({5}), params()); }),
            "causal_conv1d: bias must be [C] = [6] on cpu, got [5] on cpu");
  EXPECT_NE(msg([&] { prism::ops::causal_conv1d(x, at::randn({6, 4}), {}, params(at::randn({1, 6, 4}))); })
                .find("initial_state must be [B, C, K-1] = [1, 6, 3], got [1, 6, 4]"),
            std::string::npos);
  EXPECT_NE(msg([&] { prism::ops::causal_conv1d(x, at::randn({6, 4}), {}, params({}, {0, 2, 4})); })
                .find("cu_seqlens must start at 0 and end at L = 5"),
            std::string::npos);
  EXPECT_NE(msg([&] { prism::ops::causal_conv1d(at::randn({6, 5}), at::randn({6, 4}), {}, params()); })
                .find("x must be [B, C, L]"),
            std::string::npos);
}

}  // namespace
