// The rollout engine against independent oracles:
//   * transformers' greedy generate (tests/fixtures/generate_fixtures.py -> generate_refs.safetensors):
//     token for token, prompts of different lengths in one batch, dense + hybrid;
//   * the training path: a teacher-forced forward of prompt + completion, packed with cu_seqlens,
//     log_softmax in fp32, gives the engine's per-token log-probs within 1e-5 (fp32);
//   * determinism by construction: the same request alone, among 64, with other slot counts;
//   * stop strings (one token per character, so every stop string spans tokens), n > slots,
//     max_new_tokens 1, a prompt of exactly the context length.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <set>

#include "prism/core/error.h"
#include "prism/generate/engine.h"
#include "prism/io/safetensors.h"
#include "prism/io/tokenizer.h"
#include "prism/models/causal_lm.h"
#include "util/test_util.h"

using prism::generate::Engine;
using prism::generate::EngineOptions;
using prism::generate::FinishReason;
using prism::generate::Request;
using prism::generate::Sample;
using prism::models::CausalLM;
using prism::test::fixture;

namespace {

std::unique_ptr<CausalLM> load(const std::string& name, c10::ScalarType dt = at::kFloat) {
  prism::models::LoadOptions lo;
  lo.dtype = dt;
  return CausalLM::from_pretrained(fixture(name), lo);
}

std::vector<int64_t> to_vec(const at::Tensor& t) {
  auto c = t.to(at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

std::vector<int64_t> random_prompt(int64_t len, int64_t vocab, uint64_t seed) {
  std::vector<int64_t> p(len);
  for (int64_t i = 0; i < len; ++i) p[i] = 3 + static_cast<int64_t>((seed * 2654435761ULL + i * 40503ULL) % (vocab - 3));
  return p;
}

class EngineFamilies : public ::testing::TestWithParam<std::string> {};

TEST_P(EngineFamilies, GreedyEqualsTransformersWithRaggedPromptsInOneBatch) {
  auto m = load(GetParam());
  auto ref = prism::io::SafetensorsFile::open(fixture("generate_refs.safetensors"));
  std::vector<Request> reqs;
  for (int i = 0; ref->contains(GetParam() + ".prompt." + std::to_string(i)); ++i) {
    Request r;
    r.prompt = to_vec(ref->get(GetParam() + ".prompt." + std::to_string(i)));
    r.params.temperature = 0.0;
    r.params.max_new_tokens = 12;
    reqs.push_back(r);
  }
  ASSERT_GE(reqs.size(), 3u);
  EngineOptions eo;
  eo.slots = static_cast<int64_t>(reqs.size());  // every prompt decodes in the same batch
  Engine engine(*m, eo);
  auto out = engine.generate(reqs);
  ASSERT_EQ(out.size(), reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    const auto want = to_vec(ref->get(GetParam() + ".greedy." + std::to_string(i)));
    EXPECT_EQ(out[i].tokens, want) << "prompt " << i << " (" << reqs[i].prompt.size() << " tokens)";
    const bool hit_eos = !want.empty() && want.back() == 2;
    EXPECT_EQ(out[i].finish_reason, hit_eos ? FinishReason::kStop : FinishReason::kLength);
    auto lp = ref->get(GetParam() + ".logprobs." + std::to_string(i));
    ASSERT_EQ(static_cast<int64_t>(out[i].logprobs.size()), lp.numel());
    for (int64_t t = 0; t < lp.numel(); ++t) {
      EXPECT_NEAR(out[i].logprobs[t], lp[t].item<float>(), 1e-4) << "prompt " << i << " token " << t;
      EXPECT_EQ(out[i].sampling_logprobs[t], 0.0f);  // greedy: a point mass
    }
    EXPECT_EQ(out[i].prompt_length, static_cast<int64_t>(reqs[i].prompt.size()));
    EXPECT_EQ(out[i].completion_length, static_cast<int64_t>(want.size()));
  }
  EXPECT_EQ(engine.stats().generated_tokens, [&] {
    int64_t n = 0;
    for (const auto& s : out) n += s.completion_length;
    return n;
  }());
}

// Sampled completions: the engine's log-probs are the trainer's (packed teacher-forced forward).
TEST_P(EngineFamilies, LogprobsEqualTeacherForcedPackedForward) {
  auto m = load(GetParam());
  const int64_t V = m->config().vocab_size;
  std::vector<Request> reqs;
  for (int i = 0; i < 3; ++i) {
    Request r;
    r.prompt = random_prompt(4 + 3 * i, V, 17 + i);
    r.params.n = 3;
    r.params.temperature = 0.9;
    r.params.top_p = 0.95;
    r.params.max_new_tokens = 10;
    r.params.seed = 5 + i;
    reqs.push_back(r);
  }
  EngineOptions eo;
  eo.slots = 4;
  auto out = Engine(*m, eo).generate(reqs);
  ASSERT_EQ(out.size(), 9u);
  std::vector<int64_t> packed, cu{0};
  for (const auto& s : out) {
    const auto& p = reqs[s.request].prompt;
    packed.insert(packed.end(), p.begin(), p.end());
    packed.insert(packed.end(), s.tokens.begin(), s.tokens.end());
    cu.push_back(static_cast<int64_t>(packed.size()));
  }
  at::NoGradGuard ng;
  prism::models::ForwardOptions fo;
  fo.cu_seqlens = at::tensor(cu, at::kLong);
  auto logits = m->forward(at::tensor(packed, at::kLong).view({1, -1}), fo).logits[0];
  auto lsm = at::log_softmax(logits.to(at::kFloat), -1);
  double worst = 0;
  for (size_t k = 0; k < out.size(); ++k) {
    const auto& s = out[k];
    const int64_t start = cu[k] + s.prompt_length;  // first completion token
    for (size_t t = 0; t < s.tokens.size(); ++t) {
      const double want = lsm[start + static_cast<int64_t>(t) - 1][s.tokens[t]].item<double>();
      worst = std::max(worst, std::abs(want - s.logprobs[t]));
      // the sampling distribution only removes mass: its log-prob is >= the raw tempered one
      EXPECT_LE(s.sampling_logprobs[t], 0.0f);
    }
  }
  EXPECT_LE(worst, 1e-5) << "max |engine log-prob - teacher-forced log-prob|";
}

TEST_P(EngineFamilies, DeterministicAloneInABatchAndAcrossSlotCounts) {
  auto m = load(GetParam());
  const int64_t V = m->config().vocab_size;
  Request probe;
  probe.prompt = random_prompt(6, V, 99);
  probe.params.n = 2;
  probe.params.temperature = 1.0;
  probe.params.top_k = 20;
  probe.params.max_new_tokens = 12;
  probe.params.seed = 31337;
  auto tokens_of = [](const std::vector<Sample>& out, int64_t req) {
    std::vector<std::vector<int64_t>> t;
    for (const auto& s : out)
      if (s.request == req) t.push_back(s.tokens);
    return t;
  };
  EngineOptions one;
  one.slots = 1;
  const auto alone = tokens_of(Engine(*m, one).generate({probe}), 0);
  std::vector<Request> crowd;
  for (int i = 0; i < 63; ++i) {
    Request r;
    r.prompt = random_prompt(1 + i % 13, V, 1000 + i);
    r.params.temperature = 0.5 + 0.05 * (i % 10);
    r.params.top_p = i % 3 ? 1.0 : 0.8;
    r.params.min_p = i % 4 ? 0.0 : 0.05;
    r.params.max_new_tokens = 1 + i % 12;
    r.params.seed = i;
    crowd.push_back(r);
  }
  crowd.insert(crowd.begin() + 30, probe);  // request 30 of 64
  for (int64_t slots : {64, 5}) {
    EngineOptions eo;
    eo.slots = slots;
    EXPECT_EQ(tokens_of(Engine(*m, eo).generate(crowd), 30), alone) << slots << " slots";
  }
}

TEST_P(EngineFamilies, MoreSamplesThanSlotsAndOneTokenCompletions) {
  auto m = load(GetParam());
  Request r;
  r.prompt = random_prompt(5, m->config().vocab_size, 3);
  r.params.n = 10;
  r.params.max_new_tokens = 6;
  r.params.stop_token_ids = std::vector<int64_t>{};  // no EOS: every sample runs to the limit
  r.params.temperature = 3.0;  // flat: the fixtures' next-token distributions can be peaked
  r.params.seed = 8;
  EngineOptions eo;
  eo.slots = 3;
  Engine engine(*m, eo);
  auto out = engine.generate({r});
  ASSERT_EQ(out.size(), 10u);
  for (int64_t i = 0; i < 10; ++i) {
    EXPECT_EQ(out[i].index, i);
    EXPECT_EQ(out[i].tokens.size(), 6u);
    EXPECT_EQ(out[i].finish_reason, FinishReason::kLength);
  }
  EXPECT_EQ(engine.stats().prompt_tokens, 5) << "the prompt is prefilled once for all 10 samples";
  eo.slots = 16;
  auto wide = Engine(*m, eo).generate({r});
  for (int64_t i = 0; i < 10; ++i) EXPECT_EQ(out[i].tokens, wide[i].tokens) << "sample " << i;
  std::set<std::vector<int64_t>> distinct;
  for (const auto& s : out) distinct.insert(s.tokens);
  EXPECT_GT(distinct.size(), 5u) << "samples of one request must draw independent streams; sample 0: "
                                 << at::tensor(out[0].tokens) << " sample 1: " << at::tensor(out[1].tokens);

  r.params.max_new_tokens = 1;
  auto single = engine.generate({r});
  for (const auto& s : single) {
    EXPECT_EQ(s.tokens.size(), 1u);
    EXPECT_EQ(s.finish_reason, FinishReason::kLength);
    EXPECT_EQ(s.tokens[0], out[s.index].tokens[0]) << "the first draw of a stream does not depend on the limit";
  }
}

// The decode weight copies are taken from the live parameters at every generate() call: after an
// in-place update (what an optimizer step does) the same engine samples what a fresh engine without
// copies samples from the updated model. A stale copy would keep the old model's tokens.
TEST_P(EngineFamilies, DecodeWeightsFollowInPlaceParameterUpdates) {
  auto m = load(GetParam());
  const int64_t V = m->config().vocab_size;
  std::vector<Request> reqs;
  for (int i = 0; i < 3; ++i) {
    Request r;
    r.prompt = random_prompt(3 + 2 * i, V, 40 + i);
    r.params.n = 2;
    r.params.temperature = 1.0;
    r.params.max_new_tokens = 10;
    r.params.stop_token_ids = std::vector<int64_t>{};
    r.params.seed = 9 + i;
    reqs.push_back(r);
  }
  EngineOptions on, off;
  on.slots = off.slots = 4;
  on.decode_weights = true;
  off.decode_weights = false;
  Engine engine(*m, on);
  const auto before = engine.generate(reqs);
  // Expected copy size, counted here from the parameters: every 2-D matrix + the lm_head (counted
  // once when it is the tied embedding).
  int64_t want_bytes = 0;
  const auto& named = m->named_parameters();
  const auto& kinds = m->parameter_kinds();
  for (size_t i = 0; i < named.size(); ++i)
    if ((kinds[i] == prism::models::ParameterKind::kMatrix || kinds[i] == prism::models::ParameterKind::kLmHead) &&
        named[i].second.dim() == 2)
      want_bytes += named[i].second.nbytes();
  if (m->config().tie_word_embeddings) want_bytes += m->lm_head_weight().nbytes();
  EXPECT_EQ(engine.stats().weight_copy_bytes, want_bytes);
  EXPECT_GT(engine.stats().weight_copy_seconds, 0.0);
  {
    at::NoGradGuard ng;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
    for (const auto& [name, p] : named)
      if (p.dim() == 2) p.add_(at::randn(p.sizes(), gen, p.options()) * 0.5 * p.std());
  }
  const auto after = engine.generate(reqs);
  Engine plain(*m, off);
  const auto want = plain.generate(reqs);
  EXPECT_EQ(plain.stats().weight_copy_bytes, 0);
  ASSERT_EQ(after.size(), want.size());
  int changed = 0;
  for (size_t k = 0; k < want.size(); ++k) {
    EXPECT_EQ(after[k].tokens, want[k].tokens) << "sample " << k;
    changed += after[k].tokens != before[k].tokens;
    for (size_t t = 0; t < std::min(after[k].logprobs.size(), want[k].logprobs.size()); ++t)
      EXPECT_NEAR(after[k].logprobs[t], want[k].logprobs[t], 1e-5) << "sample " << k << " token " << t;
  }
  EXPECT_GT(changed, 0) << "the update must change some samples, or this test cannot see a stale copy";
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EngineFamilies, ::testing::Values("llama", "mistral", "granite4_hybrid", "bamba"));

TEST(Engine, StopStringsSpanningTokens) {
  auto m = load("llama");
  auto tok = prism::io::Tokenizer::from_file(fixture("tok_ascii128/tokenizer.json"));
  Request r;
  r.prompt = random_prompt(5, 128, 11);
  r.params.temperature = 1.0;
  r.params.max_new_tokens = 24;
  r.params.stop_token_ids = std::vector<int64_t>{};
  Engine engine(*m, {}, tok.get());
  const auto base = engine.generate({r}).at(0);
  ASSERT_EQ(base.tokens.size(), 24u);
  ASSERT_EQ(base.text.size(), 24u) << "one character per token";
  // A 3-character stop string taken from the middle of the completion: tokens 9..11.
  const std::string stop = base.text.substr(9, 3);
  const size_t first = base.text.find(stop);
  r.params.stop = {"zzzz-not-there", stop};
  const auto cut = engine.generate({r}).at(0);
  EXPECT_EQ(cut.finish_reason, FinishReason::kStop);
  EXPECT_EQ(cut.stop_reason, stop);
  EXPECT_EQ(cut.text, base.text.substr(0, first)) << "text ends before the stop string";
  ASSERT_EQ(cut.tokens.size(), first + 3) << "tokens end with the one that completed the stop string";
  EXPECT_TRUE(std::equal(cut.tokens.begin(), cut.tokens.end(), base.tokens.begin()));
  EXPECT_EQ(cut.logprobs.size(), cut.tokens.size());

  // A stop token ends the sample; it is in the ids, not in the text.
  r.params.stop.clear();
  r.params.stop_token_ids = std::vector<int64_t>{base.tokens[5]};
  const auto by_token = engine.generate({r}).at(0);
  const size_t at = std::find(base.tokens.begin(), base.tokens.end(), base.tokens[5]) - base.tokens.begin();
  EXPECT_EQ(by_token.finish_reason, FinishReason::kStop);
  EXPECT_EQ(by_token.tokens.size(), at + 1);
  EXPECT_EQ(by_token.text, base.text.substr(0, at));
}

TEST(Engine, DefaultStopIsTheCheckpointEos) {
  auto m = load("llama");
  EXPECT_EQ(m->config().eos_token_ids, (std::vector<int64_t>{2}));
  Engine engine(*m);
  EXPECT_EQ(engine.default_stop_token_ids(), (std::vector<int64_t>{2}));
  // Flat sampling makes EOS (id 2) come up; every sample that draws it ends there.
  Request r;
  r.prompt = random_prompt(4, 128, 5);
  r.params.n = 64;
  r.params.temperature = 3.0;  // flat enough that id 2 shows up within 30 tokens
  r.params.max_new_tokens = 30;
  int stopped = 0;
  for (const auto& s : engine.generate({r})) {
    const auto it = std::find(s.tokens.begin(), s.tokens.end(), int64_t{2});
    if (it != s.tokens.end()) {
      ++stopped;
      EXPECT_EQ(it + 1, s.tokens.end()) << "nothing is generated after EOS";
      EXPECT_EQ(s.finish_reason, FinishReason::kStop);
      EXPECT_EQ(s.stop_reason, "2");
    } else {
      EXPECT_EQ(s.finish_reason, FinishReason::kLength);
    }
  }
  EXPECT_GT(stopped, 0);
}

TEST(Engine, BadRequestsAreRefusedBeforeAnythingRuns) {
  auto m = load("llama");
  Engine engine(*m);
  auto err = [&](const Request& r) {
    try {
      engine.generate({Request{{5}, {}}, r});
    } catch (const prism::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  Request r;
  r.prompt.assign(m->config().max_position_embeddings, 5);  // exactly the context length
  auto e = err(r);
  EXPECT_NE(e.find("request 1 prompt"), std::string::npos) << e;
  EXPECT_NE(e.find("no room"), std::string::npos) << e;
  r.prompt = {5, 128};
  e = err(r);
  EXPECT_NE(e.find("request 1 prompt[1]"), std::string::npos) << e;
  r.prompt = {};
  EXPECT_NE(err(r).find("empty"), std::string::npos);
  r.prompt = {5};
  r.params.stop = {"x"};
  EXPECT_NE(err(r).find("tokenizer"), std::string::npos);
  r.params.stop.clear();
  r.params.top_p = 0.0;
  EXPECT_NE(err(r).find("top_p"), std::string::npos);
}

TEST(Engine, MemoryIsAllocatedUpFrontAndReported) {
  auto m = load("granite4_hybrid");
  EngineOptions eo;
  eo.slots = 5;
  eo.max_length = 40;
  Engine engine(*m, eo);
  Request r;
  r.prompt = random_prompt(7, 128, 1);
  r.params.n = 4;
  r.params.max_new_tokens = 10;
  engine.generate({r});
  prism::models::DecodeState one(*m, 1, 40);
  EXPECT_EQ(engine.stats().state_bytes, one.bytes() * (5 + 1)) << "5 slots + the prefix row";
  EXPECT_EQ(engine.stats().max_length, 40);
  r.params.max_new_tokens = 100;  // capped by max_length: 40 - 7 = 33 tokens
  r.params.stop_token_ids = std::vector<int64_t>{};
  for (const auto& s : engine.generate({r})) EXPECT_EQ(s.completion_length, 33);
}

TEST(Engine, Bf16ModelSamplesWithFp32Logprobs) {
  auto m = load("granite4_hybrid", at::kBFloat16);
  Request r;
  r.prompt = random_prompt(6, 128, 2);
  r.params.n = 4;
  r.params.max_new_tokens = 8;
  auto out = Engine(*m).generate({r});
  std::vector<int64_t> packed, cu{0};
  for (const auto& s : out) {
    packed.insert(packed.end(), r.prompt.begin(), r.prompt.end());
    packed.insert(packed.end(), s.tokens.begin(), s.tokens.end());
    cu.push_back(static_cast<int64_t>(packed.size()));
  }
  at::NoGradGuard ng;
  prism::models::ForwardOptions fo;
  fo.cu_seqlens = at::tensor(cu, at::kLong);
  auto lsm = at::log_softmax(m->forward(at::tensor(packed, at::kLong).view({1, -1}), fo).logits[0].to(at::kFloat), -1);
  for (size_t k = 0; k < out.size(); ++k)
    for (size_t t = 0; t < out[k].tokens.size(); ++t)
      EXPECT_NEAR(out[k].logprobs[t], lsm[cu[k] + 6 + static_cast<int64_t>(t) - 1][out[k].tokens[t]].item<float>(), 1e-1)
          << "sample " << k << " token " << t;  // bf16: both paths round logits to bf16
}

}  // namespace
