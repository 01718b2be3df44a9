// Token shards: the on-disk format of tokenized corpora (docs/data-format.md). A shard holds the
// token ids of many documents back to back plus a document index, so a loader can mmap it and
// read any document or token range without holding the corpus in memory.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>

namespace prism::data {

/// Writes one shard atomically (`<path>.tmp.<pid>`, then rename on finish()). Token width is
/// chosen from the vocab size (uint16 when vocab_size <= 65536, else uint32).
class ShardWriter {
 public:
  ShardWriter(const std::string& path, int64_t vocab_size);
  ~ShardWriter();  ///< without finish(), the temp file is removed (nothing half-written remains)
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  /// Appends one document; every id must be in [0, vocab_size).
  void add_document(std::span<const int32_t> ids);
  /// A document written in parts (a long one, streamed): append_tokens() any number of times,
  /// then end_document(), or discard_document() to drop what was appended since the last
  /// document ended (the file is truncated back; nothing of it remains).
  void append_tokens(std::span<const int32_t> ids);
  void end_document();
  void discard_document();
  /// Tokens appended to the open document so far.
  int64_t open_document_tokens() const;
  /// Writes the index and header, fsyncs, renames into place (an open document is ended first).
  void finish();
  int64_t num_tokens() const;
  int64_t num_documents() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// A memory-mapped shard (validated on open: magic, version, sizes, index monotonic).
class ShardReader {
 public:
  static std::shared_ptr<ShardReader> open(const std::string& path);
  ~ShardReader();
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;

  const std::string& path() const;
  int64_t vocab_size() const;
  int64_t num_tokens() const;
  int64_t num_documents() const;
  /// [begin, end) token offsets of document `i`.
  std::pair<int64_t, int64_t> document(int64_t i) const;
  /// Copies tokens [begin, begin + out.size()) into `out`; throws prism::Error naming the shard,
  /// position and document when an id is >= vocab_size() (a corrupt shard).
  void read(int64_t begin, std::span<int32_t> out) const;

 private:
  ShardReader();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace prism::data
