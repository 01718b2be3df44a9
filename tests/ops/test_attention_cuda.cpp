// The fused attention kernels on a GPU (skipped without one; run by tools/gpu-check.sh):
//   - AttentionCudaKernel: the raw kernels over many shapes (head dims 64/128/256, bf16/fp16,
//     causal/non-causal, GQA 1/4/8 and MQA, odd lengths, a single token, Lq != Lk with a cache
//     offset, sliding window, packed documents, head splits) through the same harness as the CPU
//     emulation test: outputs NaN-poisoned, error <= 2x the bf16/fp16 ATen reference's error vs
//     float64, for out, lse, dq, dk, dv;
//   - AttentionCudaDecode: the split-KV decode kernel, with key padding;
//   - AttentionCudaApi: the public entry points: attention() under kAuto picks the kernels (and the
//     autograd Function's gradients meet the same budget), kReference is the reference bit for bit,
//     unsupported calls fall back, odd layouts are accepted, errors name the failed check.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ops/attention_kernel_harness.h"
#include "prism/core/error.h"
#include "prism/ops/attention.h"
#include "util/test_util.h"

namespace ka = prism::kernels::attn;
using prism::ops::AttentionParams;
using prism::test::attn::Case;

namespace {

#ifdef PRISM_HAS_CUDA_KERNELS
// Launches on the legacy default stream (nullptr), which is torch's current stream in this test.
struct CudaBackend : prism::test::attn::Backend {
  int fwd(const ka::FlashFwdParams& p) override { return ka::flash_fwd(p, nullptr); }
  int bwd(const ka::FlashBwdParams& p) override { return ka::flash_bwd(p, nullptr); }
  int decode(const ka::FlashDecodeParams& p) override { return ka::flash_decode(p, nullptr); }
};
#endif

bool have_kernels(std::string* why) {
  if (!at::hasCUDA()) {
    *why = "no CUDA device";
    return false;
  }
#ifndef PRISM_HAS_CUDA_KERNELS
  *why = "prism built without CUDA kernels";
  return false;
#else
  return true;
#endif
}

#define SKIP_WITHOUT_KERNELS()                   \
  do {                                           \
    std::string why_;                            \
    if (!have_kernels(&why_)) GTEST_SKIP() << why_; \
  } while (0)

class AttentionCudaKernel : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionCudaKernel, ForwardBackwardMatchFloat64Reference) {
  SKIP_WITHOUT_KERNELS();
#ifdef PRISM_HAS_CUDA_KERNELS
  CudaBackend be;
  const auto& c = GetParam();
  prism::test::attn::check_forward_backward(be, c, at::Device(at::kCUDA), ka::flash_bwd_supports_head_dim(c.D));
#endif
}

std::vector<Case> kernel_cases() {
  std::vector<Case> v;
  for (auto dt : {at::kBFloat16, at::kHalf}) {
    const std::string s = dt == at::kBFloat16 ? "_bf16" : "_fp16";
    // name, B, Hq, Hkv, Lq, Lk, D, causal, window, q_offset, cu, dtype, splits
    v.push_back({"d64_noncausal" + s, 2, 4, 4, 257, 257, 64, false, 0, 0, {}, dt});
    v.push_back({"d64_causal_gqa4" + s, 2, 8, 2, 1000, 1000, 64, true, 0, 0, {}, dt});
    v.push_back({"d128_causal" + s, 1, 4, 4, 1024, 1024, 128, true, 0, 0, {}, dt});
    v.push_back({"d128_causal_gqa8" + s, 1, 16, 2, 777, 777, 128, true, 0, 0, {}, dt});
    v.push_back({"d128_packed_docs" + s, 1, 4, 2, 1200, 1200, 128, true, 0, 0, {0, 1, 300, 301, 777, 1200}, dt});
    v.push_back({"d256_causal" + s, 1, 2, 2, 513, 513, 256, true, 0, 0, {}, dt});
  }
  v.push_back({"d128_mqa_noncausal_lq_ne_lk", 2, 4, 1, 300, 513, 128, false, 0, 0, {}});
  v.push_back({"d128_window_mqa", 1, 4, 1, 1500, 1500, 128, true, 256, 0, {}});
  v.push_back({"d64_window_noncausal", 1, 4, 4, 600, 600, 64, false, 100, 0, {}});
  v.push_back({"d64_packed_noncausal", 1, 2, 2, 500, 500, 64, false, 0, 0, {0, 100, 450, 500}});
  v.push_back({"d64_packed_many_short_docs_window", 1, 4, 4, 700, 700, 64, true, 20,
               0, {0, 3, 4, 60, 61, 62, 200, 333, 334, 600, 700}});
  v.push_back({"d128_cache_offset", 1, 4, 2, 65, 700, 128, true, 0, 635, {}});
  v.push_back({"d128_one_query_long_cache", 2, 8, 8, 1, 4097, 128, true, 0, 4096, {}});
  v.push_back({"single_token_d64", 1, 1, 1, 1, 1, 64, true, 0, 0, {}});
  v.push_back({"single_token_d128_gqa4", 3, 4, 1, 1, 1, 128, false, 0, 0, {}});
  v.push_back({"d64_gqa8_split4", 1, 8, 1, 300, 300, 64, true, 0, 0, {}, at::kBFloat16, 4});
  v.push_back({"d128_gqa4_split2", 2, 8, 2, 333, 333, 128, true, 0, 0, {}, at::kBFloat16, 2});
  v.push_back({"d256_noncausal_gqa", 2, 4, 2, 100, 300, 256, false, 0, 0, {}});
  v.push_back({"d128_long_causal_4k", 1, 8, 8, 4096, 4096, 128, true, 0, 0, {}});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionCudaKernel, ::testing::ValuesIn(kernel_cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

class AttentionCudaDecode : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionCudaDecode, MatchesFloat64Reference) {
  SKIP_WITHOUT_KERNELS();
#ifdef PRISM_HAS_CUDA_KERNELS
  CudaBackend be;
  prism::test::attn::check_decode(be, GetParam(), at::Device(at::kCUDA));
#endif
}

std::vector<Case> decode_cases() {
  std::vector<Case> v;
  // name, B, Hq, Hkv, Lq, Lk, D, causal, window, q_offset, cu, dtype, kv splits, key_mask
  v.push_back({"d128_gqa4_4k_split8", 2, 32, 8, 1, 4096, 128, true, 0, 4095, {}, at::kBFloat16, 8});
  v.push_back({"d128_gqa4_4k_unsplit_fp16", 1, 32, 8, 1, 4096, 128, true, 0, 4095, {}, at::kHalf, 1});
  v.push_back({"d64_gqa8_4tokens_padded", 3, 16, 2, 4, 1000, 64, true, 0, 996, {}, at::kBFloat16, 4, true});
  v.push_back({"d64_mha_window", 2, 8, 8, 2, 3000, 64, true, 512, 2998, {}, at::kBFloat16, 5});
  v.push_back({"d128_first_token", 4, 8, 2, 1, 1, 128, true, 0, 0, {}});
  v.push_back({"d128_odd_cache_padded", 2, 8, 8, 1, 77, 128, true, 0, 76, {}, at::kBFloat16, 2, true});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionCudaDecode, ::testing::ValuesIn(decode_cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

struct Inputs {
  at::Tensor q, k, v;
};

Inputs make_inputs(int64_t B, int64_t Hq, int64_t Hkv, int64_t Lq, int64_t Lk, int64_t D, at::ScalarType dt) {
  auto o = at::TensorOptions().dtype(at::kDouble).device(at::kCUDA);
  return {at::randn({B, Lq, Hq, D}, o).to(dt).transpose(1, 2), at::randn({B, Lk, Hkv, D}, o).to(dt).transpose(1, 2),
          at::randn({B, Lk, Hkv, D}, o).to(dt).transpose(1, 2)};
}

TEST(AttentionCudaApi, AutoUsesKernelsAndAutogradMeetsTheBudget) {
  SKIP_WITHOUT_KERNELS();
  at::manual_seed(5);
  auto in = make_inputs(2, 8, 2, 300, 300, 128, at::kBFloat16);
  AttentionParams p;
  p.scale = 0.1;
  p.window = 100;
  ASSERT_TRUE(prism::ops::attention_fused_supported(in.q, in.k, in.v, p));
  {
    at::NoGradGuard ng;
    auto a = prism::ops::attention(in.q, in.k, in.v, p);
    auto b = prism::ops::attention_fused_forward(in.q, in.k, in.v, p).out;
    EXPECT_TRUE(at::equal(a, b)) << "kAuto must run the fused forward kernel";
  }
  auto q = in.q.detach().requires_grad_(), k = in.k.detach().requires_grad_(), v = in.v.detach().requires_grad_();
  auto out = prism::ops::attention(q, k, v, p);
  auto w = at::randn(out.sizes(), out.options());
  (out * w).sum().backward();
  auto q64 = in.q.to(at::kDouble).requires_grad_(), k64 = in.k.to(at::kDouble).requires_grad_(),
       v64 = in.v.to(at::kDouble).requires_grad_();
  (prism::ops::attention_ref(q64, k64, v64, p) * w.to(at::kDouble)).sum().backward();
  auto ql = in.q.detach().requires_grad_(), kl = in.k.detach().requires_grad_(), vl = in.v.detach().requires_grad_();
  (prism::ops::attention_ref(ql, kl, vl, p) * w).sum().backward();
  using prism::test::attn::expect_within_budget;
  expect_within_budget("autograd out", out.detach(), prism::ops::attention_ref(in.q, in.k, in.v, p),
                       prism::ops::attention_ref(in.q.to(at::kDouble), in.k.to(at::kDouble), in.v.to(at::kDouble), p));
  expect_within_budget("autograd dq", q.grad(), ql.grad(), q64.grad());
  expect_within_budget("autograd dk", k.grad(), kl.grad(), k64.grad());
  expect_within_budget("autograd dv", v.grad(), vl.grad(), v64.grad());
}

TEST(AttentionCudaApi, ReferenceImplIsTheReference) {
  SKIP_WITHOUT_KERNELS();
  at::manual_seed(6);
  auto in = make_inputs(1, 4, 2, 100, 100, 64, at::kBFloat16);
  AttentionParams p;
  p.scale = 0.125;
  p.impl = prism::ops::Impl::kReference;
  at::NoGradGuard ng;
  EXPECT_TRUE(at::equal(prism::ops::attention(in.q, in.k, in.v, p), prism::ops::attention_ref(in.q, in.k, in.v, p)));
}

TEST(AttentionCudaApi, DecodeThroughAttentionWithKeyPadding) {
  SKIP_WITHOUT_KERNELS();
  at::manual_seed(8);
  auto in = make_inputs(2, 8, 2, 1, 513, 128, at::kBFloat16);
  AttentionParams p;
  p.scale = 0.09;
  p.q_offset = 512;
  auto km = at::ones({2, 513}, at::TensorOptions().dtype(at::kLong).device(at::kCUDA));
  km[1].narrow(0, 0, 20).zero_();
  p.key_mask = km;
  at::NoGradGuard ng;
  ASSERT_TRUE(prism::ops::attention_fused_supported(in.q, in.k, in.v, p));
  auto got = prism::ops::attention(in.q, in.k, in.v, p);
  EXPECT_TRUE(at::equal(got, prism::ops::attention_fused_decode(in.q, in.k, in.v, p)));
  prism::test::attn::expect_within_budget(
      "decode via attention()", got, prism::ops::attention_ref(in.q, in.k, in.v, p),
      prism::ops::attention_ref(in.q.to(at::kDouble), in.k.to(at::kDouble), in.v.to(at::kDouble), p));
}

TEST(AttentionCudaApi, OddLayoutsAreAccepted) {
  SKIP_WITHOUT_KERNELS();
  at::manual_seed(9);
  // K/V as slices of a larger cache buffer at an odd offset (misaligned rows), q contiguous.
  auto o = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  auto q = at::randn({1, 4, 70, 64}, o);
  auto kbuf = at::randn({1, 2, 203, 64}, o), vbuf = at::randn({1, 2, 203, 64}, o);
  auto k = kbuf.view({-1}).narrow(0, 3, 2 * 200 * 64).view({1, 2, 200, 64});
  auto v = vbuf.narrow(2, 1, 200);
  AttentionParams p;
  p.scale = 0.125;
  p.q_offset = 130;
  at::NoGradGuard ng;
  auto got = prism::ops::attention_fused_forward(q, k, v, p).out;
  prism::test::attn::expect_within_budget(
      "odd layouts", got, prism::ops::attention_ref(q, k, v, p),
      prism::ops::attention_ref(q.to(at::kDouble), k.to(at::kDouble), v.to(at::kDouble), p));
}

TEST(AttentionCudaApi, UnsupportedCallsFallBackOrExplain) {
  SKIP_WITHOUT_KERNELS();
  at::manual_seed(10);
  AttentionParams p;
  p.scale = 0.2;
  // fp32, head dim 32, padded prefill: not for the kernels; attention() still matches the reference.
  auto f32 = make_inputs(1, 2, 2, 40, 40, 64, at::kFloat);
  auto d32 = make_inputs(1, 2, 2, 40, 40, 32, at::kBFloat16);
  EXPECT_FALSE(prism::ops::attention_fused_supported(f32.q, f32.k, f32.v, p));
  EXPECT_FALSE(prism::ops::attention_fused_supported(d32.q, d32.k, d32.v, p));
  auto pm = p;
  auto bf = make_inputs(2, 2, 2, 64, 64, 64, at::kBFloat16);
  pm.key_mask = at::ones({2, 64}, at::TensorOptions().dtype(at::kLong).device(at::kCUDA));
  pm.key_mask[0].narrow(0, 0, 5).zero_();
  EXPECT_FALSE(prism::ops::attention_fused_supported(bf.q, bf.k, bf.v, pm)) << "padded prefill is not for the kernels";
  at::NoGradGuard ng;
  EXPECT_TRUE(prism::test::close_rel(prism::ops::attention(d32.q, d32.k, d32.v, p).to(at::kFloat),
                                     prism::ops::attention_ref(d32.q, d32.k, d32.v, p).to(at::kFloat), 2e-2, 0,
                                     "head dim 32 fallback"));
  try {
    prism::ops::attention_fused_forward(f32.q, f32.k, f32.v, p);
    ADD_FAILURE() << "fp32 must be refused";
  } catch (const prism::Error& e) {
    EXPECT_NE(std::string(e.what()).find("dtype"), std::string::npos) << e.what();
  }
  // A window that leaves late query rows without keys stays on the reference (kernels output 0 there).
  auto pw = p;
  pw.window = 4;
  pw.q_offset = 10;
  auto short_k = make_inputs(1, 2, 2, 20, 12, 64, at::kBFloat16);
  EXPECT_FALSE(prism::ops::attention_fused_supported(short_k.q, short_k.k, short_k.v, pw));
}

}  // namespace
