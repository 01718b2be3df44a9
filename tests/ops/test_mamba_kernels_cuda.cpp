// The Mamba2 CUDA kernels (kernels/causal_conv1d, kernels/gated_rmsnorm, kernels/ssd) against the
// ATen references (GPU only; every test skips without one). Oracle: the reference run in float64
// on the same inputs; bar: the kernel's error is at most twice the reference's own error in the
// kernel's precision (+ a floor of a few fp32 ulps of the output scale), and no NaN. Outputs come
// from a caching allocator poisoned with NaN, so an element a kernel forgets to write fails.
// Inputs are fresh random values (never zeros); lengths are odd, not multiples of the chunk, with
// many documents per row, and a single token.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "prism/ops/causal_conv1d.h"
#include "prism/ops/rmsnorm.h"
#include "prism/ops/ssd_scan.h"
#include "util/test_util.h"

namespace {

using prism::ops::Impl;
using prism::test::max_abs;
using prism::test::max_abs_diff;

/// Fill, then free, a large block of the CUDA caching allocator with NaN: the next allocations
/// (the kernels' outputs) start as NaN instead of stale-but-plausible values.
void poison_allocator() {
  auto t = at::full({64 << 20}, std::numeric_limits<float>::quiet_NaN(), at::TensorOptions().device(at::kCUDA));
  t.reset();
}

/// err(kernel) <= 2 err(reference in the kernel's precision) + floor, no NaN.
::testing::AssertionResult within_2x(const at::Tensor& got, const at::Tensor& ref, const at::Tensor& ref64,
                                     const std::string& what) {
  if (at::isnan(got).any().item<bool>()) return ::testing::AssertionFailure() << what << ": NaN in the kernel output";
  const double err = max_abs_diff(got, ref64), rerr = max_abs_diff(ref, ref64);
  const double floor = 4e-7 * std::max(1.0, max_abs(ref64));
  if (err <= 2 * rerr + floor) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": kernel error " << err << " > 2 x reference error " << rerr
                                       << " + " << floor << " (max|ref| " << max_abs(ref64) << ")";
}

at::Tensor cu_tensor(const std::vector<int64_t>& cu) { return cu.empty() ? at::Tensor() : at::tensor(cu, at::kLong); }

/// Many documents of odd lengths covering [0, L) (some of length 1).
std::vector<int64_t> many_docs(int64_t L) {
  std::vector<int64_t> cu{0};
  const int64_t lens[] = {1, 7, 3, 65, 1, 130, 2, 31};
  for (int i = 0; cu.back() < L; ++i) cu.push_back(std::min(L, cu.back() + lens[i % 8]));
  return cu;
}

// ---------------------------------------------------------------- causal conv1d

struct ConvCase {
  int64_t B, C, L, K;
  bool bias, init, silu, channel_last, docs;
};

std::string name(const ConvCase& c) {
  return "B" + std::to_string(c.B) + " C" + std::to_string(c.C) + " L" + std::to_string(c.L) + " K" +
         std::to_string(c.K) + (c.bias ? " bias" : "") + (c.init ? " init" : "") + (c.silu ? " silu" : "") +
         (c.channel_last ? " channel-last" : "") + (c.docs ? " docs" : "");
}

std::vector<ConvCase> conv_cases() {
  return {{2, 37, 131, 4, true, false, true, true, false}, {1, 300, 1, 4, true, true, true, true, false},
          {1, 130, 517, 4, true, true, true, true, true},  {3, 64, 200, 3, false, true, false, false, false},
          {1, 96, 77, 2, true, false, true, false, true},  {1, 33, 3, 4, true, true, true, true, true}};
}

TEST(CausalConv1dCuda, ForwardBackwardMatchReference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(11);
  for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (const auto& c : conv_cases()) {
      const auto what = name(c) + " " + std::string(c10::toString(dt));
      auto o64 = at::TensorOptions().dtype(at::kDouble).device(at::kCUDA);
      auto x64 = c.channel_last ? at::randn({c.B, c.L, c.C}, o64).transpose(1, 2) : at::randn({c.B, c.C, c.L}, o64);
      auto w64 = at::randn({c.C, 1, c.K}, o64) * 0.5;
      auto b64 = c.bias ? at::randn({c.C}, o64) : at::Tensor();
      auto i64 = c.init ? at::randn({c.B, c.C, c.K - 1}, o64) : at::Tensor();
      auto gout = at::randn({c.B, c.C, c.L}, o64);
      std::vector<int64_t> cu = c.docs ? many_docs(c.L) : std::vector<int64_t>{};
      auto run = [&](at::ScalarType t, Impl impl, std::vector<at::Tensor>* grads) {
        auto x = x64.to(t).detach().requires_grad_(true);
        auto w = w64.to(t).detach().requires_grad_(true);
        auto b = c.bias ? b64.to(t).detach().requires_grad_(true) : at::Tensor();
        auto in = c.init ? i64.to(t).detach().requires_grad_(true) : at::Tensor();
        prism::ops::CausalConv1dParams p;
        p.initial_state = in;
        p.cu_seqlens = cu_tensor(cu);
        p.silu = c.silu;
        p.impl = impl;
        poison_allocator();
        auto r = prism::ops::causal_conv1d(x, w, b, p);
        (r.out.to(at::kDouble) * gout).sum().backward();
        *grads = {x.grad(), w.grad(), c.bias ? b.grad() : at::Tensor(), c.init ? in.grad() : at::Tensor()};
        return std::make_pair(r.out, r.final_state);
      };
      std::vector<at::Tensor> gk, gr, g64;
      auto k = run(dt, Impl::kAuto, &gk);
      auto r = run(dt, Impl::kReference, &gr);
      auto r64 = run(at::kDouble, Impl::kReference, &g64);
      EXPECT_TRUE(within_2x(k.first, r.first, r64.first, what + " out"));
      EXPECT_TRUE(at::equal(k.second, r.second)) << what << " final_state";
      const char* gname[] = {"dx", "dweight", "dbias", "dinit"};
      for (int i = 0; i < 4; ++i)
        if (g64[i].defined()) EXPECT_TRUE(within_2x(gk[i], gr[i], g64[i], what + " " + gname[i]));
    }
  }
}

TEST(CausalConv1dCuda, DecodeStepsEqualFullForward) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::NoGradGuard ng;
  at::manual_seed(12);
  const int64_t C = 70, L = 19, K = 4, prefill = 6;
  auto o = at::TensorOptions().dtype(at::kFloat).device(at::kCUDA);
  auto x = at::randn({1, L, C}, o).transpose(1, 2), w = at::randn({C, 1, K}, o), b = at::randn({C}, o);
  auto full = prism::ops::causal_conv1d(x, w, b, {});
  prism::ops::CausalConv1dParams p;
  auto r = prism::ops::causal_conv1d(x.narrow(2, 0, prefill), w, b, p);
  std::vector<at::Tensor> outs{r.out};
  for (int64_t t = prefill; t < L; ++t) {
    p.initial_state = r.final_state;
    r = prism::ops::causal_conv1d(x.narrow(2, t, 1), w, b, p);
    outs.push_back(r.out);
  }
  EXPECT_LE(max_abs_diff(at::cat(outs, 2), full.out), 1e-6);
  EXPECT_TRUE(at::equal(r.final_state, full.final_state));
}

// ---------------------------------------------------------------- gated RMSNorm

TEST(GatedRmsNormCuda, ForwardBackwardMatchReference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(13);
  struct Case { at::ScalarType y, z, w; int64_t rows, I, G; bool strided_z; };
  const Case cases[] = {{at::kFloat, at::kBFloat16, at::kBFloat16, 37, 512, 4, true},  // the mixer's prefill
                        {at::kBFloat16, at::kBFloat16, at::kBFloat16, 5, 384, 1, false},
                        {at::kFloat, at::kFloat, at::kFloat, 1, 1000, 2, true},
                        {at::kHalf, at::kHalf, at::kHalf, 9, 8192, 8, false}};
  for (const auto& c : cases) {
    const std::string what = std::string(c10::toString(c.y)) + "/" + c10::toString(c.z) + " rows " +
                             std::to_string(c.rows) + " I " + std::to_string(c.I) + " G " + std::to_string(c.G);
    auto o64 = at::TensorOptions().dtype(at::kDouble).device(at::kCUDA);
    auto y64 = at::randn({c.rows, c.I}, o64);
    auto zbig = at::randn({c.rows, c.I + 77}, o64);  // z as a strided split, like in_proj's output
    auto z64 = c.strided_z ? zbig.narrow(1, 50, c.I) : zbig.narrow(1, 0, c.I).contiguous();
    auto w64 = 1 + 0.2 * at::randn({c.I}, o64);
    auto gout = at::randn({c.rows, c.I}, o64);
    auto run = [&](bool dbl, Impl impl, std::vector<at::Tensor>* g) {
      auto y = y64.to(dbl ? at::kDouble : c.y).detach().requires_grad_(true);
      auto zs = (c.strided_z ? zbig.to(dbl ? at::kDouble : c.z).narrow(1, 50, c.I) : z64.to(dbl ? at::kDouble : c.z))
                    .detach()
                    .requires_grad_(true);
      auto w = w64.to(dbl ? at::kDouble : c.w).detach().requires_grad_(true);
      poison_allocator();
      auto out = prism::ops::rms_norm_gated(y, zs, w, c.I / c.G, 1e-5, impl);
      (out.to(at::kDouble) * gout).sum().backward();
      *g = {y.grad(), zs.grad(), w.grad()};
      return out;
    };
    std::vector<at::Tensor> gk, gr, g64;
    auto k = run(false, Impl::kAuto, &gk);
    auto r = run(false, Impl::kReference, &gr);
    auto r64 = run(true, Impl::kReference, &g64);
    EXPECT_EQ(k.scalar_type(), r.scalar_type()) << what;
    EXPECT_TRUE(within_2x(k, r, r64, what + " out"));
    const char* gname[] = {"dy", "dz", "dweight"};
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(within_2x(gk[i], gr[i], g64[i], what + " " + gname[i]));
  }
}

// ---------------------------------------------------------------- SSD

struct SsdIn {
  at::Tensor x, dt, A, B, C, D, init;
};

SsdIn ssd_inputs(int64_t Bsz, int64_t L, int64_t H, int64_t P, int64_t G, int64_t N, bool strided) {
  auto o = at::TensorOptions().dtype(at::kDouble).device(at::kCUDA);
  SsdIn in;
  if (strided) {  // x, B, C as splits of one [B, L, H*P + 2GN] activation, like the mixer
    auto xbc = at::randn({Bsz, L, H * P + 2 * G * N}, o);
    auto parts = xbc.split_with_sizes({H * P, G * N, G * N}, -1);
    in.x = parts[0].view({Bsz, L, H, P});
    in.B = parts[1].view({Bsz, L, G, N});
    in.C = parts[2].view({Bsz, L, G, N});
  } else {
    in.x = at::randn({Bsz, L, H, P}, o);
    in.B = at::randn({Bsz, L, G, N}, o);
    in.C = at::randn({Bsz, L, G, N}, o);
  }
  in.dt = at::exp(at::rand({Bsz, L, H}, o) * (std::log(0.5) - std::log(1e-3)) + std::log(1e-3));
  in.A = -at::exp(at::rand({H}, o) * std::log(16.0));
  in.D = at::randn({H}, o);
  in.init = at::randn({Bsz, H, P, N}, o);
  return in;
}

struct SsdCase {
  int64_t B, L, H, G, N, Q;
  bool docs, init, strided;
};

TEST(SsdScanCuda, ForwardMatchesReference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::NoGradGuard ng;
  at::manual_seed(14);
  const SsdCase cases[] = {{2, 200, 4, 2, 64, 64, false, true, true},  {1, 1, 4, 1, 128, 128, false, true, false},
                           {1, 517, 8, 2, 128, 128, true, true, true}, {3, 64, 2, 1, 64, 64, false, false, false},
                           {1, 331, 4, 4, 128, 256, true, false, true}, {2, 129, 16, 2, 128, 128, false, true, true}};
  for (auto dt : {at::kFloat, at::kBFloat16}) {
    for (const auto& c : cases) {
      const std::string what = "B" + std::to_string(c.B) + " L" + std::to_string(c.L) + " H" + std::to_string(c.H) +
                               " G" + std::to_string(c.G) + " N" + std::to_string(c.N) + " Q" + std::to_string(c.Q) +
                               (c.docs ? " docs" : "") + (c.init ? " init" : "") + " " + c10::toString(dt);
      auto in = ssd_inputs(c.B, c.L, c.H, 64, c.G, c.N, c.strided);
      auto run = [&](at::ScalarType t, Impl impl) {
        prism::ops::SsdScanParams p;
        p.chunk_size = c.Q;
        if (c.docs) p.cu_seqlens = cu_tensor(many_docs(c.L));
        if (c.init) p.initial_state = in.init.to(t == at::kDouble ? at::kDouble : at::kFloat);
        p.impl = impl;
        // the model's dtypes: x, B, C, dt in the activation dtype, A fp32, D a parameter
        const auto a = t == at::kDouble ? at::kDouble : at::kFloat;
        poison_allocator();
        return prism::ops::ssd_scan(in.x.to(t), in.dt.to(t), in.A.to(a), in.B.to(t), in.C.to(t), in.D.to(t), p);
      };
      // The bf16 inputs are the oracle's inputs too: round them once, then compare in fp64.
      if (dt != at::kFloat) {
        in.x = in.x.to(dt).to(at::kDouble);
        in.B = in.B.to(dt).to(at::kDouble);
        in.C = in.C.to(dt).to(at::kDouble);
        in.dt = in.dt.to(dt).to(at::kDouble);
        in.D = in.D.to(dt).to(at::kDouble);
      }
      in.A = in.A.to(at::kFloat).to(at::kDouble);
      auto k = run(dt, Impl::kAuto);
      auto r = run(dt, Impl::kReference);
      auto r64 = run(at::kDouble, Impl::kReference);
      EXPECT_TRUE(within_2x(k.y, r.y, r64.y, what + " y"));
      EXPECT_TRUE(within_2x(k.final_state, r.final_state, r64.final_state, what + " final_state"));
    }
  }
}

TEST(SsdScanCuda, BackwardMatchesReference) {
  // The autograd Function over the forward + backward kernels (any input requiring grad) against
  // the reference's autograd, in the kernel's dtype and in float64.
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(16);
  const SsdCase cases[] = {{2, 200, 4, 2, 64, 64, false, true, true},  {1, 1, 4, 1, 128, 128, false, true, false},
                           {1, 517, 8, 2, 128, 128, true, true, true}, {3, 64, 2, 1, 64, 64, false, false, false},
                           {1, 331, 4, 4, 128, 256, true, false, true}, {2, 129, 16, 2, 128, 128, false, true, true}};
  for (auto dt : {at::kFloat, at::kBFloat16}) {
    for (const auto& c : cases) {
      for (bool use_d : {true, false}) {
        const std::string what = "B" + std::to_string(c.B) + " L" + std::to_string(c.L) + " H" + std::to_string(c.H) +
                                 " G" + std::to_string(c.G) + " N" + std::to_string(c.N) + " Q" + std::to_string(c.Q) +
                                 (c.docs ? " docs" : "") + (c.init ? " init" : "") + (use_d ? " D" : "") + " " +
                                 c10::toString(dt);
        auto in = ssd_inputs(c.B, c.L, c.H, 64, c.G, c.N, c.strided);
        if (dt != at::kFloat) {  // the rounded inputs are the oracle's inputs too
          in.x = in.x.to(dt).to(at::kDouble);
          in.B = in.B.to(dt).to(at::kDouble);
          in.C = in.C.to(dt).to(at::kDouble);
          in.dt = in.dt.to(dt).to(at::kDouble);
          in.D = in.D.to(dt).to(at::kDouble);
        }
        in.A = in.A.to(at::kFloat).to(at::kDouble);
        in.init = in.init.to(at::kFloat).to(at::kDouble);
        auto o64 = in.x.options();
        auto gy = at::randn({c.B, c.L, c.H, 64}, o64).to(at::kFloat).to(at::kDouble);
        auto gf = at::randn({c.B, c.H, 64, c.N}, o64).to(at::kFloat).to(at::kDouble);
        auto run = [&](at::ScalarType t, Impl impl, std::vector<at::Tensor>* grads) {
          const auto a = t == at::kDouble ? at::kDouble : at::kFloat;
          auto leaf = [](const at::Tensor& v, at::ScalarType s) { return v.to(s).detach().requires_grad_(true); };
          auto x = leaf(in.x, t), dtt = leaf(in.dt, t), A = leaf(in.A, a), B = leaf(in.B, t), C = leaf(in.C, t);
          auto D = use_d ? leaf(in.D, t) : at::Tensor();
          auto init = c.init ? leaf(in.init, a) : at::Tensor();
          prism::ops::SsdScanParams p;
          p.chunk_size = c.Q;
          if (c.docs) p.cu_seqlens = cu_tensor(many_docs(c.L));
          p.initial_state = init;
          p.impl = impl;
          poison_allocator();
          auto r = prism::ops::ssd_scan(x, dtt, A, B, C, D, p);
          ((r.y.to(at::kDouble) * gy).sum() + (r.final_state.to(at::kDouble) * gf).sum()).backward();
          *grads = {x.grad(), dtt.grad(), A.grad(), B.grad(), C.grad(), use_d ? D.grad() : at::Tensor(),
                    c.init ? init.grad() : at::Tensor()};
          return r;
        };
        std::vector<at::Tensor> gk, gr, g64;
        auto k = run(dt, Impl::kAuto, &gk);
        auto r = run(dt, Impl::kReference, &gr);
        auto r64 = run(at::kDouble, Impl::kReference, &g64);
        EXPECT_TRUE(within_2x(k.y, r.y, r64.y, what + " y"));
        EXPECT_TRUE(within_2x(k.final_state, r.final_state, r64.final_state, what + " final_state"));
        const char* gname[] = {"dx", "ddt", "dA", "dB", "dC", "dD", "dinitial_state"};
        for (int i = 0; i < 7; ++i) {
          if (!g64[i].defined()) continue;
          ASSERT_TRUE(gk[i].defined()) << what << " " << gname[i] << " missing";
          EXPECT_EQ(gk[i].scalar_type(), gr[i].scalar_type()) << what << " " << gname[i];
          EXPECT_TRUE(within_2x(gk[i], gr[i], g64[i], what + " " + gname[i]));
        }
      }
    }
  }
}

TEST(SsdScanCuda, BackwardIsDeterministic) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(17);
  auto in = ssd_inputs(1, 1000, 8, 64, 2, 128, true);
  auto f = [](const at::Tensor& t) { return t.to(at::kBFloat16).detach().requires_grad_(true); };
  auto gy = at::randn({1, 1000, 8, 64}, in.x.options().dtype(at::kFloat));
  std::vector<at::Tensor> first;
  for (int run = 0; run < 3; ++run) {
    auto x = f(in.x), dt = f(in.dt), B = f(in.B), C = f(in.C), D = f(in.D);
    auto A = in.A.to(at::kFloat).detach().requires_grad_(true);
    prism::ops::SsdScanParams p;
    p.chunk_size = 128;
    p.cu_seqlens = cu_tensor(many_docs(1000));
    prism::ops::ssd_scan(x, dt, A, B, C, D, p).y.backward(gy);
    std::vector<at::Tensor> g{x.grad(), dt.grad(), A.grad(), B.grad(), C.grad(), D.grad()};
    if (run == 0) {
      first = g;
      continue;
    }
    for (size_t i = 0; i < g.size(); ++i) EXPECT_TRUE(at::equal(g[i], first[i])) << "run " << run << " grad " << i;
  }
}

TEST(SsdStepCuda, StepsEqualScanAndReference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::NoGradGuard ng;
  at::manual_seed(15);
  const int64_t Bsz = 2, L = 37, H = 8, P = 64, G = 2, N = 128, prefill = 20;
  auto in = ssd_inputs(Bsz, L, H, P, G, N, true);
  auto f = [](const at::Tensor& t) { return t.to(at::kFloat); };
  prism::ops::SsdScanParams p;
  p.chunk_size = 64;
  auto full = prism::ops::ssd_scan(f(in.x), f(in.dt), f(in.A), f(in.B), f(in.C), f(in.D), p);
  auto full64 = prism::ops::ssd_scan_ref(in.x, in.dt, in.A, in.B, in.C, in.D, p);
  auto pre = prism::ops::ssd_scan(f(in.x).narrow(1, 0, prefill), f(in.dt).narrow(1, 0, prefill), f(in.A),
                                  f(in.B).narrow(1, 0, prefill), f(in.C).narrow(1, 0, prefill), f(in.D), p);
  auto state_k = pre.final_state.clone(), state_r = pre.final_state.clone();
  std::vector<at::Tensor> yk{pre.y}, yr{pre.y};
  for (int64_t t = prefill; t < L; ++t) {
    auto xt = f(in.x).select(1, t), dtt = f(in.dt).select(1, t), Bt = f(in.B).select(1, t), Ct = f(in.C).select(1, t);
    poison_allocator();
    yk.push_back(prism::ops::ssd_step(state_k, xt, dtt, f(in.A), Bt, Ct, f(in.D)).unsqueeze(1));
    yr.push_back(prism::ops::ssd_step(state_r, xt, dtt, f(in.A), Bt, Ct, f(in.D), Impl::kReference).unsqueeze(1));
  }
  auto steps_k = at::cat(yk, 1), steps_r = at::cat(yr, 1);
  EXPECT_TRUE(within_2x(steps_k, steps_r, full64.y, "decode y vs the fp64 full scan"));
  EXPECT_TRUE(within_2x(state_k, state_r, full64.final_state, "decode state vs the fp64 full scan"));
  EXPECT_TRUE(within_2x(steps_k, full.y, full64.y, "decode y vs the fp32 full scan"));
}

}  // namespace
