// Shaping: gate, scale and penalties (see shaping.h for the rules and docs/rewards.md for defaults).
#include "prism/rewards/shaping.h"

#include <cctype>
#include <string>
#include <unordered_set>
#include <vector>

#include "prism/core/error.h"

namespace prism::rewards {

bool passes_format_gate(std::string_view completion) {
  auto close = completion.find("</think>");
  if (close == std::string_view::npos || completion.find("</think>", close + 1) != std::string_view::npos) return false;
  auto open = completion.find("<think>");
  if (open != std::string_view::npos) {
    if (open > close || completion.find("<think>", open + 1) != std::string_view::npos) return false;
    // nothing but whitespace before the opening tag
    for (std::size_t i = 0; i < open; ++i)
      if (!std::isspace(static_cast<unsigned char>(completion[i]))) return false;
  }
  for (std::size_t i = close + 8; i < completion.size(); ++i)
    if (!std::isspace(static_cast<unsigned char>(completion[i]))) return true;
  return false;  // no answer after </think>
}

double repeated_ngram_fraction(std::string_view text, int n) {
  PRISM_CHECK(n >= 1, "rewards: repetition_ngram must be >= 1 (found ", n, ")");
  std::vector<std::string_view> words;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    std::size_t j = i;
    while (j < text.size() && !std::isspace(static_cast<unsigned char>(text[j]))) ++j;
    if (j > i) words.push_back(text.substr(i, j - i));
    i = j;
  }
  if (words.size() < static_cast<std::size_t>(n) + 1) return 0.0;
  std::unordered_set<std::string> seen;
  std::size_t total = words.size() - static_cast<std::size_t>(n) + 1, repeated = 0;
  for (std::size_t k = 0; k < total; ++k) {
    std::string key;
    for (int m = 0; m < n; ++m) {
      key.append(words[k + static_cast<std::size_t>(m)]);
      key.push_back('\x1f');
    }
    if (!seen.insert(key).second) ++repeated;
  }
  return static_cast<double>(repeated) / static_cast<double>(total);
}

double overlong_penalty(long long tokens, int max_tokens, int buffer_tokens, double factor) {
  if (max_tokens <= 0) return 0.0;
  long long expected = static_cast<long long>(max_tokens) - buffer_tokens;
  if (tokens <= expected) return 0.0;
  if (tokens <= max_tokens && buffer_tokens > 0)
    return factor * static_cast<double>(expected - tokens) / static_cast<double>(buffer_tokens);
  return -factor;
}

ShapedVerifier::ShapedVerifier(std::shared_ptr<Verifier> inner, ShapingOptions opts)
    : inner_(std::move(inner)), opts_(opts) {
  PRISM_CHECK(inner_ != nullptr, "rewards: ShapedVerifier needs a verifier");
  PRISM_CHECK(opts_.repetition_ngram >= 1, "rewards: shaping.repetition_ngram must be >= 1");
  PRISM_CHECK(opts_.overlong_max_tokens == 0 ||
                  (opts_.overlong_buffer_tokens >= 0 && opts_.overlong_buffer_tokens <= opts_.overlong_max_tokens),
              "rewards: shaping.overlong_buffer_tokens must be in [0, overlong_max_tokens]");
}

Verdict ShapedVerifier::shape(const Sample& s, Verdict v) const {
  if (opts_.format_gate && !passes_format_gate(s.completion)) {
    v.reward = 0.0;
    v.reason = "format: " + v.reason;
    return v;
  }
  double r = v.reward * opts_.scale;
  if (s.truncated) r -= opts_.stop_token_penalty;
  if (opts_.repetition_penalty != 0.0) {
    double f = repeated_ngram_fraction(s.completion, opts_.repetition_ngram);
    if (f > opts_.repetition_threshold) r -= opts_.repetition_penalty * f;
  }
  if (opts_.overlong_max_tokens > 0) {
    auto it = s.metadata.find(kCompletionTokensKey);
    if (it != s.metadata.end()) {
      long long tokens = 0;
      try {
        tokens = std::stoll(it->second);
      } catch (const std::exception&) {
        throw Error(str("rewards: metadata.", kCompletionTokensKey, " must be an integer (found '", it->second, "')"));
      }
      r += overlong_penalty(tokens, opts_.overlong_max_tokens, opts_.overlong_buffer_tokens, opts_.overlong_factor);
    }
  }
  v.reward = r;
  return v;
}

Verdict ShapedVerifier::verify(const Sample& s) { return shape(s, inner_->verify(s)); }

std::vector<Verdict> ShapedVerifier::verify_batch(const std::vector<Sample>& samples) {
  auto vs = inner_->verify_batch(samples);
  for (std::size_t i = 0; i < vs.size(); ++i) vs[i] = shape(samples[i], std::move(vs[i]));
  return vs;
}

}  // namespace prism::rewards
