// The rewards interface: a sample (domain, completion text, gold answer or tests) -> a verdict
// (reward, correct, reason). Verifiers are torch-free and chosen per domain by name (registry in
// prism/rewards/registry.h); the RL loop, `prism-train reward` and the evaluator all go through it.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace prism::rewards {

/// One model output to score. Which fields matter depends on the verifier.
struct Sample {
  std::string domain;      ///< "math" | "mc" | "code" (or a user-defined domain name)
  std::string completion;  ///< the generated text (completion only, not the prompt)
  std::string answer;      ///< gold answer: math expression / value, or a choice letter for mc
  // code
  std::string prompt;       ///< HumanEval: the prompt (signature + docstring) the completion continues
  std::string tests;        ///< HumanEval: test code defining check(candidate); MBPP: assert lines
  std::string entry_point;  ///< HumanEval: the function passed to check()
  std::vector<std::pair<std::string, std::string>> io_cases;  ///< stdin/stdout cases (input, expected output)
  std::vector<std::string> choices;                          ///< mc: optional choice texts (A, B, ...)
  std::map<std::string, std::string> metadata;               ///< free-form (source, id, ...)
  bool truncated = false;  ///< generation hit max length without a stop token (for shaping)
};

/// What a verifier decided. `reward` is the shaped, scaled reward; `correct` the raw verdict.
struct Verdict {
  double reward = 0.0;
  bool correct = false;
  std::string reason;     ///< short machine-greppable reason ("equal", "no_answer", "test_failed: ...")
  std::string extracted;  ///< the answer the verifier extracted from the completion ("" if none)
};

class Verifier {
 public:
  virtual ~Verifier() = default;
  virtual std::string name() const = 0;
  virtual Verdict verify(const Sample& s) = 0;
  /// Scores many samples; implementations may run them in parallel (worker processes). The
  /// default calls verify() in order.
  virtual std::vector<Verdict> verify_batch(const std::vector<Sample>& samples) {
    std::vector<Verdict> out;
    out.reserve(samples.size());
    for (const auto& s : samples) out.push_back(verify(s));
    return out;
  }
};

}  // namespace prism::rewards
