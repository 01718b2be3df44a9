// Shaping: format gate cases, n-gram repetition fractions and DAPO's overlong penalty against
// values computed by hand here, and how they combine with the scale.
#include <gtest/gtest.h>

#include <memory>

#include "prism/core/error.h"
#include "prism/rewards/shaping.h"

namespace {

using namespace prism::rewards;

TEST(Shaping, FormatGate) {
  EXPECT_TRUE(passes_format_gate("<think>reasoning</think> The answer is 5."));
  EXPECT_TRUE(passes_format_gate("  <think>\nr\n</think>\n\\boxed{5}"));
  EXPECT_TRUE(passes_format_gate("reasoning (the prompt ended with the opening tag)</think>\\boxed{5}"));
  EXPECT_FALSE(passes_format_gate("The answer is 5."));               // no think block
  EXPECT_FALSE(passes_format_gate("<think>reasoning</think>   \n"));  // no answer after it
  EXPECT_FALSE(passes_format_gate("<think>a</think>b</think>c"));     // two closings
  EXPECT_FALSE(passes_format_gate("preamble <think>a</think> 5"));    // text before <think>
  EXPECT_FALSE(passes_format_gate("</think> x <think> y"));           // opening after closing
  EXPECT_FALSE(passes_format_gate("<think>a<think>b</think> 5"));     // nested opening
}

TEST(Shaping, RepeatedNgramFraction) {
  EXPECT_DOUBLE_EQ(repeated_ngram_fraction("a b c d e", 2), 0.0);
  // bigrams of "a b a b a b": ab ba ab ba ab -> 5, repeats 3
  EXPECT_DOUBLE_EQ(repeated_ngram_fraction("a b a b a b", 2), 3.0 / 5.0);
  EXPECT_DOUBLE_EQ(repeated_ngram_fraction("x x x x", 1), 3.0 / 4.0);
  EXPECT_DOUBLE_EQ(repeated_ngram_fraction("too short", 4), 0.0);
  EXPECT_THROW(repeated_ngram_fraction("a", 0), prism::Error);
}

TEST(Shaping, OverlongPenaltyIsDapos) {
  // L_max 100, L_cache 20: 0 up to 80, (80 - L)/20 in (80, 100], -1 beyond.
  EXPECT_DOUBLE_EQ(overlong_penalty(50, 100, 20, 1.0), 0.0);
  EXPECT_DOUBLE_EQ(overlong_penalty(80, 100, 20, 1.0), 0.0);
  EXPECT_DOUBLE_EQ(overlong_penalty(90, 100, 20, 1.0), -0.5);
  EXPECT_DOUBLE_EQ(overlong_penalty(100, 100, 20, 1.0), -1.0);
  EXPECT_DOUBLE_EQ(overlong_penalty(150, 100, 20, 1.0), -1.0);
  EXPECT_DOUBLE_EQ(overlong_penalty(95, 100, 20, 2.0), -1.5);
  EXPECT_DOUBLE_EQ(overlong_penalty(10000, 0, 0, 1.0), 0.0);  // off
}

// A verifier with a fixed verdict, to test the wrapper alone.
class Fixed : public Verifier {
 public:
  explicit Fixed(bool ok) : ok_(ok) {}
  std::string name() const override { return "fixed"; }
  Verdict verify(const Sample&) override {
    Verdict v;
    v.correct = ok_;
    v.reward = ok_ ? 1.0 : 0.0;
    v.reason = ok_ ? "equal" : "not_equal";
    return v;
  }

 private:
  bool ok_;
};

TEST(Shaping, Combination) {
  ShapingOptions o;
  o.format_gate = true;
  o.scale = 10.0;
  o.stop_token_penalty = 1.0;
  o.repetition_penalty = 2.0;
  o.repetition_ngram = 1;
  o.repetition_threshold = 0.5;
  o.overlong_max_tokens = 100;
  o.overlong_buffer_tokens = 20;
  ShapedVerifier good(std::make_shared<Fixed>(true), o);
  Sample s;
  s.completion = "<think>a b c</think> d";
  EXPECT_DOUBLE_EQ(good.verify(s).reward, 10.0);
  s.truncated = true;
  EXPECT_DOUBLE_EQ(good.verify(s).reward, 9.0);
  s.metadata[kCompletionTokensKey] = "90";
  EXPECT_DOUBLE_EQ(good.verify(s).reward, 8.5);
  // unigram repeats of "<think>x x x x</think> x": words "<think>x","x","x","x</think>","x" -> 2 of 5 repeat
  s.completion = "<think>x x x x</think> x";
  EXPECT_DOUBLE_EQ(good.verify(s).reward, 8.5);   // 0.4 <= threshold 0.5: no penalty
  s.completion = "<think>x x x x x x</think> x";  // 4 of 7 repeat
  EXPECT_DOUBLE_EQ(good.verify(s).reward, 8.5 - 2.0 * 4.0 / 7.0);
  s.completion = "no think block";
  auto v = good.verify(s);
  EXPECT_DOUBLE_EQ(v.reward, 0.0);
  EXPECT_TRUE(v.correct);  // the raw verdict is kept for accuracy metrics
  EXPECT_EQ(v.reason, "format: equal");
  ShapedVerifier bad(std::make_shared<Fixed>(false), o);
  s = Sample{};
  s.completion = "<think>a</think> b";
  s.truncated = true;
  EXPECT_DOUBLE_EQ(bad.verify(s).reward, -1.0);
  s.metadata[kCompletionTokensKey] = "many";
  EXPECT_THROW(bad.verify(s), prism::Error);
}

}  // namespace
