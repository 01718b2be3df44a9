// Corpus preparation: raw records (JSONL, JSONL.zst, plain text) -> token shards
// (docs/data-format.md), multi-threaded, deterministic (the output does not depend on the thread
// count), with bad records counted and reported by file and line.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace prism::data {

struct TokenizeOptions {
  std::string tokenizer;             ///< tokenizer.json or a directory holding it
  std::vector<std::string> inputs;   ///< files or glob patterns (.jsonl, .jsonl.zst, .txt, .txt.zst)
  std::string output_dir;            ///< shards are written here (created if missing)
  std::string field = "text";        ///< JSONL: the field holding the text (ignored with a template)
  std::string text_template;         ///< JSONL: e.g. "{question}\n{answer}"; `{{`/`}}` are braces
  std::string text_unit = "file";    ///< plain text: one document per "file", "line" or "paragraph"
  bool add_special_tokens = true;    ///< as tokenizers' encode (e.g. BOS from TemplateProcessing)
  bool strict = false;               ///< fail on the first bad record instead of counting it
  int num_threads = 0;               ///< 0 = hardware concurrency
  int64_t shard_tokens = 256LL << 20;  ///< start a new shard after this many tokens
  std::string shard_prefix = "shard";  ///< files: <prefix>-00000.tok, ...
};

struct BadRecord {
  std::string file;
  int64_t line = 0;  ///< 1-based line (JSONL / line unit), 0 for whole files
  std::string reason;
};

struct TokenizeStats {
  int64_t documents = 0;
  int64_t tokens = 0;
  int64_t bytes = 0;        ///< UTF-8 bytes of text tokenized
  int64_t bad_records = 0;
  std::vector<BadRecord> bad;  ///< the first 100 bad records
  std::vector<std::string> shards;
  double seconds = 0;
};

struct TokenizeProgress {
  int64_t bytes_read = 0;
  int64_t bytes_total = 0;  ///< sum of input file sizes (compressed size for .zst)
  int64_t documents = 0;
  int64_t tokens = 0;
};

/// Runs the whole preparation. Writes `<output_dir>/<prefix>-NNNNN.tok` shards and
/// `<output_dir>/manifest.json` (inputs, options, stats) last, each atomically. `progress` is
/// called from the calling thread after every chunk of records.
TokenizeStats tokenize_corpus(const TokenizeOptions& options,
                              const std::function<void(const TokenizeProgress&)>& progress = {});

/// Fills a record template from a JSON object's fields (strings as is, numbers/bools as JSON
/// text). Throws prism::Error naming the missing field.
std::string render_template(const std::string& tmpl, const std::string& json_object_text);

/// True when `s` is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool is_valid_utf8(const std::string& s);

}  // namespace prism::data
