// ssd_scan_ref / ssd_scan / ssd_step against an independent oracle: a hand-written float64
// sequential loop of the recurrence of architectures.md §2.4 (over t, h, p, n with accessors, no
// chunking), and the gradients against fp64 autograd and central finite differences.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "prism/core/error.h"
#include "prism/ops/ssd_scan.h"
#include "util/test_util.h"

namespace {

using prism::ops::SsdScanParams;
using prism::test::close_rel;

struct SsdInputs {
  at::Tensor x, dt, A, B, C, D, init;  // [B,L,H,P] [B,L,H] [H] [B,L,G,N] [B,L,G,N] [H] [B,H,P,N]
};

/// Random inputs in fp64. dt is log-uniform in [dt_lo, dt_hi], A = -exp(U(0, log 16)) like
/// A_log initialisation, so a = dt*A spans fast and slow decays.
SsdInputs make_inputs(int64_t Bsz, int64_t L, int64_t H, int64_t P, int64_t G, int64_t N, double dt_lo = 1e-3,
                      double dt_hi = 0.5, uint64_t seed = 0) {
  at::manual_seed(seed);
  auto o = at::TensorOptions().dtype(at::kDouble);
  SsdInputs in;
  in.x = at::randn({Bsz, L, H, P}, o);
  in.dt = at::exp(at::rand({Bsz, L, H}, o) * (std::log(dt_hi) - std::log(dt_lo)) + std::log(dt_lo));
  in.A = -at::exp(at::rand({H}, o) * std::log(16.0));
  in.B = at::randn({Bsz, L, G, N}, o);
  in.C = at::randn({Bsz, L, G, N}, o);
  in.D = at::randn({H}, o);
  in.init = at::randn({Bsz, H, P, N}, o) * 0.5;
  return in;
}

struct LoopOut {
  at::Tensor y, final_state;
};

/// The oracle: h_t = exp(dt_t A) h_{t-1} + dt_t x_t ⊗ B_t (state zeroed at document starts t > 0),
/// y_t = C_t · h_t + D x_t, one position at a time in float64.
LoopOut ssd_loop(const SsdInputs& in, bool use_d, bool use_init, const std::vector<int64_t>& cu = {}) {
  auto x = in.x.to(at::kDouble).contiguous();
  auto dt = in.dt.to(at::kDouble).contiguous();
  auto A = in.A.to(at::kDouble).contiguous();
  auto Bm = in.B.to(at::kDouble).contiguous();
  auto Cm = in.C.to(at::kDouble).contiguous();
  auto D = in.D.to(at::kDouble).contiguous();
  const int64_t Bsz = x.size(0), L = x.size(1), H = x.size(2), P = x.size(3), G = Bm.size(2), N = Bm.size(3);
  std::vector<bool> reset(L, false);
  for (int64_t s : cu)
    if (s > 0 && s < L) reset[s] = true;
  auto y = at::zeros({Bsz, L, H, P}, at::kDouble);
  auto st = use_init ? in.init.to(at::kDouble).clone() : at::zeros({Bsz, H, P, N}, at::kDouble);
  auto xa = x.accessor<double, 4>(), ya = y.accessor<double, 4>();
  auto dta = dt.accessor<double, 3>();
  auto Aa = A.accessor<double, 1>(), Da = D.accessor<double, 1>();
  auto Ba = Bm.accessor<double, 4>(), Ca = Cm.accessor<double, 4>();
  auto sa = st.accessor<double, 4>();
  for (int64_t b = 0; b < Bsz; ++b)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t g = h / (H / G);
        const double d = dta[b][t][h];
        const double decay = reset[t] ? 0.0 : std::exp(d * Aa[h]);
        for (int64_t p = 0; p < P; ++p) {
          double acc = 0;
          for (int64_t n = 0; n < N; ++n) {
            sa[b][h][p][n] = decay * sa[b][h][p][n] + d * Ba[b][t][g][n] * xa[b][t][h][p];
            acc += Ca[b][t][g][n] * sa[b][h][p][n];
          }
          ya[b][t][h][p] = acc + (use_d ? Da[h] * xa[b][t][h][p] : 0.0);
        }
      }
  return {y, st};
}

SsdScanParams params(int64_t Q, const at::Tensor& init = {}, const std::vector<int64_t>& cu = {}) {
  SsdScanParams p;
  p.chunk_size = Q;
  p.initial_state = init;
  if (!cu.empty()) p.cu_seqlens = at::tensor(cu, at::kLong);
  return p;
}

at::Tensor cast(const at::Tensor& t, at::ScalarType s) { return t.defined() ? t.to(s) : t; }

struct ScanCase {
  const char* name;
  int64_t Bsz, L, H, P, G, N, Q;
  bool use_d, use_init;
};

class SsdScanVsLoop : public ::testing::TestWithParam<ScanCase> {};

TEST_P(SsdScanVsLoop, ChunkedMatchesSequentialLoop) {
  const auto& c = GetParam();
  auto in = make_inputs(c.Bsz, c.L, c.H, c.P, c.G, c.N, 1e-3, 0.5, 11);
  auto expect = ssd_loop(in, c.use_d, c.use_init);
  const at::Tensor D = c.use_d ? in.D : at::Tensor();
  const at::Tensor init = c.use_init ? in.init : at::Tensor();

  // fp64 chunked vs fp64 loop: only summation order differs.
  auto r64 = prism::ops::ssd_scan(in.x, in.dt, in.A, in.B, in.C, D, params(c.Q, init));
  ASSERT_EQ(r64.y.scalar_type(), at::kDouble);
  EXPECT_TRUE(close_rel(r64.y, expect.y, 1e-10, 0, std::string(c.name) + " y fp64"));
  EXPECT_TRUE(close_rel(r64.final_state, expect.final_state, 1e-10, 0, std::string(c.name) + " final fp64"));

  // fp32 inputs: fp32 math, fp32 outputs.
  auto f = at::kFloat;
  auto r32 = prism::ops::ssd_scan(in.x.to(f), in.dt.to(f), in.A.to(f), in.B.to(f), in.C.to(f), cast(D, f),
                                  params(c.Q, cast(init, f)));
  ASSERT_EQ(r32.y.scalar_type(), at::kFloat);
  ASSERT_EQ(r32.final_state.scalar_type(), at::kFloat);
  // The oracle is fed the fp32-rounded inputs so the tolerance measures the fp32 math only.
  SsdInputs in32{in.x.to(f), in.dt.to(f), in.A.to(f), in.B.to(f), in.C.to(f), in.D.to(f), in.init.to(f)};
  auto expect32 = ssd_loop(in32, c.use_d, c.use_init);
  EXPECT_TRUE(close_rel(r32.y, expect32.y, 1e-5, 0, std::string(c.name) + " y fp32"));
  EXPECT_TRUE(close_rel(r32.final_state, expect32.final_state, 1e-5, 0, std::string(c.name) + " final fp32"));

  // bf16 inputs are upcast (HF torch_forward: x/B/C .float()), the result is fp32.
  auto bf = at::kBFloat16;
  auto rbf = prism::ops::ssd_scan(in.x.to(bf), in.dt.to(bf), in.A.to(bf), in.B.to(bf), in.C.to(bf), cast(D, bf),
                                  params(c.Q, cast(init, f)));
  ASSERT_EQ(rbf.y.scalar_type(), at::kFloat);
  SsdInputs inbf{in.x.to(bf), in.dt.to(bf), in.A.to(bf), in.B.to(bf), in.C.to(bf), in.D.to(bf), in.init.to(f)};
  EXPECT_TRUE(close_rel(rbf.y, ssd_loop(inbf, c.use_d, c.use_init).y, 1e-5, 0, std::string(c.name) + " y bf16 in"));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, SsdScanVsLoop,
    ::testing::Values(ScanCase{"L_not_multiple_of_Q", 1, 37, 4, 3, 1, 5, 8, true, false},
                      ScanCase{"L_multiple_of_Q", 2, 64, 4, 4, 2, 6, 16, true, true},
                      ScanCase{"Q_larger_than_L", 1, 5, 4, 3, 2, 4, 16, false, true},
                      ScanCase{"Q_equals_L", 1, 16, 2, 3, 1, 4, 16, true, true},
                      ScanCase{"Q_1", 1, 9, 2, 2, 2, 3, 1, true, true},
                      ScanCase{"single_token", 2, 1, 4, 2, 4, 3, 4, true, true},
                      ScanCase{"groups_eq_heads", 2, 29, 6, 3, 6, 4, 7, false, false},
                      ScanCase{"groups_3_of_6", 1, 50, 6, 5, 3, 8, 12, true, true},
                      ScanCase{"many_chunks", 1, 203, 4, 4, 2, 8, 16, true, true}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(SsdScan, TinyAndLargeDt) {
  struct R {
    double lo, hi;
    const char* name;
  };
  for (auto r : {R{1e-7, 1e-4, "tiny"}, R{1.0, 30.0, "large"}, R{1e-6, 30.0, "mixed"}}) {
    auto in = make_inputs(1, 45, 4, 3, 2, 5, r.lo, r.hi, 3);
    auto expect = ssd_loop(in, true, true);
    auto got = prism::ops::ssd_scan(in.x, in.dt, in.A, in.B, in.C, in.D, params(8, in.init));
    EXPECT_TRUE(close_rel(got.y, expect.y, 1e-10, 0, std::string(r.name) + " y fp64"));
    EXPECT_TRUE(close_rel(got.final_state, expect.final_state, 1e-10, 1e-300, std::string(r.name) + " final fp64"));
    auto f = at::kFloat;
    SsdInputs in32{in.x.to(f), in.dt.to(f), in.A.to(f), in.B.to(f), in.C.to(f), in.D.to(f), in.init.to(f)};
    auto e32 = ssd_loop(in32, true, true);
    auto g32 = prism::ops::ssd_scan(in32.x, in32.dt, in32.A, in32.B, in32.C, in32.D, params(8, in32.init));
    EXPECT_TRUE(close_rel(g32.y, e32.y, 1e-5, 0, std::string(r.name) + " y fp32"));
    EXPECT_TRUE(close_rel(g32.final_state, e32.final_state, 1e-5, 1e-30, std::string(r.name) + " final fp32"));
    EXPECT_FALSE(g32.y.isnan().any().item<bool>());
  }
}

/// Loss weights so that every output element gets a distinct cotangent.
struct Cotangents {
  at::Tensor gy, gf;
};

at::Tensor loss_of(const prism::ops::SsdScanResult& r, const Cotangents& w) {
  return (r.y * w.gy.to(r.y.scalar_type())).sum() + (r.final_state * w.gf.to(r.y.scalar_type())).sum();
}

struct Leaves {
  at::Tensor x, dt, A, B, C, D, init;
  std::vector<at::Tensor> all() const { return {x, dt, A, B, C, D, init}; }
};

Leaves leaves(const SsdInputs& in, at::ScalarType s) {
  auto l = [s](const at::Tensor& t) { return t.detach().to(s).clone().requires_grad_(true); };
  return {l(in.x), l(in.dt), l(in.A), l(in.B), l(in.C), l(in.D), l(in.init)};
}

const char* kLeafNames[] = {"x", "dt", "A", "B", "C", "D", "initial_state"};

TEST(SsdScan, GradsFp32MatchFp64Autograd) {
  for (std::vector<int64_t> cu : {std::vector<int64_t>{}, std::vector<int64_t>{0, 7, 16, 30, 41}}) {
    const int64_t Bsz = cu.empty() ? 2 : 1;
    auto in = make_inputs(Bsz, 41, 4, 3, 2, 5, 1e-3, 0.5, 5);
    Cotangents w{at::randn({Bsz, 41, 4, 3}, at::kDouble), at::randn({Bsz, 4, 3, 5}, at::kDouble)};
    auto l64 = leaves(in, at::kDouble), l32 = leaves(in, at::kFloat);
    loss_of(prism::ops::ssd_scan_ref(l64.x, l64.dt, l64.A, l64.B, l64.C, l64.D, params(8, l64.init, cu)), w)
        .backward();
    loss_of(prism::ops::ssd_scan_ref(l32.x, l32.dt, l32.A, l32.B, l32.C, l32.D, params(8, l32.init, cu)), w)
        .backward();
    auto a64 = l64.all(), a32 = l32.all();
    for (size_t i = 0; i < a64.size(); ++i) {
      ASSERT_TRUE(a32[i].grad().defined()) << kLeafNames[i];
      EXPECT_FALSE(a32[i].grad().isnan().any().item<bool>()) << kLeafNames[i];
      EXPECT_FALSE(a64[i].grad().isnan().any().item<bool>()) << kLeafNames[i];
      EXPECT_TRUE(close_rel(a32[i].grad(), a64[i].grad(), 1e-5, 0,
                            std::string("d") + kLeafNames[i] + (cu.empty() ? " batched" : " packed")));
    }
  }
}

/// Central differences of the fp64 reference on a few entries of every input vs its autograd.
TEST(SsdScan, GradsMatchFiniteDifferencesFp64) {
  for (std::vector<int64_t> cu : {std::vector<int64_t>{}, std::vector<int64_t>{0, 3, 6, 10}}) {
    auto in = make_inputs(1, 10, 4, 2, 2, 3, 1e-2, 1.0, 9);
    Cotangents w{at::randn({1, 10, 4, 2}, at::kDouble), at::randn({1, 4, 2, 3}, at::kDouble)};
    auto l = leaves(in, at::kDouble);
    loss_of(prism::ops::ssd_scan_ref(l.x, l.dt, l.A, l.B, l.C, l.D, params(3, l.init, cu)), w).backward();
    auto vals = l.all();
    for (size_t i = 0; i < vals.size(); ++i) {
      auto base = vals[i].detach();
      const int64_t n = base.numel();
      for (int64_t k : {int64_t{0}, n / 3, n / 2, n - 1}) {
        // Entries that start a document (dt index 3 or 6) are included: the reset makes their
        // decay irrelevant, and FD must agree with the zero a-gradient there.
        const double fd = prism::test::central_difference(
            [&](const std::vector<at::Tensor>& v) {
              return loss_of(prism::ops::ssd_scan_ref(v[0], v[1], v[2], v[3], v[4], v[5], params(3, v[6], cu)), w)
                  .item<double>();
            },
            vals, i, k);
        const double ad = vals[i].grad().view(-1)[k].item<double>();
        EXPECT_NEAR(ad, fd, 1e-6 * std::max(1.0, std::abs(fd)))
            << "d" << kLeafNames[i] << "[" << k << "]" << (cu.empty() ? "" : " packed");
      }
    }
  }
}

/// Packed documents (B == 1, cu_seqlens) == separate calls per document, forward and backward;
/// boundaries both inside chunks and exactly at chunk boundaries (Q = 8: starts 16 and 24).
TEST(SsdScan, PackedDocumentsEqualSeparateCalls) {
  const std::vector<int64_t> cu = {0, 5, 16, 16, 24, 31, 45};  // includes an empty document
  const int64_t L = 45, H = 4, P = 3, G = 2, N = 5, Q = 8;
  for (auto s : {at::kDouble, at::kFloat}) {
    auto in = make_inputs(1, L, H, P, G, N, 1e-3, 2.0, 21);
    Cotangents w{at::randn({1, L, H, P}, at::kDouble), at::randn({1, H, P, N}, at::kDouble)};
    const double tol = s == at::kDouble ? 1e-12 : 1e-5;
    const std::string tag = s == at::kDouble ? " fp64" : " fp32";

    // Oracle with resets.
    SsdInputs ins{in.x.to(s), in.dt.to(s), in.A.to(s), in.B.to(s), in.C.to(s), in.D.to(s), in.init.to(s)};
    auto expect = ssd_loop(ins, true, true, cu);

    auto lp = leaves(in, s);
    auto packed = prism::ops::ssd_scan(lp.x, lp.dt, lp.A, lp.B, lp.C, lp.D, params(Q, lp.init, cu));
    EXPECT_TRUE(close_rel(packed.y, expect.y, tol, 0, "packed y vs loop" + tag));
    EXPECT_TRUE(close_rel(packed.final_state, expect.final_state, tol, 0, "packed final vs loop" + tag));
    loss_of(packed, w).backward();

    // Separate calls: document 0 gets the initial state, later ones start from zero; the final
    // state is the last document's.
    auto ls = leaves(in, s);
    std::vector<at::Tensor> ys;
    at::Tensor last_final;
    for (size_t d = 0; d + 1 < cu.size(); ++d) {
      const int64_t a = cu[d], len = cu[d + 1] - cu[d];
      if (len == 0) continue;
      auto r = prism::ops::ssd_scan(ls.x.narrow(1, a, len), ls.dt.narrow(1, a, len), ls.A, ls.B.narrow(1, a, len),
                                    ls.C.narrow(1, a, len), ls.D, params(Q, d == 0 ? ls.init : at::Tensor()));
      ys.push_back(r.y);
      last_final = r.final_state;
    }
    prism::ops::SsdScanResult sep{at::cat(ys, 1), last_final};
    EXPECT_TRUE(close_rel(packed.y, sep.y, tol, 0, "packed vs separate y" + tag));
    EXPECT_TRUE(close_rel(packed.final_state, sep.final_state, tol, 0, "packed vs separate final" + tag));
    loss_of(sep, w).backward();

    auto gp = lp.all(), gs = ls.all();
    for (size_t i = 0; i < gp.size(); ++i) {
      ASSERT_TRUE(gp[i].grad().defined()) << kLeafNames[i];
      EXPECT_FALSE(gp[i].grad().isnan().any().item<bool>()) << "NaN in d" << kLeafNames[i] << tag;
      EXPECT_FALSE(gp[i].grad().isinf().any().item<bool>()) << "inf in d" << kLeafNames[i] << tag;
      EXPECT_TRUE(close_rel(gp[i].grad(), gs[i].grad(), tol * 10, 0, std::string("packed vs separate d") +
                                                                        kLeafNames[i] + tag));
    }
  }
}

/// Inputs as the mixer produces them: x, B, C and dt are strided slices of one projection
/// ([B, L, I + 2GN + H]); the result must not depend on the layout.
TEST(SsdScan, NonContiguousInputs) {
  const int64_t Bsz = 2, L = 19, H = 4, P = 3, G = 2, N = 5;
  auto in = make_inputs(Bsz, L, H, P, G, N);
  auto packed = at::cat({in.x.reshape({Bsz, L, H * P}), in.B.reshape({Bsz, L, G * N}),
                         in.C.reshape({Bsz, L, G * N}), in.dt},
                        -1);  // [B, L, HP + 2GN + H]
  auto xs = packed.narrow(-1, 0, H * P).view({Bsz, L, H, P});
  auto Bs = packed.narrow(-1, H * P, G * N).view({Bsz, L, G, N});
  auto Cs = packed.narrow(-1, H * P + G * N, G * N).view({Bsz, L, G, N});
  auto dts = packed.narrow(-1, H * P + 2 * G * N, H);
  ASSERT_FALSE(xs.is_contiguous());
  auto init_t = in.init.transpose(2, 3).contiguous().transpose(2, 3);  // [B, H, P, N] with N-major strides
  auto a = prism::ops::ssd_scan(in.x, in.dt, in.A, in.B, in.C, in.D, params(8, in.init));
  auto b = prism::ops::ssd_scan(xs, dts, in.A, Bs, Cs, in.D, params(8, init_t));
  EXPECT_TRUE(close_rel(b.y, a.y, 1e-14, 0, "strided y"));
  EXPECT_TRUE(close_rel(b.final_state, a.final_state, 1e-14, 0, "strided final"));
}

/// A document start at position 0 and cu_seqlens = {0, L} change nothing.
TEST(SsdScan, TrivialCuSeqlensIsOneDocument) {
  auto in = make_inputs(1, 20, 2, 2, 1, 3);
  auto a = prism::ops::ssd_scan(in.x, in.dt, in.A, in.B, in.C, in.D, params(8, in.init));
  auto b = prism::ops::ssd_scan(in.x, in.dt, in.A, in.B, in.C, in.D, params(8, in.init, {0, 20}));
  EXPECT_TRUE(at::equal(a.y, b.y));
  EXPECT_TRUE(at::equal(a.final_state, b.final_state));
}

/// ssd_step applied L times from the initial state == the full scan (y per step, final state).
TEST(SsdScan, StepRepeatedEqualsScan) {
  for (auto s : {at::kDouble, at::kFloat}) {
    const int64_t Bsz = 2, L = 13, H = 6, P = 3, G = 3, N = 4;
    auto in = make_inputs(Bsz, L, H, P, G, N, 1e-3, 1.0, 8);
    auto scan = prism::ops::ssd_scan(in.x, in.dt, in.A, in.B, in.C, in.D, params(4, in.init));
    auto state = in.init.to(s).clone();
    std::vector<at::Tensor> ys;
    for (int64_t t = 0; t < L; ++t)
      ys.push_back(prism::ops::ssd_step(state, in.x.select(1, t).to(s), in.dt.select(1, t).to(s), in.A.to(s),
                                        in.B.select(1, t).to(s), in.C.select(1, t).to(s), in.D.to(s)));
    const double tol = s == at::kDouble ? 1e-12 : 1e-5;
    EXPECT_EQ(ys[0].scalar_type(), s);
    EXPECT_TRUE(close_rel(at::stack(ys, 1), scan.y, tol, 0, "steps y"));
    EXPECT_TRUE(close_rel(state, scan.final_state, tol, 0, "steps final state"));
    // Without D the skip is absent.
    auto st2 = in.init.to(s).clone();
    auto y0 = prism::ops::ssd_step(st2, in.x.select(1, 0).to(s), in.dt.select(1, 0).to(s), in.A.to(s),
                                   in.B.select(1, 0).to(s), in.C.select(1, 0).to(s), at::Tensor());
    auto skip = in.D.to(s).view({1, H, 1}) * in.x.select(1, 0).to(s);
    EXPECT_TRUE(close_rel(y0 + skip, ys[0], tol, 0, "step without D"));
  }
}

/// Prefill of the first part then a continuation from its final state == one prefill.
TEST(SsdScan, ContinuationFromFinalState) {
  auto in = make_inputs(1, 40, 4, 3, 2, 5, 1e-3, 0.5, 4);
  auto full = prism::ops::ssd_scan(in.x, in.dt, in.A, in.B, in.C, in.D, params(8));
  auto first = prism::ops::ssd_scan(in.x.narrow(1, 0, 19), in.dt.narrow(1, 0, 19), in.A, in.B.narrow(1, 0, 19),
                                    in.C.narrow(1, 0, 19), in.D, params(8));
  auto second = prism::ops::ssd_scan(in.x.narrow(1, 19, 21), in.dt.narrow(1, 19, 21), in.A, in.B.narrow(1, 19, 21),
                                     in.C.narrow(1, 19, 21), in.D, params(8, first.final_state));
  EXPECT_TRUE(close_rel(at::cat({first.y, second.y}, 1), full.y, 1e-12, 0, "continued y"));
  EXPECT_TRUE(close_rel(second.final_state, full.final_state, 1e-12, 0, "continued final"));
}

TEST(SsdScan, ErrorsNameArgumentAndShape) {
  auto in = make_inputs(1, 7, 4, 3, 2, 16);
  auto msg = [&](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const prism::Error& e) {
      return e.what();
    }
    return "<no error>";
  };
  EXPECT_EQ(msg([&] { prism::ops::ssd_scan(in.x, in.dt, in.A, in.B, in.C.narrow(3, 0, 8), in.D, params(4)); }),
            "ssd_scan: C must be [B, L, G, N] = [1, 7, 2, 16], got [1, 7, 2, 8]");
  EXPECT_EQ(msg([&] { prism::ops::ssd_scan(in.x, in.dt, in.A, in.B.narrow(1, 0, 6), in.C, in.D, params(4)); }),
            "ssd_scan: B must be [B, L, G, N] = [1, 7, G, N], got [1, 6, 2, 16]");
  EXPECT_EQ(msg([&] { prism::ops::ssd_scan(in.x, in.dt.narrow(2, 0, 3), in.A, in.B, in.C, in.D, params(4)); }),
            "ssd_scan: dt must be [B, L, H] = [1, 7, 4], got [1, 7, 3]");
  EXPECT_EQ(msg([&] { prism::ops::ssd_scan(in.x, in.dt, in.A.narrow(0, 0, 2), in.B, in.C, in.D, params(4)); }),
            "ssd_scan: A must be [H] = [4], got [2]");
  EXPECT_NE(msg([&] {
              prism::ops::ssd_scan(in.x, in.dt, in.A, in.B, in.C, in.D, params(4, in.init.narrow(3, 0, 2)));
            }).find("initial_state must be [B, H, P, N] = [1, 4, 3, 16]"),
            std::string::npos);
  EXPECT_NE(msg([&] { prism::ops::ssd_scan(in.x, in.dt, in.A, in.B, in.C, in.D, params(4, {}, {0, 3, 6})); })
                .find("cu_seqlens must start at 0 and end at L = 7"),
            std::string::npos);
  EXPECT_NE(msg([&] {
              auto b3 = at::randn({1, 7, 3, 16}, at::kDouble);
              prism::ops::ssd_scan(in.x, in.dt, in.A, b3, b3, in.D, params(4));
            }).find("G = 3"),
            std::string::npos);
  EXPECT_NE(msg([&] { prism::ops::ssd_scan(in.x, in.dt, in.A, in.B, in.C, in.D, params(0)); }).find("chunk_size"),
            std::string::npos);
}

/// CPU timing for the report (run with --gtest_also_run_disabled_tests): the 4096-token shape of a
/// Granite-4.0-H / Nemotron-H mixer layer.
TEST(SsdScanBench, DISABLED_Cpu4096) {
  const int64_t L = 4096, H = 32, P = 64, N = 128;
  auto in = make_inputs(1, L, H, P, 1, N, 1e-3, 0.1, 1);
  auto f = at::kFloat;
  auto x = in.x.to(f), dt = in.dt.to(f), A = in.A.to(f), B = in.B.to(f), C = in.C.to(f), D = in.D.to(f);
  using clk = std::chrono::steady_clock;
  auto ms = [](clk::time_point a, clk::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  double fwd = 1e30, fwd_g = 1e30, bwd = 1e30;
  for (int rep = 0; rep < 3; ++rep) {  // best of 3 (the machine is shared)
    {
      at::NoGradGuard ng;
      auto t0 = clk::now();
      auto r = prism::ops::ssd_scan_ref(x, dt, A, B, C, D, params(256));
      fwd = std::min(fwd, ms(t0, clk::now()));
    }
    auto xl = x.clone().requires_grad_(), dtl = dt.clone().requires_grad_(), Al = A.clone().requires_grad_();
    auto Bl = B.clone().requires_grad_(), Cl = C.clone().requires_grad_(), Dl = D.clone().requires_grad_();
    auto t0 = clk::now();
    auto r = prism::ops::ssd_scan_ref(xl, dtl, Al, Bl, Cl, Dl, params(256));
    auto t1 = clk::now();
    (r.y.sum() + r.final_state.sum()).backward();
    auto t2 = clk::now();
    fwd_g = std::min(fwd_g, ms(t0, t1));
    bwd = std::min(bwd, ms(t1, t2));
  }
  std::printf("ssd_scan_ref [1,4096,32,64] N=128 G=1 Q=256 fp32, %d threads: fwd (no grad) %.1f ms; fwd (grad) %.1f ms "
              "+ bwd %.1f ms\n",
              at::get_num_threads(), fwd, fwd_g, bwd);
}

}  // namespace
