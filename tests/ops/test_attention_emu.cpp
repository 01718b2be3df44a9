// The attention kernels (kernels/attention) run on the CPU through the host emulation
// (kernels/attention/flash_emu.h: a fiber per CUDA thread, mma/ldmatrix evaluated from the PTX
// fragment tables, cp.async landing only at its wait), against the float64 ATen reference. The
// kernel code is the GPU build's, so this checks fragment layouts, masks (causal + offset,
// window, packed documents), GQA indexing, tiling edges, the online softmax, the backward's
// dS/dQ/dK/dV algebra, the GQA head splits and the decode split combine on every build machine
// (CPU label). Shapes are small because the emulation is slow; the GPU test
// (test_attention_cuda.cpp) runs the same harness on large ones.
#define PRISM_FLASH_EMULATE 1

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <vector>

#include "../../kernels/attention/flash_run.cuh"
#include "ops/attention_kernel_harness.h"

namespace ka = prism::kernels::attn;
using prism::test::attn::Case;

namespace {

struct EmuLauncher {
  template <class K, class P>
  int go(const P& p, int gx, int gy, int gz) const {
    ka::emu_launch<K>(gx, gy, gz, p);
    return 0;
  }
};

// Every tensor a launch may touch is registered, so an out-of-bounds access aborts.
struct EmuBackend : prism::test::attn::Backend {
  ~EmuBackend() override { ka::emu::clear_globals(); }
  void prepare(const std::vector<at::Tensor>& ts) override {
    ka::emu::clear_globals();
    for (const auto& t : ts)
      if (t.defined()) ka::emu::register_global(t.storage().data(), t.storage().nbytes());
  }
  template <class F>
  static int by_dtype(prism::kernels::DType dt, F&& f) {
    return dt == prism::kernels::DType::kBFloat16 ? f(ka::Bf16{}) : f(ka::Fp16{});
  }
  int fwd(const ka::FlashFwdParams& p) override {
    return by_dtype(p.dtype, [&](auto t) { return ka::run_flash_fwd<decltype(t)>(p, EmuLauncher{}); });
  }
  int bwd(const ka::FlashBwdParams& p) override {
    return by_dtype(p.dtype, [&](auto t) { return ka::run_flash_bwd<decltype(t)>(p, EmuLauncher{}); });
  }
  int decode(const ka::FlashDecodeParams& p) override {
    return by_dtype(p.dtype, [&](auto t) { return ka::run_flash_decode<decltype(t)>(p, EmuLauncher{}); });
  }
};

class AttentionKernelEmu : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionKernelEmu, ForwardBackwardMatchFloat64Reference) {
  EmuBackend be;
  prism::test::attn::check_forward_backward(be, GetParam(), at::kCPU, /*with_backward=*/GetParam().D <= 128);
}

std::vector<Case> cases() {
  std::vector<Case> v;
  // name, B, Hq, Hkv, Lq, Lk, D, causal, window, q_offset, cu, dtype, splits
  v.push_back({"noncausal_odd_lengths", 2, 2, 2, 37, 53, 64, false, 0, 0, {}});
  v.push_back({"causal_gqa2_two_query_blocks_split2", 1, 4, 2, 150, 150, 64, true, 0, 0, {}, at::kBFloat16, 2});
  v.push_back({"causal_mqa_offset", 1, 4, 1, 20, 90, 64, true, 0, 70, {}});
  v.push_back({"window_causal", 1, 2, 1, 200, 200, 64, true, 37, 0, {}});
  v.push_back({"window_noncausal", 1, 2, 2, 70, 70, 64, false, 9, 0, {}});
  v.push_back({"packed_docs_causal", 1, 2, 2, 190, 190, 64, true, 0, 0, {0, 5, 70, 71, 190}});
  v.push_back({"packed_docs_noncausal", 1, 2, 1, 100, 100, 64, false, 0, 0, {0, 30, 31, 100}});
  v.push_back({"single_token", 1, 1, 1, 1, 1, 64, true, 0, 0, {}});
  v.push_back({"gqa8_split4", 1, 8, 1, 40, 40, 64, true, 0, 0, {}, at::kBFloat16, 4});
  v.push_back({"batch2_gqa4_split2_multi_tile", 2, 4, 1, 150, 150, 64, true, 0, 0, {}, at::kBFloat16, 2});
  v.push_back({"d128_fp16_causal", 1, 2, 2, 80, 80, 128, true, 0, 0, {}, at::kHalf});
  v.push_back({"d128_bf16_noncausal_gqa", 1, 2, 1, 33, 70, 128, false, 0, 0, {}});
  v.push_back({"d128_causal_three_query_blocks", 1, 1, 1, 300, 300, 128, true, 0, 0, {}});
  v.push_back({"d256_forward_only", 1, 1, 1, 40, 45, 256, true, 0, 5, {}});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionKernelEmu, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

class AttentionDecodeEmu : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionDecodeEmu, MatchesFloat64Reference) {
  EmuBackend be;
  prism::test::attn::check_decode(be, GetParam(), at::kCPU);
}

std::vector<Case> decode_cases() {
  std::vector<Case> v;
  // name, B, Hq, Hkv, Lq, Lk, D, causal, window, q_offset, cu, dtype, kv splits, key_mask
  v.push_back({"one_token_gqa4_split3", 1, 8, 2, 1, 300, 64, true, 0, 299, {}, at::kBFloat16, 3});
  v.push_back({"three_tokens_d128_padded_split2", 2, 4, 4, 3, 150, 128, true, 0, 147, {}, at::kBFloat16, 2, true});
  v.push_back({"two_tokens_window_fp16", 1, 4, 1, 2, 200, 64, true, 50, 198, {}, at::kHalf, 1});
  v.push_back({"mqa_rows32_noncausal", 1, 16, 1, 2, 70, 64, false, 0, 0, {}, at::kBFloat16, 1});
  v.push_back({"long_cache_unsplit", 1, 4, 4, 1, 520, 64, true, 0, 519, {}, at::kBFloat16, 1});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionDecodeEmu, ::testing::ValuesIn(decode_cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

}  // namespace
