// The depthwise causal conv1d (+ SiLU) kernels (kernels/causal_conv1d/causal_conv1d_kernel.cuh),
// compiled by the host compiler and run on the CPU through kernels/common/block_emu.h (one OS
// thread per CUDA thread). Checks what a machine without a GPU can check: the time tiles and
// their K-1 halo, the channel blocks (C not a multiple of 128), channel-first and channel-last
// strides, document resets from cu_seqlens (empty, one-token and tile-straddling documents), the
// initial state and the final state, the decode step (L == 1 with the state: a run of steps
// equals the full convolution bit for bit), and the backward (dx, per-tile dw / db partial rows,
// d initial_state), against a float64 evaluation of src/ops/causal_conv1d_ref.cpp (autograd for
// the backward), with the precision rule of the GPU tests: error <= 2x the error of the same
// reference run in the kernel's dtype. Outputs start as NaN, so an element never written fails.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "prism/ops/causal_conv1d.h"
#include "util/test_util.h"

#define PRISM_KERNEL_EMULATE 1
#include "../../kernels/causal_conv1d/causal_conv1d_kernel.cuh"

namespace {

namespace emu = prism::kernels::emu;
namespace ck = prism::kernels::causal_conv1d;
namespace ks = prism::kernels::ssm;
using prism::test::max_abs;
using prism::test::max_abs_diff;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

bool has_nan(const at::Tensor& t) { return t.isnan().any().item<bool>(); }

/// The precision rule: kernel error <= 2x the same-dtype reference's error (+ fp32 noise).
/// PRISM_TEST_VERBOSE=1 prints every pair.
void expect_within_2x(const std::string& what, double e_kernel, double e_ref, double floor) {
  if (std::getenv("PRISM_TEST_VERBOSE")) std::printf("  %-60s kernel %.3e  reference %.3e\n", what.c_str(), e_kernel, e_ref);
  EXPECT_LE(e_kernel, 2 * e_ref + floor) << what << ": kernel " << e_kernel << ", reference in dtype " << e_ref;
}

template <typename T>
T* ptr(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<T*>(t.data_ptr()) : nullptr;
}

/// What causal_conv1d_fwd launches (grid over channel blocks, time tiles, batch).
template <typename T>
void run_fwd(const ks::CausalConv1dFwdParams& p) {
  const emu::Dim3 grid{static_cast<unsigned>((p.C + ks::kConvThreads - 1) / ks::kConvThreads),
                       static_cast<unsigned>((p.L + ks::kConvFwdTile - 1) / ks::kConvFwdTile),
                       static_cast<unsigned>(p.B)};
  const emu::Dim3 block{static_cast<unsigned>(ks::kConvThreads)};
  switch (p.K) {
    case 2: emu::launch(grid, block, 0, ck::conv_fwd_kernel<T, 2>, p); break;
    case 3: emu::launch(grid, block, 0, ck::conv_fwd_kernel<T, 3>, p); break;
    case 4: emu::launch(grid, block, 0, ck::conv_fwd_kernel<T, 4>, p); break;
    default: FAIL() << "K " << p.K;
  }
}

/// What causal_conv1d_bwd launches.
template <typename T>
void run_bwd(const ks::CausalConv1dBwdParams& q) {
  const auto& p = q.f;
  const emu::Dim3 grid{static_cast<unsigned>((p.C + ks::kConvThreads - 1) / ks::kConvThreads),
                       static_cast<unsigned>(ks::conv_bwd_num_tiles(p.L)), static_cast<unsigned>(p.B)};
  const emu::Dim3 block{static_cast<unsigned>(ks::kConvThreads)};
  switch (p.K) {
    case 2: emu::launch(grid, block, 0, ck::conv_bwd_kernel<T, 2>, q); break;
    case 3: emu::launch(grid, block, 0, ck::conv_bwd_kernel<T, 3>, q); break;
    case 4: emu::launch(grid, block, 0, ck::conv_bwd_kernel<T, 4>, q); break;
    default: FAIL() << "K " << p.K;
  }
}

/// A NaN-filled [B, C, L] tensor in x's memory order (the binding's empty_like_layout).
at::Tensor poisoned_like_layout(const at::Tensor& x) {
  const int64_t B = x.size(0), C = x.size(1), L = x.size(2);
  if (x.stride(1) == 1 && L > 1) return at::full({B, L, C}, kNaN, x.options()).transpose(1, 2);
  return at::full({B, C, L}, kNaN, x.options());
}

/// [B, C, L] random, non-zero, channel-first or a transposed channel-last [B, L, C] buffer.
at::Tensor random_bcl(int64_t B, int64_t C, int64_t L, at::ScalarType dt, bool channel_last) {
  if (channel_last) return (at::randn({B, L, C}, at::kDouble) * 1.5 + 0.2).to(dt).transpose(1, 2);
  return (at::randn({B, C, L}, at::kDouble) * 1.5 + 0.2).to(dt);
}

/// The forward parameters the binding fills (fp32 weight / bias / state, x's strides).
ks::CausalConv1dFwdParams fwd_params(const at::Tensor& x, const at::Tensor& wf, const at::Tensor& bf,
                                     const at::Tensor& initf, const at::Tensor& cu, bool silu) {
  ks::CausalConv1dFwdParams p;
  p.x = x.data_ptr();
  p.x_sb = x.stride(0);
  p.x_sc = x.stride(1);
  p.x_sl = x.stride(2);
  p.w = ptr<const float>(wf);
  p.bias = ptr<const float>(bf);
  p.init = ptr<const float>(initf);
  p.cu_seqlens = ptr<const int64_t>(cu);
  p.num_cu = cu.defined() ? static_cast<int>(cu.numel()) : 0;
  p.B = x.size(0);
  p.C = x.size(1);
  p.L = x.size(2);
  p.K = static_cast<int>(wf.size(1));
  p.silu = silu;
  return p;
}

at::Tensor f32(const at::Tensor& t) { return t.defined() ? t.to(at::kFloat).contiguous() : at::Tensor(); }

struct ConvOut {
  at::Tensor out, final_state;
};

/// The kernel forward on poisoned outputs (x's layout for out, as the binding).
template <typename T>
ConvOut kernel_fwd(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const at::Tensor& init,
                   const at::Tensor& cu, bool silu) {
  const auto wf = f32(w), bf = f32(bias), initf = f32(init);
  ConvOut r{poisoned_like_layout(x), at::full({x.size(0), x.size(1), w.size(1) - 1}, kNaN, x.options())};
  auto p = fwd_params(x, wf, bf, initf, cu, silu);
  p.out = r.out.data_ptr();
  p.o_sb = r.out.stride(0);
  p.o_sc = r.out.stride(1);
  p.o_sl = r.out.stride(2);
  p.final_state = r.final_state.data_ptr();
  run_fwd<T>(p);
  return r;
}

struct Case {
  int64_t B, C, L;
  int K;
  bool bias, init, silu, channel_last;
  std::vector<int64_t> cu;  // empty: one document per row
};

std::string describe(const Case& c, at::ScalarType dt) {
  std::string s = ::testing::PrintToString(dt) + " B " + std::to_string(c.B) + " C " + std::to_string(c.C) + " L " +
                  std::to_string(c.L) + " K " + std::to_string(c.K) + (c.bias ? " bias" : "") +
                  (c.init ? " init" : "") + (c.silu ? " silu" : "") + (c.channel_last ? " channel-last" : "");
  if (!c.cu.empty()) {
    s += " cu_seqlens";
    for (auto v : c.cu) s += " " + std::to_string(v);
  }
  return s;
}

template <typename T>
void check_case(at::ScalarType dt, const Case& c) {
  SCOPED_TRACE(describe(c, dt));
  const int64_t B = c.B, C = c.C, L = c.L, K = c.K;
  auto x = random_bcl(B, C, L, dt, c.channel_last);
  auto w = (0.5 * at::randn({C, K}, at::kDouble)).to(dt);
  auto bias = c.bias ? (0.3 * at::randn({C}, at::kDouble)).to(dt) : at::Tensor();
  auto init = c.init ? at::randn({B, C, K - 1}, at::kDouble).to(dt) : at::Tensor();
  auto cu = c.cu.empty() ? at::Tensor() : at::tensor(c.cu, at::kLong);
  auto dout = random_bcl(B, C, L, dt, !c.channel_last);  // the other layout: strides are per tensor

  // --- forward ---
  auto k = kernel_fwd<T>(x, w, bias, init, cu, c.silu);
  EXPECT_FALSE(has_nan(k.out)) << "out has unwritten elements";
  EXPECT_FALSE(has_nan(k.final_state)) << "final_state has unwritten elements";

  // Float64 truth and the reference in the kernel's dtype, both through autograd.
  auto leaf64 = [](const at::Tensor& t) {
    return t.defined() ? t.to(at::kDouble).requires_grad_(true) : at::Tensor();
  };
  auto leaf = [](const at::Tensor& t) { return t.defined() ? t.clone().requires_grad_(true) : at::Tensor(); };
  auto x64 = leaf64(x), w64 = leaf64(w), b64 = leaf64(bias), i64 = leaf64(init);
  prism::ops::CausalConv1dParams p64;
  p64.cu_seqlens = cu;
  p64.initial_state = i64;
  p64.silu = c.silu;
  auto r64 = prism::ops::causal_conv1d_ref(x64, w64, b64, p64);
  r64.out.backward(dout.to(at::kDouble));
  auto xr = leaf(x), wr = leaf(w), br = leaf(bias), ir = leaf(init);
  auto pr = p64;
  pr.initial_state = ir;
  auto rr = prism::ops::causal_conv1d_ref(xr, wr, br, pr);
  rr.out.backward(dout);

  const std::string tag = describe(c, dt) + ": ";
  expect_within_2x(tag + "out", max_abs_diff(k.out, r64.out), max_abs_diff(rr.out, r64.out),
                   1e-6 * max_abs(r64.out));  // the floor: fp32 arithmetic noise
  // The state is raw inputs (or zeros): exact.
  EXPECT_TRUE(at::equal(k.final_state, rr.final_state.detach()))
      << "final_state " << max_abs_diff(k.final_state, rr.final_state);

  // --- backward ---
  const auto wf = f32(w), bf = f32(bias), initf = f32(init);
  const int64_t ntiles = ks::conv_bwd_num_tiles(L);
  auto dx = poisoned_like_layout(x);
  auto dw_part = at::full({B * ntiles, C, K}, kNaN, at::kFloat);
  auto db_part = c.bias ? at::full({B * ntiles, C}, kNaN, at::kFloat) : at::Tensor();
  auto dinit = c.init ? at::full({B, C, K - 1}, kNaN, at::kFloat) : at::Tensor();
  ks::CausalConv1dBwdParams q;
  q.f = fwd_params(x, wf, bf, initf, cu, c.silu);
  q.dout = dout.data_ptr();
  q.g_sb = dout.stride(0);
  q.g_sc = dout.stride(1);
  q.g_sl = dout.stride(2);
  q.dx = dx.data_ptr();
  q.dx_sb = dx.stride(0);
  q.dx_sc = dx.stride(1);
  q.dx_sl = dx.stride(2);
  q.dw_partial = ptr<float>(dw_part);
  q.db_partial = ptr<float>(db_part);
  q.dinit = ptr<float>(dinit);
  run_bwd<T>(q);

  auto check_grad = [&](const char* what, const at::Tensor& got, const at::Tensor& ref, const at::Tensor& truth) {
    ASSERT_TRUE(truth.defined()) << what;
    EXPECT_FALSE(has_nan(got)) << what << " has unwritten elements";
    expect_within_2x(tag + what, max_abs_diff(got, truth), max_abs_diff(ref, truth), 1e-6 * max_abs(truth));
  };
  check_grad("dx", dx, xr.grad(), x64.grad());
  // The partial rows summed in fp32, as the binding does before its cast to the weight's dtype.
  check_grad("dw", dw_part.sum(0), wr.grad(), w64.grad());
  if (c.bias) check_grad("dbias", db_part.sum(0), br.grad(), b64.grad());
  if (c.init) check_grad("dinitial_state", dinit, ir.grad(), i64.grad());
}

template <typename T>
void check_all(at::ScalarType dt, const std::vector<Case>& cases) {
  for (const auto& c : cases) check_case<T>(dt, c);
}

// Shapes: a single token; odd lengths that end inside a forward tile (64) and a backward tile
// (128); L shorter than the K-1 state; C not a multiple of the 128-channel block (two blocks,
// the second mostly idle); every K in 2..4.
const std::vector<Case> kPlainCases = {
    {1, 5, 1, 4, true, false, true, false, {}},   {2, 3, 1, 4, false, true, true, true, {}},
    {2, 7, 2, 4, true, true, true, false, {}},    {2, 130, 37, 4, true, true, true, true, {}},
    {1, 6, 201, 4, true, true, true, false, {}},  {2, 9, 131, 3, false, true, true, true, {}},
    {1, 4, 129, 2, true, true, false, false, {}}, {3, 5, 64, 4, true, false, false, true, {}},
};

// Several documents in one row (B == 1): an empty one, one-token ones, starts on and next to the
// tile boundaries (64, 128), documents shorter than K, the initial state feeding the first.
const std::vector<Case> kDocCases = {
    {1, 6, 200, 4, true, true, true, true, {0, 3, 3, 50, 64, 65, 128, 131, 199, 200}},
    {1, 5, 67, 4, true, false, true, false, {0, 1, 2, 63, 67}},
    {1, 130, 130, 3, false, true, true, true, {0, 60, 127, 130}},
    {1, 4, 9, 2, true, true, false, false, {0, 0, 4, 9, 9}},
};

TEST(CausalConv1dEmu, ForwardBackwardMatchFloat64Fp32) {
  at::manual_seed(21);
  check_all<float>(at::kFloat, kPlainCases);
}

TEST(CausalConv1dEmu, ForwardBackwardMatchFloat64Bf16) {
  at::manual_seed(22);
  check_all<c10::BFloat16>(at::kBFloat16, kPlainCases);
}

TEST(CausalConv1dEmu, ForwardBackwardMatchFloat64Fp16) {
  at::manual_seed(23);
  check_all<c10::Half>(at::kHalf, {kPlainCases[1], kPlainCases[4], kDocCases[1]});
}

TEST(CausalConv1dEmu, DocumentResetsMatchFloat64) {
  at::manual_seed(24);
  check_all<float>(at::kFloat, kDocCases);
  check_all<c10::BFloat16>(at::kBFloat16, kDocCases);
}

// Decode: a prefix forward, then L == 1 steps each fed the previous call's final_state, equals
// the full forward bit for bit (output and final state), from zeros or from an initial state.
template <typename T>
void check_decode(at::ScalarType dt, int K, bool with_init, int64_t prefix) {
  SCOPED_TRACE(::testing::Message() << dt << " K " << K << " init " << with_init << " prefix " << prefix);
  const int64_t B = 2, C = 6, L = 7;
  auto x = random_bcl(B, C, L, dt, true);
  auto w = (0.5 * at::randn({C, K}, at::kDouble)).to(dt);
  auto bias = (0.3 * at::randn({C}, at::kDouble)).to(dt);
  auto init = with_init ? at::randn({B, C, K - 1}, at::kDouble).to(dt) : at::Tensor();
  auto full = kernel_fwd<T>(x, w, bias, init, at::Tensor(), true);

  std::vector<at::Tensor> outs;
  at::Tensor state = with_init ? init : at::zeros({B, C, K - 1}, dt);
  if (prefix > 0) {
    auto r = kernel_fwd<T>(x.narrow(2, 0, prefix), w, bias, init, at::Tensor(), true);
    outs.push_back(r.out);
    state = r.final_state;
  }
  for (int64_t t = prefix; t < L; ++t) {
    auto r = kernel_fwd<T>(x.narrow(2, t, 1), w, bias, state, at::Tensor(), true);
    outs.push_back(r.out);
    state = r.final_state;
  }
  auto stepped = at::cat(outs, 2);
  EXPECT_TRUE(at::equal(stepped, full.out)) << "outputs differ by " << max_abs_diff(stepped, full.out);
  EXPECT_TRUE(at::equal(state, full.final_state)) << "final state differs";
}

TEST(CausalConv1dEmu, DecodeStepsEqualFullConvolution) {
  at::manual_seed(25);
  struct Run {
    int K;
    bool with_init;
    int64_t prefix;  // tokens of the first (prefill) call; then one call per token
  };
  for (const Run& r : {Run{4, true, 0}, Run{4, false, 4}, Run{3, true, 1}, Run{2, true, 4}, Run{2, false, 0}}) {
    check_decode<float>(at::kFloat, r.K, r.with_init, r.prefix);
    check_decode<c10::BFloat16>(at::kBFloat16, r.K, r.with_init, r.prefix);
  }
}

}  // namespace
