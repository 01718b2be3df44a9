// Reward shaping around any verifier, configured per domain: the study's format gate, reward
// scale, stop-token penalty, n-gram repetition penalty and DAPO's soft overlong penalty.
//
// The completion's token count (for the overlong penalty) travels in Sample::metadata under
// kCompletionTokensKey as a decimal string, so the Sample struct needs no new field.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "prism/rewards/verifier.h"

namespace prism::rewards {

inline constexpr const char* kCompletionTokensKey = "completion_tokens";

struct ShapingOptions {
  /// PRISM's format gate: the completion must be `<think> ... </think>` followed by a non-empty
  /// answer (the opening tag may sit in the prompt); otherwise the reward is 0.
  bool format_gate = false;
  /// Reward of a correct answer (the verifier's 0..1 reward is multiplied by it; open-instruct: 10).
  double scale = 1.0;
  /// Subtracted when the sample was cut at max length without a stop token (Sample::truncated).
  double stop_token_penalty = 0.0;
  /// Subtracted times the fraction of repeated word n-grams, when that fraction exceeds the threshold.
  double repetition_penalty = 0.0;
  int repetition_ngram = 4;
  double repetition_threshold = 0.0;
  /// DAPO overlong shaping (0: off): 0 up to max - buffer tokens, then linear down to -factor at
  /// max, -factor beyond. Needs metadata["completion_tokens"].
  int overlong_max_tokens = 0;
  int overlong_buffer_tokens = 0;
  double overlong_factor = 1.0;
};

/// Whether `completion` passes the format gate.
bool passes_format_gate(std::string_view completion);
/// Fraction of word n-grams that repeat an earlier one (0 for fewer than n+1 words).
double repeated_ngram_fraction(std::string_view text, int n);
/// DAPO's soft overlong penalty (<= 0) for a completion of `tokens` tokens.
double overlong_penalty(long long tokens, int max_tokens, int buffer_tokens, double factor);

/// Applies ShapingOptions to the verdicts of `inner`. `correct` stays the inner verifier's raw
/// verdict; `reward` is the shaped one; a gate failure is reported as reason "format: <inner>".
class ShapedVerifier : public Verifier {
 public:
  ShapedVerifier(std::shared_ptr<Verifier> inner, ShapingOptions opts);
  std::string name() const override { return inner_->name(); }
  Verdict verify(const Sample& s) override;
  std::vector<Verdict> verify_batch(const std::vector<Sample>& samples) override;
  Verdict shape(const Sample& s, Verdict v) const;

 private:
  std::shared_ptr<Verifier> inner_;
  ShapingOptions opts_;
};

}  // namespace prism::rewards
