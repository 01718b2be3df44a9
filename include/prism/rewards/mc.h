// The multiple-choice verifier: finds the one letter a completion commits to (\boxed{C},
// "the answer is (C)", "Answer: c", "C) ...") and compares it with the gold letter. A final answer
// that names two different letters ("A or C") is refused (reward 0), so hedging cannot be rewarded.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "prism/rewards/verifier.h"

namespace prism::rewards {

struct McOptions {
  /// Letters allowed when a sample carries no `choices`: A.. up to this many (at most 10: A-J).
  int num_choices = 10;
};

/// What the completion answered.
struct McChoice {
  std::optional<char> letter;  ///< upper-case letter, when exactly one was given
  std::string reason;          ///< "" when a letter was found; else "no_answer" | "multiple_choices" | "out_of_range"
};

/// Extracts the chosen letter among the first `num_choices` letters (A-J).
McChoice extract_choice(std::string_view completion, int num_choices = 10);

class McVerifier : public Verifier {
 public:
  explicit McVerifier(McOptions opts = {});
  std::string name() const override { return "mc"; }
  /// Gold: Sample::answer, a letter ("C", "(c)", "\boxed{C}"); choices: Sample::choices size if set.
  Verdict verify(const Sample& s) override;

 private:
  McOptions opts_;
};

}  // namespace prism::rewards
