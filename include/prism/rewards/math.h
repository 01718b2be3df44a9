// The math verifier: extracts the final answer from a completion, normalises it and decides
// whether it equals the gold answer (exact rationals, sets/tuples/intervals/matrices, relations,
// and symbolic equality through GiNaC in worker processes). See docs/rewards.md.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "prism/rewards/verifier.h"

namespace prism::rewards {

struct MathOptions {
  /// When no \boxed{}, "####" or "answer is" is found, take the last number of the completion.
  bool last_number_fallback = false;
  /// Wall-clock limit of one symbolic comparison; a worker still busy after it is killed and the
  /// verdict is "timeout" (reward 0).
  double timeout_s = 5.0;
  /// GiNaC worker processes (0: hardware threads, at least 1). Also the threads verify_batch uses.
  int workers = 0;
};

/// The answer the ladder finds in a completion: text after the last </think> if any, then the
/// last \boxed{}/\fbox{} (brace-matched), then "#### x", then "The (final) answer is x" /
/// "Answer: x", then (optionally) the last number. nullopt when none applies.
std::optional<std::string> extract_math_answer(std::string_view completion, bool last_number_fallback = false);

/// The gold answer as compared: the content of its last \boxed{} if it has one, else the text.
std::string gold_math_answer(std::string_view answer);

/// Normalised form of an answer string (what the comparison sees); exposed for tests and tools.
std::string normalize_math_answer(std::string_view answer);

/// Outcome of one comparison of two extracted answers.
enum class MathMatch { kEqual, kNotEqual, kTimeout, kError };

class MathVerifier : public Verifier {
 public:
  explicit MathVerifier(MathOptions opts = {});
  ~MathVerifier() override;
  MathVerifier(const MathVerifier&) = delete;
  MathVerifier& operator=(const MathVerifier&) = delete;

  std::string name() const override { return "math"; }
  /// Thread-safe: any number of threads may call it at once (GiNaC work is serialised per worker).
  Verdict verify(const Sample& s) override;
  /// Runs up to `workers` samples at a time.
  std::vector<Verdict> verify_batch(const std::vector<Sample>& samples) override;

  /// Compares two already extracted answers (gold first: the rules are asymmetric like
  /// Math-Verify's). Thread-safe.
  MathMatch compare(std::string_view gold, std::string_view pred);

  /// How many comparisons needed a worker process (the rest were decided in the caller's thread).
  long long symbolic_calls() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace prism::rewards
