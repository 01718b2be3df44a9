// The rollout engine: batched sampling from a live CausalLM with per-token fp32 log-probs.
//
// How it runs: requests are served first come, first served through a fixed number of decode
// slots (rows of one DecodeState allocated up front). A request's prompt is prefilled once (into a
// one-row prefix state, logits of the last position only) and copied into a free slot for each of
// its n samples; every step samples one token for every occupied slot, and one forward extends
// exactly the occupied slots, whatever their lengths (no padding). A finished sample frees its slot
// at once for the next queued sample.
//
// The engine reads the model's live parameters: parameters updated in place by an optimizer
// between calls are what the next call samples from. (With EngineOptions::decode_weights it
// multiplies by transposed copies of the matrices, re-copied from the live parameters at the start
// of every call.)
//
// Determinism: sample i of a request draws its token at step t with the key
// sample_key(seed, i, t) (sampler.h), so its tokens depend only on (weights, prompt, parameters,
// seed, i), not on the slot count, the other requests or the thread count. (Matrix products of
// different batch shapes may round differently; with Gumbel-max draws that changes a token only
// when the two best perturbed scores are within that rounding.)
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace prism::io {
class Tokenizer;
}
namespace prism::models {
class CausalLM;
}

namespace prism::generate {

struct SamplingParams {
  int64_t n = 1;                ///< samples drawn from the prompt
  double temperature = 1.0;     ///< 0 = greedy
  double top_p = 1.0;           ///< nucleus mass (1 = off)
  int64_t top_k = 0;            ///< 0 = off
  double min_p = 0.0;           ///< 0 = off
  int64_t max_new_tokens = 256; ///< completion length limit (also capped by the context length)
  /// Token ids that end a sample (the token is kept in the output). Unset = the checkpoint's EOS
  /// ids (ModelConfig::eos_token_ids, or EngineOptions::eos_token_ids); an empty list disables it.
  std::optional<std::vector<int64_t>> stop_token_ids;
  /// Strings that end a sample when the decoded completion contains one (needs a tokenizer); the
  /// text is cut before the string, the tokens keep the one that completed it.
  std::vector<std::string> stop;
  uint64_t seed = 0;
};

struct Request {
  std::vector<int64_t> prompt;  ///< token ids, at least one, shorter than the context length
  SamplingParams params;
};

enum class FinishReason { kStop, kLength };
const char* finish_reason_name(FinishReason r);  ///< "stop" | "length"

struct Sample {
  int64_t request = 0;  ///< index of the request in the generate() call
  int64_t index = 0;    ///< sample index within the request, 0 .. n-1
  std::vector<int64_t> tokens;           ///< completion token ids (with the stop token, if one ended it)
  std::string text;                      ///< decoded completion (special tokens skipped; cut at a stop string); empty without a tokenizer
  std::vector<float> logprobs;           ///< per token: log_softmax(logits) in fp32, the distribution the trainer computes
  std::vector<float> sampling_logprobs;  ///< per token: log-prob under the processed (temperature/top-k/top-p/min-p) distribution
  FinishReason finish_reason = FinishReason::kLength;
  std::string stop_reason;  ///< the stop string or stop token id that ended it ("" for length)
  int64_t prompt_length = 0;
  int64_t completion_length = 0;
};

struct EngineOptions {
  int64_t slots = 16;       ///< decode slots (rows decoded together)
  /// Tokens (prompt + completion) a slot can hold. 0 = sized per generate() call from the longest
  /// prompt + max_new_tokens, capped by the context length (max_position_embeddings).
  int64_t max_length = 0;
  /// Default stop token ids; unset = the model's ModelConfig::eos_token_ids.
  std::optional<std::vector<int64_t>> eos_token_ids;
  /// Decode with [in, out] copies of the weight matrices (prism/models/decode_weights.h): on CPU,
  /// MKL then skips re-packing every transposed weight on every decode step. Costs one more copy of
  /// the matrices in memory (Stats::weight_copy_bytes) and a refresh from the live parameters at the
  /// start of every generate() call that uses them (Stats::weight_copy_seconds). Unset = on for a
  /// CPU model without layer hooks (sharded parameters) in calls where rows decode together (slots
  /// > 1 and more than one sample); off otherwise: one row is a matrix-vector product, which needs
  /// no packing, and cuBLAS reads transposed weights as they are.
  std::optional<bool> decode_weights;
};

struct Progress {
  int64_t requests_done = 0, requests_total = 0;
  int64_t samples_done = 0, samples_total = 0;
  int64_t tokens_generated = 0;  ///< completion tokens so far
  double seconds = 0.0;
};

struct Stats {
  int64_t state_bytes = 0;        ///< decode slots + prefix row, allocated before decoding
  int64_t max_length = 0;         ///< tokens per slot
  int64_t prompt_tokens = 0;      ///< tokens prefilled (once per request)
  int64_t generated_tokens = 0;   ///< completion tokens of all samples
  int64_t decode_steps = 0;       ///< batched forward calls of the decode loop
  int64_t weight_copy_bytes = 0;  ///< decode weight copies (EngineOptions::decode_weights), 0 = none
  double weight_copy_seconds = 0.0;  ///< refreshing them at the start of the call (in `seconds`)
  double seconds = 0.0;
};

class Engine {
 public:
  /// `tokenizer` (optional, must outlive the engine) decodes text and matches stop strings.
  explicit Engine(const models::CausalLM& model, EngineOptions opts = {}, const io::Tokenizer* tokenizer = nullptr);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  /// Samples every request's n completions; the result is ordered by (request, sample index).
  /// Invalid requests throw prism::Error naming the request and field before anything runs.
  std::vector<Sample> generate(const std::vector<Request>& requests,
                               const std::function<void(const Progress&)>& progress = {});

  /// Counters of the last generate() call.
  const Stats& stats() const;
  /// The stop token ids used when a request leaves stop_token_ids unset.
  const std::vector<int64_t>& default_stop_token_ids() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace prism::generate
