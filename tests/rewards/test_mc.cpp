// Multiple-choice extraction: every accepted phrasing, refusals of two letters, and the
// lower-case words that must not be read as choices.
#include <gtest/gtest.h>

#include "prism/rewards/mc.h"

namespace {

using prism::rewards::extract_choice;
using prism::rewards::McVerifier;
using prism::rewards::Sample;

char letter(const char* completion, int n = 10) {
  auto c = extract_choice(completion, n);
  return c.letter ? *c.letter : '-';
}
std::string reason(const char* completion, int n = 10) { return extract_choice(completion, n).reason; }

TEST(McExtract, Phrasings) {
  EXPECT_EQ(letter("so \\boxed{C}"), 'C');
  EXPECT_EQ(letter("$\\boxed{\\text{B}}$"), 'B');
  EXPECT_EQ(letter("Thus the answer is (C)."), 'C');
  EXPECT_EQ(letter("The answer is D. It fits best."), 'D');
  EXPECT_EQ(letter("Answer: C"), 'C');
  EXPECT_EQ(letter("answer: c"), 'C');
  EXPECT_EQ(letter("**Answer:** (b)"), 'B');
  EXPECT_EQ(letter("Looking at them all:\nC) is correct"), 'C');
  EXPECT_EQ(letter("I think\n(J)"), 'J');
  EXPECT_EQ(letter("<think>A is tempting but wrong</think>The answer is B"), 'B');
  EXPECT_EQ(letter("The answer is \\boxed{A}", 4), 'A');
}

TEST(McExtract, RefusalsAndMisses) {
  EXPECT_EQ(reason("The answer is A or C."), "multiple_choices");
  EXPECT_EQ(reason("\\boxed{A, C}"), "multiple_choices");
  EXPECT_EQ(reason("Answer: B and D"), "multiple_choices");
  EXPECT_EQ(reason("The answer is a bit unclear"), "no_answer");  // the article, not choice A
  EXPECT_EQ(reason("no idea"), "no_answer");
  EXPECT_EQ(reason("The answer is E", 4), "out_of_range");
  EXPECT_EQ(letter("The answer is (A). (A) again"), 'A');  // the same letter twice is one answer
}

TEST(McVerifier, Verdicts) {
  McVerifier v;
  Sample s;
  s.answer = "C";
  s.completion = "The answer is (C).";
  auto r = v.verify(s);
  EXPECT_TRUE(r.correct);
  EXPECT_EQ(r.reward, 1.0);
  EXPECT_EQ(r.extracted, "C");
  s.completion = "The answer is (B).";
  r = v.verify(s);
  EXPECT_FALSE(r.correct);
  EXPECT_EQ(r.reason, "wrong_choice");
  s.completion = "A or C";
  s.answer = "(c)";
  EXPECT_EQ(v.verify(s).reason, "no_answer");
  s.completion = "Answer: A or C";
  EXPECT_EQ(v.verify(s).reason, "multiple_choices");
  s.choices = {"x", "y"};  // two choices: C is out of range
  s.completion = "Answer: C";
  EXPECT_EQ(v.verify(s).reason, "out_of_range");
  s.answer = "";
  EXPECT_EQ(v.verify(s).reason, "no_gold");
}

}  // namespace
