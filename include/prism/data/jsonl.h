// Reading corpora and prompt sets: a byte/line reader over plain or zstd-compressed files, and a
// JSONL(.zst) record reader whose errors name file and line. Shared by `data tokenize` and by
// prompt datasets, so both report bad input the same way and stream with bounded memory.
//
// **Example**:
//
//     prism::data::JsonlReader r("prompts.jsonl.zst");
//     r.on_bad_record([&](int64_t line, const std::string& why) { ++bad; });  // else: throws
//     prism::data::JsonRecord rec;
//     while (r.next(rec)) prompts.push_back(rec.string("question"));  // "prompts.jsonl.zst:12: question: ..."
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace prism::data {

/// A file read sequentially as bytes, decompressed on the fly when its name ends in `.zst`.
class TextReader {
 public:
  /// Throws prism::Error naming `path` when it cannot be opened.
  explicit TextReader(const std::string& path);
  ~TextReader();
  TextReader(const TextReader&) = delete;
  TextReader& operator=(const TextReader&) = delete;

  /// The next line without its '\n' (a '\r' before it is kept: it is data); false at the end of
  /// the file. A line longer than `max_bytes` is not held: `line` gets its first `max_bytes`
  /// bytes, the rest is skipped, and `*truncated` (when given) is set.
  bool next_line(std::string& line, std::size_t max_bytes = SIZE_MAX, bool* truncated = nullptr);
  /// Appends up to `n` bytes of the file to `out`; false (nothing appended) at the end.
  bool read(std::string& out, std::size_t n);

  const std::string& path() const;
  /// Lines returned by next_line() so far (the 1-based number of the last one).
  int64_t line_number() const;
  /// Bytes of the file consumed (compressed bytes for .zst), for progress.
  int64_t bytes_read() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// One JSON object of a JSONL file, with the file and line it came from for messages.
class JsonRecord {
 public:
  JsonRecord();
  ~JsonRecord();
  JsonRecord(const JsonRecord&);
  JsonRecord& operator=(const JsonRecord&);

  const std::string& file() const;
  int64_t line() const;
  /// Whether `key` is present and not null.
  bool has(const std::string& key) const;
  /// The string at `key`; throws prism::Error `file:line: key: ...` when it is missing or not a string.
  std::string string(const std::string& key) const;
  /// The value at `key` as text: strings as they are, numbers and booleans as JSON; throws when
  /// missing or null.
  std::string text(const std::string& key) const;
  /// Fills a template: `{field}` becomes text(field), `{{` / `}}` are braces, `{}` stays `{}`
  /// (the `\boxed{}` of answer-format instructions), `\n` / `\t` (two
  /// characters, as shells pass them) are a newline / tab. Throws naming the missing field.
  std::string render(const std::string& tmpl) const;
  /// The record as compact JSON.
  std::string dump() const;

 private:
  friend class JsonlReader;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// JSON object records of a JSONL or JSONL.zst file, one per line; blank lines are skipped.
class JsonlReader {
 public:
  /// Lines longer than max_record_bytes are bad records (never held in memory whole).
  explicit JsonlReader(const std::string& path, std::size_t max_record_bytes = std::size_t{256} << 20);
  ~JsonlReader();
  JsonlReader(const JsonlReader&) = delete;
  JsonlReader& operator=(const JsonlReader&) = delete;

  /// Bad lines (invalid UTF-8 or JSON, not an object, too long) go to `handler` (line, reason)
  /// and reading continues; without a handler next() throws prism::Error `file:line: reason`.
  void on_bad_record(std::function<void(int64_t line, const std::string& reason)> handler);
  /// The next good record; false at the end of the file.
  bool next(JsonRecord& record);

  const std::string& path() const;
  int64_t bytes_read() const;

 private:
  TextReader reader_;
  std::size_t max_record_bytes_;
  std::function<void(int64_t, const std::string&)> on_bad_;
};

}  // namespace prism::data
