// PromptSet: the RL prompt data, in a deterministic order that every rank computes alike.
//
// Records are prompt records (prism/eval/prompt_records.h, the format evaluation suites use too). Every domain's prompts are shuffled per epoch with a
// seed; domains are interleaved by their weights with a deterministic largest-deficit rule, so any
// prefix of the draw sequence holds each domain's share to within one prompt. The draw sequence is
// global: draw k is the same prompt on every rank, a step takes draws [base, base + P) and rank r
// keeps its contiguous slice, so the run does not depend on how the P prompts are spread over
// ranks. The cursor (draws so far and per-domain positions) is the whole resumable state.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "prism/eval/prompt_records.h"

namespace prism::io {
class Tokenizer;
}

namespace prism::rl {

struct RlDataSection;

/// A prompt record (format: prism/eval/prompt_records.h) and where it sits in the draw sequence.
struct Prompt : eval::PromptRecord {
  int64_t draw = 0;  ///< global draw index (its sampling stream)
};

class PromptSet {
 public:
  /// Reads every file (errors name file:line and field), renders and tokenizes each prompt and
  /// refuses a prompt of more than `max_prompt_tokens` tokens.
  PromptSet(const RlDataSection& cfg, const io::Tokenizer& tokenizer, int64_t max_prompt_tokens);
  ~PromptSet();

  /// The next `n` prompts of the global draw sequence (advances the cursor by n).
  std::vector<Prompt> take(int64_t n);
  /// Domains present, sorted (metrics use this order on every rank).
  const std::vector<std::string>& domains() const;
  int64_t size() const;
  int64_t size(const std::string& domain) const;

  /// The cursor as JSON text (Checkpointer extra state) and back; restore checks that the data
  /// and seed still match (prompt counts per domain), else throws naming the difference.
  std::string state_json() const;
  void restore(const std::string& json);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace prism::rl
