// The models on the fused attention kernels (GPU only; skipped without one). The fixtures' head
// dims (8, 16) are below the kernels' (64, 128), so the test writes its own small config.json
// (no fixtures needed) and uses random weights: a Llama-shaped model (GQA 8/2) and a
// Mistral-shaped one (sliding window). The bf16 model runs under Impl::kAuto (kernels: flash
// forward/backward, decode) and Impl::kReference (ATen), both against the same weights in fp32;
// the kernels' error must stay within 2x the reference's (plus a small floor for gradients), for
// an unpadded batch forward, packed documents, prefill + cached decoding, and the parameter
// gradients of a training step.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "prism/core/fs.h"
#include "prism/models/causal_lm.h"
#include "prism/ops/attention.h"
#include "util/test_util.h"

using prism::models::CausalLM;
using prism::models::ForwardOptions;


namespace {

struct ModelCase {
  std::string family;  // llama | mistral
  int64_t head_dim;
  int64_t window;  // mistral's sliding_window
};

std::ostream& operator<<(std::ostream& os, const ModelCase& c) { return os << c.family << "_d" << c.head_dim; }

// A small transformers config.json of the family in a fresh directory.
std::string write_config(const ModelCase& c) {
  const std::string dir = prism::test::make_temp_dir("attn_kernels_" + c.family);
  const bool mistral = c.family == "mistral";
  std::ofstream f(dir + "/config.json");
  f << "{\"architectures\": [\"" << (mistral ? "MistralForCausalLM" : "LlamaForCausalLM") << "\"], "
    << "\"model_type\": \"" << c.family << "\", \"vocab_size\": 128, \"hidden_size\": 64, "
    << "\"intermediate_size\": 96, \"num_hidden_layers\": 2, \"num_attention_heads\": 8, "
    << "\"num_key_value_heads\": 2, \"head_dim\": " << c.head_dim << ", \"hidden_act\": \"silu\", "
    << "\"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"max_position_embeddings\": 2048, "
    << "\"tie_word_embeddings\": false"
    << (mistral ? ", \"sliding_window\": " + std::to_string(c.window) : std::string(", \"attention_bias\": false"))
    << "}\n";
  return dir;
}

class AttentionKernelsModelCuda : public ::testing::TestWithParam<ModelCase> {
 protected:
  void SetUp() override {
    if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
#ifndef PRISM_HAS_CUDA_KERNELS
    GTEST_SKIP() << "prism built without CUDA kernels";
#endif
    at::globalContext().setAllowTF32CuBLAS(false);
    const auto& c = GetParam();
    const std::string dir = write_config(c);
    auto cfg = CausalLM::read_config(dir);
    prism::fs::remove_all(dir);
    ASSERT_EQ(cfg.head_dim, c.head_dim);
    prism::models::LoadOptions bo;
    bo.dtype = at::kBFloat16;
    bo.device = "cuda";
    bf16_ = CausalLM::from_config(cfg, bo);
    bf16_->init_weights(1234, 0.08);  // larger than the default 0.02: attention far from uniform
    prism::models::LoadOptions fo;
    fo.device = "cuda";
    f32_ = CausalLM::from_config(cfg, fo);
    const auto& pb = bf16_->named_parameters();
    const auto& pf = f32_->named_parameters();
    ASSERT_EQ(pb.size(), pf.size());
    at::NoGradGuard ng;
    for (size_t i = 0; i < pb.size(); ++i) pf[i].second.copy_(pb[i].second.to(at::kFloat));
  }

  at::Tensor logits(const CausalLM& m, const at::Tensor& ids, ForwardOptions o, prism::ops::Impl impl) {
    o.impl = impl;
    return m.forward(ids, o).logits.to(at::kDouble);
  }

  static void within_budget(const std::string& what, const at::Tensor& got, const at::Tensor& ref, const at::Tensor& truth,
                            double floor = 1e-4) {
    ASSERT_FALSE(got.isnan().any().item<bool>()) << what << ": NaN";
    const double e_got = prism::test::max_abs_diff(got, truth), e_ref = prism::test::max_abs_diff(ref, truth);
    EXPECT_LE(e_got, 2 * e_ref + floor) << what << ": kernels " << e_got << " vs reference " << e_ref;
  }

  std::unique_ptr<CausalLM> bf16_, f32_;
};

using prism::ops::Impl;

TEST_P(AttentionKernelsModelCuda, ForwardPackedAndCachedDecoding) {
  at::manual_seed(1);
  const int64_t V = bf16_->config().vocab_size;
  auto ids = at::randint(V, {2, 150}, at::TensorOptions().dtype(at::kLong).device(at::kCUDA));
  at::NoGradGuard ng;
  within_budget("batch forward", logits(*bf16_, ids, {}, Impl::kAuto), logits(*bf16_, ids, {}, Impl::kReference),
                logits(*f32_, ids, {}, Impl::kReference));

  ForwardOptions po;
  po.cu_seqlens = at::tensor(std::vector<int64_t>{0, 37, 38, 150}, at::kLong);
  auto one = ids.narrow(0, 0, 1);
  within_budget("packed documents", logits(*bf16_, one, po, Impl::kAuto), logits(*bf16_, one, po, Impl::kReference),
                logits(*f32_, one, po, Impl::kReference));

  // Prefill 100 tokens into a cache, then decode one token at a time (the decode kernel).
  auto full32 = logits(*f32_, ids, {}, Impl::kReference);
  std::vector<at::Tensor> cached;  // kAuto, kReference
  for (auto impl : {Impl::kAuto, Impl::kReference}) {
    prism::models::DecodeState state(*bf16_, ids.size(0), 106);
    ForwardOptions co;
    co.state = &state;
    co.impl = impl;
    auto pre = bf16_->forward(ids.narrow(1, 0, 100), co).logits.to(at::kDouble);
    std::vector<at::Tensor> steps{pre.narrow(1, 99, 1)};
    for (int64_t t = 100; t < 106; ++t) steps.push_back(bf16_->forward(ids.narrow(1, t, 1), co).logits.to(at::kDouble));
    cached.push_back(at::cat(steps, 1));  // logits at positions 99..105
  }
  within_budget("prefill + cached decode", cached[0], cached[1], full32.narrow(1, 99, 7));
}

TEST_P(AttentionKernelsModelCuda, TrainingStepGradients) {
  at::manual_seed(2);
  const int64_t V = bf16_->config().vocab_size, L = 130;
  auto ids = at::randint(V, {2, L}, at::TensorOptions().dtype(at::kLong).device(at::kCUDA));
  auto grads = [&](CausalLM& m, Impl impl) {
    for (auto& [n, p] : m.named_parameters()) {
      p.requires_grad_(true);
      p.mutable_grad() = at::Tensor();
    }
    ForwardOptions o;
    o.impl = impl;
    auto lg = m.forward(ids, o).logits.to(at::kFloat);
    auto loss = at::cross_entropy_loss(lg.narrow(1, 0, L - 1).reshape({-1, V}), ids.narrow(1, 1, L - 1).reshape({-1}));
    loss.backward();
    std::vector<at::Tensor> g;
    for (auto& [n, p] : m.named_parameters()) {
      g.push_back(p.grad().defined() ? p.grad().to(at::kDouble) : at::zeros(p.sizes(), p.options().dtype(at::kDouble)));
      p.requires_grad_(false);
    }
    return g;
  };
  auto g_auto = grads(*bf16_, Impl::kAuto);
  auto g_ref = grads(*bf16_, Impl::kReference);
  auto g32 = grads(*f32_, Impl::kReference);
  const auto& names = bf16_->named_parameters();
  for (size_t i = 0; i < g32.size(); ++i)
    within_budget("grad " + names[i].first, g_auto[i], g_ref[i], g32[i], 0.02 * prism::test::max_abs(g32[i]) + 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Families, AttentionKernelsModelCuda,
                         ::testing::Values(ModelCase{"llama", 64, 0}, ModelCase{"llama", 128, 0},
                                           ModelCase{"mistral", 64, 40}),
                         [](const ::testing::TestParamInfo<ModelCase>& i) {
                           return i.param.family + "_d" + std::to_string(i.param.head_dim);
                         });

}  // namespace
