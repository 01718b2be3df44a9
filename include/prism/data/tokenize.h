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
  /// Documents longer than this are encoded in pieces of at most this many bytes, cut where the
  /// tokenizer splits anyway (io::Tokenizer::split_point: the ids equal a whole-document encode);
  /// only when a piece has no such point is it cut at whitespace, counted in forced_splits and
  /// logged. Bounds memory whatever the document size (docs/data-format.md).
  int64_t piece_bytes = int64_t{1} << 20;
  /// JSONL lines longer than this are bad records (a JSON record is parsed whole).
  int64_t max_record_bytes = int64_t{256} << 20;
  /// Succeed even when no document was written (every record bad, or no input text).
  bool allow_empty = false;
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
  int64_t forced_splits = 0;  ///< pieces cut without an exact split point (see piece_bytes)
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
/// called from the calling thread after every chunk of records. Throws prism::Error (naming the
/// first bad record) when no document was written, unless `allow_empty`.
TokenizeStats tokenize_corpus(const TokenizeOptions& options,
                              const std::function<void(const TokenizeProgress&)>& progress = {});

}  // namespace prism::data
