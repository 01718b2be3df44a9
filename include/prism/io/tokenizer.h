// Hugging Face tokenizer.json in C++ (BPE models: byte-level GPT-2 / Llama-3 style and
// SentencePiece-style with byte fallback), encoding and decoding exactly as the `tokenizers`
// library does. Unsupported components are refused at load with an error naming them.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace prism::io {

class Tokenizer {
 public:
  /// Loads `path` (a tokenizer.json file, or a directory containing one).
  static std::unique_ptr<Tokenizer> from_file(const std::string& path);
  /// Parses tokenizer.json text (`source` names it in errors).
  static std::unique_ptr<Tokenizer> from_json(const std::string& json, const std::string& source = "<json>");
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  /// Text -> ids, as `tokenizers`' `encode(text, add_special_tokens=...)`. Thread-safe.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  /// Ids -> text, as `tokenizers`' `decode(ids, skip_special_tokens=...)`. Thread-safe.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  /// Where a long text can be cut so that encode(text[:p], false) followed by
  /// encode(text[p:], false) are exactly the ids of encode(text, false): the largest such
  /// p <= max_bytes (0 < p < text.size()), or 0 when there is none in range or this tokenizer has no
  /// provably exact split points (can_split() false). Candidates are a lone newline (after
  /// printable ASCII) before an ASCII letter and a space between ASCII letters, where the
  /// pre-tokenizer splits anyway (the rules,
  /// per component, are at SplitKinds in tokenizer.cpp). Lets corpus preparation stream a
  /// gigabyte document in bounded memory with the ids of a whole-document encode.
  size_t split_point(std::string_view text, size_t max_bytes) const;
  /// Whether split_point can ever return a point (false e.g. for SentencePiece-style pipelines
  /// with a Prepend normalizer and no pre-tokenizer, where the whole text is one BPE word).
  bool can_split() const;
  /// The ids encode(text, true) puts before and after encode(text, false) (the post-processor's
  /// single-sequence template), so a text encoded in parts can be framed once.
  std::pair<std::vector<int32_t>, std::vector<int32_t>> special_tokens_around() const;

  /// Model vocabulary plus added tokens (= max id + 1).
  int64_t vocab_size() const;
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace prism::io
