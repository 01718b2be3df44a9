// The same transformers parity checks on CUDA (fp32 with TF32 off, and bf16). Skipped on machines
// without a GPU; run on the GPU machine with `ctest -R Cuda` (or the test binary directly).
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include "prism/io/safetensors.h"
#include "prism/models/causal_lm.h"
#include "util/test_util.h"

using prism::models::CausalLM;
using prism::test::close_rel;
using prism::test::fixture;

namespace {

class CudaParity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
    // fp32 parity needs true fp32 GEMMs.
    at::globalContext().setAllowTF32CuBLAS(false);
    at::globalContext().setAllowTF32CuDNN(false);
  }
};

TEST_P(CudaParity, ForwardPackedCachedAndGradients) {
  auto ref = prism::io::SafetensorsFile::open(fixture(GetParam() + ".ref.safetensors"));
  auto get = [&](const std::string& n) { return ref->get(n).clone().cuda(); };
  prism::models::LoadOptions lo;
  lo.device = "cuda";
  auto model = CausalLM::from_pretrained(fixture(GetParam()), lo);
  {
    at::NoGradGuard ng;
    prism::models::ForwardOptions fo;
    fo.output_hidden_states = true;
    auto out = model->forward(get("input_ids"), fo);
    EXPECT_TRUE(out.logits.is_cuda());
    for (size_t i = 0; i < out.hidden_states.size(); ++i)
      ASSERT_TRUE(close_rel(out.hidden_states[i].cpu(), ref->get("hidden_states." + std::to_string(i)), 1e-4, 0,
                            "hidden_states." + std::to_string(i)));
    EXPECT_TRUE(close_rel(out.logits.cpu(), ref->get("logits"), 1e-4, 0, "cuda logits"));
    prism::models::ForwardOptions po;
    po.cu_seqlens = get("packed.cu_seqlens");
    EXPECT_TRUE(close_rel(model->forward(get("packed.input_ids"), po).logits.cpu(), ref->get("packed.logits"), 1e-4, 0,
                          "cuda packed"));
    prism::models::ForwardOptions bo;
    auto mask = get("batch.attention_mask");
    bo.attention_mask = mask;
    auto bl = model->forward(get("batch.input_ids"), bo).logits.cpu();
    auto keep = mask.cpu().ne(0).unsqueeze(-1).expand_as(bl);
    EXPECT_TRUE(close_rel(bl.masked_select(keep), ref->get("batch.logits").masked_select(keep), 1e-4, 0, "cuda batch"));
    // Greedy decoding through a DecodeState (prefill, then the decode kernels one token at a time).
    auto prompt = get("generate.prompt");
    prism::models::DecodeState state(*model, 1, prompt.size(1) + 10);
    prism::models::ForwardOptions go;
    go.state = &state;
    go.last_logits_only = true;
    std::vector<at::Tensor> pieces{prompt};
    for (int t = 0; t < 10; ++t) pieces.push_back(model->forward(pieces.back(), go).logits.select(1, 0).argmax(-1, true));
    auto out_ids = at::cat(pieces, 1).cpu();
    EXPECT_TRUE(at::equal(out_ids, ref->get("generate.output"))) << "cuda greedy generation";
  }
  for (auto& [n, p] : model->named_parameters()) p.requires_grad_(true);
  auto ids = get("input_ids");
  const int64_t L = ids.size(1);
  auto logits = model->forward(ids).logits;
  auto loss = at::cross_entropy_loss(logits[0].narrow(0, 0, L - 1), ids[0].narrow(0, 1, L - 1));
  loss.backward();
  for (auto& [name, p] : model->named_parameters()) {
    std::string n = name;
    if (!ref->contains("grad." + n) && n.rfind("backbone.", 0) == 0) n = "model." + n.substr(9);
    ASSERT_TRUE(p.grad().defined()) << name;
    EXPECT_TRUE(close_rel(p.grad().cpu(), ref->get("grad." + n), 1e-4, 0, "cuda grad " + name));
  }
}

TEST_P(CudaParity, Bf16) {
  auto ref = prism::io::SafetensorsFile::open(fixture(GetParam() + ".ref.safetensors"));
  prism::models::LoadOptions lo;
  lo.device = "cuda";
  lo.dtype = at::kBFloat16;
  auto model = CausalLM::from_pretrained(fixture(GetParam()), lo);
  at::NoGradGuard ng;
  auto logits = model->forward(ref->get("input_ids").cuda()).logits.to(at::kFloat).cpu();
  EXPECT_TRUE(close_rel(logits, ref->get("bf16.logits"), 2e-2, 0, "cuda bf16 logits"));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaParity, ::testing::ValuesIn(prism::test::model_fixtures()));

}  // namespace
