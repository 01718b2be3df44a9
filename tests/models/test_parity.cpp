// Parity with transformers (the oracle): tiny random checkpoints and reference outputs written by
// tests/fixtures/make_fixtures.py. Tolerances from the issue: fp32 logits <= 1e-4 x max|logit|,
// bf16 <= 2e-2, gradients relative <= 1e-4.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>

#include "prism/io/safetensors.h"
#include "prism/models/causal_lm.h"
#include "prism/core/fs.h"
#include "util/test_util.h"

using prism::models::CausalLM;
using prism::models::ForwardOptions;
using prism::test::close_rel;
using prism::test::fixture;

namespace {

struct Ref {
  std::shared_ptr<prism::io::SafetensorsFile> f;
  at::Tensor operator()(const std::string& n) const { return f->get(n).clone(); }
  bool has(const std::string& n) const { return f->contains(n); }
};

Ref load_ref(const std::string& name) { return {prism::io::SafetensorsFile::open(fixture(name + ".ref.safetensors"))}; }

std::unique_ptr<CausalLM> load(const std::string& name, c10::ScalarType dt = at::kFloat) {
  prism::models::LoadOptions lo;
  lo.dtype = dt;
  return CausalLM::from_pretrained(fixture(name), lo);
}

class Parity : public ::testing::TestWithParam<std::string> {};

TEST_P(Parity, LogitsAndHiddenStatesFp32) {
  auto ref = load_ref(GetParam());
  auto model = load(GetParam());
  at::NoGradGuard ng;
  ForwardOptions fo;
  fo.output_hidden_states = true;
  auto out = model->forward(ref("input_ids"), fo);
  ASSERT_EQ(static_cast<int64_t>(out.hidden_states.size()), model->config().num_layers() + 1);
  // Hidden states first: a failure names the first diverging layer.
  for (size_t i = 0; i < out.hidden_states.size(); ++i)
    ASSERT_TRUE(close_rel(out.hidden_states[i], ref("hidden_states." + std::to_string(i)), 1e-4, 0,
                          "hidden_states." + std::to_string(i)));
  EXPECT_TRUE(close_rel(out.logits, ref("logits"), 1e-4, 0, "logits"));
}

TEST_P(Parity, PaddedBatch) {
  auto ref = load_ref(GetParam());
  auto model = load(GetParam());
  at::NoGradGuard ng;
  ForwardOptions fo;
  auto mask = ref("batch.attention_mask");
  fo.attention_mask = mask;
  auto logits = model->forward(ref("batch.input_ids"), fo).logits;
  auto expect = ref("batch.logits");
  // Only real-token positions are defined (HF's values at padding positions are arbitrary).
  auto keep = mask.ne(0).unsqueeze(-1).expand_as(expect);
  EXPECT_TRUE(close_rel(logits.masked_select(keep), expect.masked_select(keep), 1e-4, 0, "batch.logits"));
}

TEST_P(Parity, PackedEqualsSeparateDocuments) {
  auto ref = load_ref(GetParam());
  auto model = load(GetParam());
  at::NoGradGuard ng;
  ForwardOptions fo;
  auto cu = ref("packed.cu_seqlens");
  fo.cu_seqlens = cu;
  auto ids = ref("packed.input_ids");
  auto packed = model->forward(ids, fo).logits;
  EXPECT_TRUE(close_rel(packed, ref("packed.logits"), 1e-4, 0, "packed vs HF separate forwards"));
  // and against prism's own separate forwards
  for (int64_t d = 0; d + 1 < cu.size(0); ++d) {
    int64_t a = cu[d].item<int64_t>(), b = cu[d + 1].item<int64_t>();
    auto sep = model->forward(ids.narrow(1, a, b - a)).logits;
    EXPECT_TRUE(close_rel(packed.narrow(1, a, b - a), sep, 1e-5, 0, "doc " + std::to_string(d)));
  }
}

TEST_P(Parity, CachedDecodingEqualsFullForward) {
  auto ref = load_ref(GetParam());
  auto model = load(GetParam());
  at::NoGradGuard ng;
  auto ids = ref("input_ids");
  auto full = model->forward(ids).logits;
  const int64_t L = ids.size(1), P = 7;
  prism::models::DecodeState state(*model, 1, L);
  ForwardOptions fo;
  fo.state = &state;
  std::vector<at::Tensor> pieces{model->forward(ids.narrow(1, 0, P), fo).logits};
  for (int64_t t = P; t < L; ++t) pieces.push_back(model->forward(ids.narrow(1, t, 1), fo).logits);
  EXPECT_EQ(state.length(0), L);
  EXPECT_TRUE(close_rel(at::cat(pieces, 1), full, 1e-5, 0, "cached vs full"));
}

// Greedy decoding with a DecodeState (prefill of the last position only, then one token per
// step) against transformers' greedy generation.
TEST_P(Parity, GreedyGenerationMatchesTransformers) {
  auto ref = load_ref(GetParam());
  auto model = load(GetParam());
  at::NoGradGuard ng;
  auto prompt = ref("generate.prompt");
  auto expect = ref("generate.output");
  const int64_t new_tokens = expect.size(1) - prompt.size(1);
  prism::models::DecodeState state(*model, 1, expect.size(1));
  ForwardOptions fo;
  fo.state = &state;
  fo.last_logits_only = true;
  std::vector<at::Tensor> pieces{prompt};
  auto next = prompt;
  for (int64_t t = 0; t < new_tokens; ++t) {
    auto logits = model->forward(next, fo).logits;
    ASSERT_EQ(logits.size(1), 1);
    next = logits.select(1, 0).argmax(-1, /*keepdim=*/true);
    pieces.push_back(next);
  }
  auto got = at::cat(pieces, 1);
  EXPECT_TRUE(at::equal(got, expect)) << "prism " << got << "\nHF " << expect;
}

TEST_P(Parity, GradientsOfEveryParameter) {
  auto ref = load_ref(GetParam());
  auto model = load(GetParam());
  for (auto& [n, p] : model->named_parameters()) p.requires_grad_(true);
  auto ids = ref("input_ids");
  auto logits = model->forward(ids).logits;
  const int64_t L = ids.size(1);
  auto loss = at::cross_entropy_loss(logits[0].narrow(0, 0, L - 1), ids[0].narrow(0, 1, L - 1));
  EXPECT_TRUE(close_rel(loss.detach(), ref("loss"), 1e-5, 0, "loss"));
  loss.backward();
  int checked = 0;
  for (auto& [name, p] : model->named_parameters()) {
    // transformers names Nemotron-H's modules "model.*" while its checkpoints say "backbone.*".
    std::string n = name;
    if (!ref.has("grad." + n) && n.rfind("backbone.", 0) == 0) n = "model." + n.substr(9);
    ASSERT_TRUE(ref.has("grad." + n)) << "reference has no gradient for " << name;
    ASSERT_TRUE(p.grad().defined()) << n << " received no gradient";
    EXPECT_TRUE(close_rel(p.grad(), ref("grad." + n), 1e-4, 0, "grad " + n));
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(model->named_parameters().size()));
}

TEST_P(Parity, Bf16Logits) {
  auto ref = load_ref(GetParam());
  auto model = load(GetParam(), at::kBFloat16);
  at::NoGradGuard ng;
  auto logits = model->forward(ref("input_ids")).logits;
  EXPECT_EQ(logits.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(close_rel(logits.to(at::kFloat), ref("bf16.logits"), 2e-2, 0, "bf16 logits vs HF bf16"));
  EXPECT_TRUE(close_rel(logits.to(at::kFloat), ref("logits"), 5e-2, 0, "bf16 logits vs HF fp32"));
}

TEST_P(Parity, SaveAndReloadIsExact) {
  auto model = load(GetParam());
  auto dir = prism::test::make_temp_dir("save");
  auto out = dir + "/ckpt";
  model->save_pretrained(out, 20'000);  // tiny shards: exercises the index
  EXPECT_TRUE(prism::fs::exists(out + "/model.safetensors.index.json"));
  EXPECT_TRUE(prism::fs::exists(out + "/config.json"));
  auto again = CausalLM::from_pretrained(out);
  ASSERT_EQ(again->named_parameters().size(), model->named_parameters().size());
  for (size_t i = 0; i < model->named_parameters().size(); ++i) {
    EXPECT_EQ(again->named_parameters()[i].first, model->named_parameters()[i].first);
    EXPECT_TRUE(at::equal(again->named_parameters()[i].second, model->named_parameters()[i].second));
  }
  for (const auto& n : prism::fs::list_dir(dir)) EXPECT_EQ(n, "ckpt") << "leftover temp output " << n;
  prism::fs::remove_all(dir);
}

// Issue 13 item 16: transformers 5.x never ties Nemotron-H (it keeps lm_head.weight); prism used
// to tie on `tie_word_embeddings: true` and ignore the checkpoint's lm_head, so logits differed.
TEST(NemotronH, TieWordEmbeddingsIsIgnoredAsTransformersDoes) {
  const auto config = nlohmann::json::parse(prism::fs::read_file(fixture("nemotron_h_tied/config.json")));
  ASSERT_TRUE(config.at("tie_word_embeddings").get<bool>()) << "the fixture must set the flag";
  auto model = load("nemotron_h_tied");
  EXPECT_FALSE(model->config().tie_word_embeddings);
  const auto& params = model->named_parameters();
  at::Tensor embed, head;
  for (const auto& [name, t] : params) {
    if (name == "backbone.embeddings.weight") embed = t;
    if (name == "lm_head.weight") head = t;
  }
  ASSERT_TRUE(embed.defined() && head.defined()) << "lm_head.weight must be a parameter of its own";
  EXPECT_FALSE(at::equal(embed, head)) << "the fixture's lm_head must differ from the embedding";
  EXPECT_TRUE(at::equal(model->lm_head_weight(), head));
  auto ref = load_ref("nemotron_h_tied");
  at::NoGradGuard ng;
  EXPECT_TRUE(close_rel(model->forward(ref("input_ids")).logits, ref("logits"), 1e-4, 0, "logits"));
}

// The one family list (tests/util) must be what make_fixtures.py writes.
TEST(FixtureList, MatchesTheGeneratedIndex) {
  const auto index = nlohmann::json::parse(prism::fs::read_file(fixture("index.json")));
  std::vector<std::string> generated = index.at("fixtures").get<std::vector<std::string>>();
  std::vector<std::string> listed = prism::test::model_fixtures();
  std::sort(generated.begin(), generated.end());
  std::sort(listed.begin(), listed.end());
  EXPECT_EQ(listed, generated);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Parity, ::testing::ValuesIn(prism::test::model_fixtures()));

}  // namespace
