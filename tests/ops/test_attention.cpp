// Attention reference vs an independent float64 triple loop (hand-written, no ATen math), and the
// dispatching op vs the reference, including gradients.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "prism/ops/attention.h"
#include "util/test_util.h"

using prism::ops::AttentionParams;

namespace {

// Naive attention in double with explicit visibility rules; doc[t] gives the document of t.
at::Tensor naive(const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_, const AttentionParams& p,
                 const std::vector<int64_t>& doc, const at::Tensor& key_mask) {
  auto q = q_.to(at::kDouble).contiguous(), k = k_.to(at::kDouble).contiguous(), v = v_.to(at::kDouble).contiguous();
  const int64_t B = q.size(0), Hq = q.size(1), Lq = q.size(2), d = q.size(3), Hkv = k.size(1), Lk = k.size(2);
  auto out = at::zeros_like(q);
  auto qa = q.accessor<double, 4>(), ka = k.accessor<double, 4>(), va = v.accessor<double, 4>();
  auto oa = out.accessor<double, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t hk = h / (Hq / Hkv);
      for (int64_t i = 0; i < Lq; ++i) {
        const int64_t qi = p.q_offset + i;
        std::vector<double> s(Lk, -std::numeric_limits<double>::infinity());
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < Lk; ++j) {
          bool vis = true;
          if (p.causal && j > qi) vis = false;
          if (p.window > 0 && qi - j >= p.window) vis = false;
          if (!doc.empty() && doc[i] != doc[j]) vis = false;
          if (key_mask.defined() && key_mask[b][j].item<int64_t>() == 0) vis = false;
          if (!vis) continue;
          double acc = 0;
          for (int64_t c = 0; c < d; ++c) acc += qa[b][h][i][c] * ka[b][hk][j][c];
          s[j] = acc * p.scale;
          mx = std::max(mx, s[j]);
        }
        if (mx == -std::numeric_limits<double>::infinity()) continue;  // no visible key: skip (checked separately)
        double z = 0;
        for (int64_t j = 0; j < Lk; ++j) z += std::exp(s[j] - mx);
        for (int64_t j = 0; j < Lk; ++j) {
          double w = std::exp(s[j] - mx) / z;
          if (w == 0) continue;
          for (int64_t c = 0; c < d; ++c) oa[b][h][i][c] += w * va[b][hk][j][c];
        }
      }
    }
  return out;
}

struct Case {
  const char* name;
  int64_t B, Hq, Hkv, Lq, Lk, d;
  bool causal;
  int64_t window, q_offset;
  std::vector<int64_t> cu;  // packed docs
  bool key_mask;
};

class AttentionRef : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionRef, MatchesNaiveFloat64AndDispatch) {
  const auto& c = GetParam();
  at::manual_seed(1);
  auto q = at::randn({c.B, c.Hq, c.Lq, c.d}, at::kDouble);
  auto k = at::randn({c.B, c.Hkv, c.Lk, c.d}, at::kDouble);
  auto v = at::randn({c.B, c.Hkv, c.Lk, c.d}, at::kDouble);
  AttentionParams p;
  p.scale = 1.0 / std::sqrt(static_cast<double>(c.d)) * 1.3;
  p.causal = c.causal;
  p.window = c.window;
  p.q_offset = c.q_offset;
  std::vector<int64_t> doc;
  if (!c.cu.empty()) {
    p.cu_seqlens = at::tensor(c.cu, at::kLong);
    for (size_t i = 0; i + 1 < c.cu.size(); ++i)
      for (int64_t t = c.cu[i]; t < c.cu[i + 1]; ++t) doc.push_back(static_cast<int64_t>(i));
  }
  at::Tensor km;
  if (c.key_mask) {
    km = at::ones({c.B, c.Lk}, at::kLong);
    km[0].narrow(0, 0, 2).fill_(0);  // left padding on row 0
  }
  p.key_mask = km;
  auto ref = prism::ops::attention_ref(q, k, v, p);
  auto expect = naive(q, k, v, p, doc, km);
  // Rows with no visible key are undefined (padding); compare rows that have one.
  if (c.key_mask && c.causal) {
    ref = ref.narrow(2, 2, c.Lq - 2);
    expect = expect.narrow(2, 2, c.Lq - 2);
  }
  EXPECT_TRUE(prism::test::close_rel(ref, expect, 1e-12, 1e-12, std::string(c.name) + " ref vs naive"));
  EXPECT_FALSE(prism::ops::attention_ref(q, k, v, p).isnan().any().item<bool>()) << "padding rows must stay finite";

  // The dispatching op in fp32 against the fp64 reference, and its gradients against the
  // reference's autograd gradients.
  auto qf = q.to(at::kFloat).requires_grad_(), kf = k.to(at::kFloat).requires_grad_(), vf = v.to(at::kFloat).requires_grad_();
  auto out = prism::ops::attention(qf, kf, vf, p);
  auto full_ref = prism::ops::attention_ref(q, k, v, p);
  auto w = at::randn(out.sizes(), at::kFloat);
  if (c.key_mask && c.causal) w.narrow(2, 0, 2).zero_();
  (out * w).sum().backward();
  auto qd = q.clone().requires_grad_(), kd = k.clone().requires_grad_(), vd = v.clone().requires_grad_();
  (prism::ops::attention_ref(qd, kd, vd, p) * w.to(at::kDouble)).sum().backward();
  auto o_cmp = out.detach(), r_cmp = full_ref;
  if (c.key_mask && c.causal) {
    o_cmp = o_cmp.narrow(2, 2, c.Lq - 2);
    r_cmp = r_cmp.narrow(2, 2, c.Lq - 2);
  }
  EXPECT_TRUE(prism::test::close_rel(o_cmp, r_cmp, 1e-5, 0, std::string(c.name) + " op fp32 vs ref fp64"));
  EXPECT_TRUE(prism::test::close_rel(qf.grad(), qd.grad(), 1e-4, 0, std::string(c.name) + " dq"));
  EXPECT_TRUE(prism::test::close_rel(kf.grad(), kd.grad(), 1e-4, 0, std::string(c.name) + " dk"));
  EXPECT_TRUE(prism::test::close_rel(vf.grad(), vd.grad(), 1e-4, 0, std::string(c.name) + " dv"));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, AttentionRef,
    ::testing::Values(Case{"causal_mha", 2, 4, 4, 7, 7, 8, true, 0, 0, {}, false},
                      Case{"causal_gqa", 2, 8, 2, 9, 9, 16, true, 0, 0, {}, false},
                      Case{"noncausal", 1, 4, 1, 5, 6, 8, false, 0, 0, {}, false},
                      Case{"sliding_window", 1, 4, 2, 12, 12, 8, true, 4, 0, {}, false},
                      Case{"packed", 1, 4, 2, 11, 11, 8, true, 0, 0, {0, 3, 8, 11}, false},
                      Case{"packed_window", 1, 2, 1, 11, 11, 8, true, 2, 0, {0, 6, 11}, false},
                      // One-token, empty and long documents through the per-document SDPA path.
                      Case{"packed_ragged_gqa", 1, 9, 3, 40, 40, 16, true, 0, 0, {0, 1, 1, 5, 29, 30, 40}, false},
                      Case{"packed_one_doc", 1, 4, 2, 9, 9, 8, true, 0, 0, {0, 9}, false},
                      Case{"packed_noncausal", 1, 4, 2, 10, 10, 8, false, 0, 0, {0, 4, 10}, false},
                      Case{"decode_offset", 2, 4, 2, 1, 9, 8, true, 0, 8, {}, false},
                      Case{"decode_window", 1, 4, 2, 3, 10, 8, true, 4, 7, {}, false},
                      Case{"left_padding", 2, 4, 2, 6, 6, 8, true, 0, 0, {}, true}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Attention, RejectsBadShapes) {
  auto q = at::randn({1, 3, 4, 8});
  auto k = at::randn({1, 2, 4, 8});
  EXPECT_THROW(prism::ops::attention_ref(q, k, k, {}), std::exception);  // 3 % 2 != 0
  AttentionParams p;
  p.cu_seqlens = at::tensor(std::vector<int64_t>{0, 3}, at::kLong);      // does not end at L=4
  auto k2 = at::randn({1, 3, 4, 8});
  EXPECT_THROW(prism::ops::attention_ref(q, k2, k2, p), std::exception);
  EXPECT_THROW(prism::ops::attention(q, k2, k2, p), std::exception);  // the per-document path checks too
  p.cu_seqlens = at::tensor(std::vector<int64_t>{0, 3, 2, 4}, at::kLong);
  try {
    prism::ops::attention(q, k2, k2, p);
    ADD_FAILURE() << "a decreasing cu_seqlens was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("non-decreasing"), std::string::npos) << e.what();
  }
}

}  // namespace
