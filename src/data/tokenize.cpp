// Corpus -> token shards. Records are read sequentially (plain or zstd-compressed files; JSONL
// through JsonlReader, plain text in blocks), encoded in chunks by a pool of threads, and written
// in input order, so the shards are identical whatever the thread count. Bad records (invalid
// JSON or UTF-8, missing field) are counted with their file and line, or abort the run with
// --strict.
//
// Memory is bounded whatever the input: a document longer than piece_bytes is never encoded
// whole (the tokenizer's pipeline holds ~30 bytes per input byte). It is encoded in pieces cut
// where the tokenizer splits anyway (io::Tokenizer::split_point), a few pieces at a time in
// parallel, and its ids are streamed into the shard; the special tokens of the post-processor
// frame it once. Plain text is read in blocks, so even a 1 GB one-line or one-document file is
// never held whole. Peak memory: ~ chunk (16 MiB of short records, ids and text) + threads x
// 32 x piece_bytes, plus 3 x max_record_bytes for a JSONL record (docs/data-format.md).
#include "prism/data/tokenize.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/core/log.h"
#include "prism/core/utf8.h"
#include "prism/data/jsonl.h"
#include "prism/data/token_shard.h"
#include "prism/io/tokenizer.h"

namespace prism::data {
namespace {

using json = nlohmann::json;

constexpr size_t kChunkRecords = 4096;     // short records encoded per parallel batch ...
constexpr size_t kChunkBytes = 16u << 20;  // ... or this much text
constexpr size_t kBlockBytes = 1u << 20;   // plain text is read in blocks of this size

// ---- input files ------------------------------------------------------------------------------

std::vector<std::string> expand_inputs(const std::vector<std::string>& patterns) {
  std::vector<std::string> files;
  for (const auto& p : patterns) {
    std::vector<std::string> matched = fs::glob(p);
    if (matched.empty())
      throw Error(str("input pattern matches no file (", fs::glob_miss_reason(p), ")"),
                  key_context("", "--input", {}, p));
    files.insert(files.end(), matched.begin(), matched.end());
  }
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  return files;
}

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

/// Runs f(i) for i in [0, n) on up to `threads` threads; rethrows the first exception.
template <class F>
void parallel_for(size_t n, int threads, F&& f) {
  const size_t nt = std::min<size_t>(static_cast<size_t>(std::max(1, threads)), n);
  if (nt <= 1) {
    for (size_t i = 0; i < n; ++i) f(i);
    return;
  }
  std::vector<std::thread> pool;
  std::exception_ptr err;
  std::mutex err_mu;
  for (size_t t = 0; t < nt; ++t) {
    pool.emplace_back([&, t] {
      try {
        for (size_t i = t; i < n; i += nt) f(i);
      } catch (...) {
        std::lock_guard<std::mutex> lk(err_mu);
        if (!err) err = std::current_exception();
      }
    });
  }
  for (auto& th : pool) th.join();
  if (err) std::rethrow_exception(err);
}

// ---- output -----------------------------------------------------------------------------------

class ShardSink {
 public:
  ShardSink(const TokenizeOptions& o, int64_t vocab) : o_(o), vocab_(vocab) {}
  /// Appends ids to the open document (opening a shard when none is open).
  void append(std::span<const int32_t> ids) {
    if (!w_) {
      char name[64];
      std::snprintf(name, sizeof name, "%s-%05d.tok", o_.shard_prefix.c_str(), next_++);
      path_ = fs::join(o_.output_dir, name);
      w_ = std::make_unique<ShardWriter>(path_, vocab_);
    }
    w_->append_tokens(ids);
  }
  void end_document(TokenizeStats& st) {
    w_->end_document();
    if (w_->num_tokens() >= o_.shard_tokens) close(st);
  }
  void discard_document() {
    if (w_) w_->discard_document();
  }
  void close(TokenizeStats& st) {
    if (!w_) return;
    w_->finish();
    st.shards.push_back(fs::filename(path_));
    w_.reset();
  }

 private:
  const TokenizeOptions& o_;
  int64_t vocab_;
  int next_ = 0;
  std::string path_;
  std::unique_ptr<ShardWriter> w_;
};

// ---- encoding ---------------------------------------------------------------------------------

/// Where a document came from, for bad-record reports.
struct Origin {
  std::string file;
  int64_t line = 0;
};

/// Encodes documents in input order: short ones in parallel chunks, long ones streamed in pieces.
class Encoder {
 public:
  Encoder(const TokenizeOptions& o, const io::Tokenizer& tok, TokenizeStats& st, int threads,
          std::function<void()> on_flush)
      : o_(o), tok_(tok), st_(st), threads_(threads), sink_(o, tok.vocab_size()), on_flush_(std::move(on_flush)) {
    if (o_.add_special_tokens) std::tie(prefix_, suffix_) = tok_.special_tokens_around();
  }

  void bad(const Origin& at, const std::string& why) {
    if (o_.strict) {
      throw Error(why + " (--strict)", key_context(at.line ? str(at.file, ":", at.line) : at.file, ""));
    }
    ++st_.bad_records;
    if (st_.bad.size() < 100) st_.bad.push_back({at.file, at.line, why});
  }

  /// A whole document already in memory.
  void add(std::string text, const Origin& at) {
    if (text.size() > piece_bytes()) {
      if (!utf8::is_valid(text)) return bad(at, "invalid UTF-8");
      begin_stream(at);
      stream(text, true);
      end_stream();
      return;
    }
    if (!utf8::is_valid(text)) return bad(at, "invalid UTF-8");
    chunk_bytes_ += text.size();
    chunk_.push_back(std::move(text));
    if (chunk_.size() >= kChunkRecords || chunk_bytes_ >= kChunkBytes) flush();
  }

  // A document arriving in blocks: begin_stream, then stream(buffer, last) any number of times
  // (it consumes a prefix of `buffer`, keeping an unfinished tail), then end_stream.
  void begin_stream(const Origin& at) {
    flush();  // earlier records go first
    stream_bad_ = false;
    stream_started_ = false;
    stream_at_ = at;
    stream_tokens_ = 0;
    stream_bytes_ = 0;
  }
  void stream(std::string& buffer, bool last) {
    std::vector<std::string> pieces;
    size_t used = 0;
    const size_t keep = last ? 0 : 4;  // a separator or a UTF-8 sequence may continue in the next block
    while (buffer.size() - used > piece_bytes() + keep) {
      std::string_view rest(buffer.data() + used, buffer.size() - used);
      size_t cut = tok_.split_point(rest, piece_bytes());
      if (cut == 0) cut = forced_cut(rest);
      pieces.emplace_back(rest.substr(0, cut));
      used += cut;
      if (pieces.size() >= static_cast<size_t>(threads_)) encode_pieces(pieces);
    }
    if (last && used < buffer.size()) {
      pieces.emplace_back(buffer.data() + used, buffer.size() - used);
      used = buffer.size();
    }
    encode_pieces(pieces);
    buffer.erase(0, used);
  }
  void end_stream() {
    if (stream_bad_ || !stream_started_) return;  // dropped, or no piece at all
    if (!suffix_.empty()) sink_.append(suffix_);
    stream_tokens_ += static_cast<int64_t>(suffix_.size());
    sink_.end_document(st_);
    st_.documents += 1;
    st_.tokens += stream_tokens_;
    st_.bytes += stream_bytes_;
    if (on_flush_) on_flush_();
  }

  void flush() {
    if (chunk_.empty()) return;
    std::vector<std::vector<int32_t>> encoded(chunk_.size());
    parallel_for(chunk_.size(), threads_,
                 [&](size_t i) { encoded[i] = tok_.encode(chunk_[i], o_.add_special_tokens); });
    for (size_t i = 0; i < chunk_.size(); ++i) {
      if (encoded[i].empty()) continue;  // empty text: nothing to learn from
      sink_.append(encoded[i]);
      sink_.end_document(st_);
      st_.documents += 1;
      st_.tokens += static_cast<int64_t>(encoded[i].size());
      st_.bytes += static_cast<int64_t>(chunk_[i].size());
    }
    chunk_.clear();
    chunk_bytes_ = 0;
    if (on_flush_) on_flush_();
  }

  void finish() {
    flush();
    sink_.close(st_);
  }

  size_t piece_bytes() const { return static_cast<size_t>(o_.piece_bytes); }

 private:
  /// No exact split point in the first piece_bytes: cut after the last whitespace of the second
  /// half (else at a character boundary), and say so, since the ids around the cut may differ
  /// from a whole-document encode.
  size_t forced_cut(std::string_view rest) {
    const size_t limit = piece_bytes();
    size_t cut = limit;
    const size_t ws = rest.substr(0, limit).find_last_of(" \t\n");
    if (ws != std::string_view::npos && ws + 1 > limit / 2) {
      cut = ws + 1;
    } else {
      while (cut > 1 && (static_cast<unsigned char>(rest[cut]) & 0xC0) == 0x80) --cut;
    }
    ++st_.forced_splits;
    if (st_.forced_splits <= 10) {
      log::warn(str("tokenize: ", stream_at_.file, stream_at_.line ? str(":", stream_at_.line) : std::string(),
                    ": no exact split point in ", limit, " bytes (",
                    tok_.can_split() ? "no newline before a letter "
                                       "or space between letters"
                                     : "this tokenizer has none",
                    "); cut at whitespace, the ids at the cut "
                    "may differ from a whole-document encode (raise --piece-bytes to avoid it)"));
    }
    return cut;
  }

  void encode_pieces(std::vector<std::string>& pieces) {
    if (pieces.empty() || stream_bad_) {
      pieces.clear();
      return;
    }
    for (const auto& p : pieces) {
      if (!utf8::is_valid(p)) {
        sink_.discard_document();
        stream_bad_ = true;
        pieces.clear();
        bad(stream_at_, "invalid UTF-8");
        return;
      }
    }
    std::vector<std::vector<int32_t>> ids(pieces.size());
    parallel_for(pieces.size(), threads_, [&](size_t i) { ids[i] = tok_.encode(pieces[i], false); });
    if (!stream_started_) {
      if (!prefix_.empty()) sink_.append(prefix_);
      stream_tokens_ += static_cast<int64_t>(prefix_.size());
      stream_started_ = true;
    }
    for (size_t i = 0; i < pieces.size(); ++i) {
      sink_.append(ids[i]);
      stream_tokens_ += static_cast<int64_t>(ids[i].size());
      stream_bytes_ += static_cast<int64_t>(pieces[i].size());
    }
    pieces.clear();
  }

  const TokenizeOptions& o_;
  const io::Tokenizer& tok_;
  TokenizeStats& st_;
  int threads_;
  ShardSink sink_;
  std::function<void()> on_flush_;
  std::vector<int32_t> prefix_, suffix_;
  std::vector<std::string> chunk_;
  size_t chunk_bytes_ = 0;
  bool stream_bad_ = false, stream_started_ = false;
  Origin stream_at_;
  int64_t stream_tokens_ = 0, stream_bytes_ = 0;
};

// ---- plain text -------------------------------------------------------------------------------

/// Reads a plain-text file in blocks and hands its documents (the whole file, each line, or each
/// paragraph) to the encoder; a document longer than piece_bytes is streamed, never held whole.
void read_plain_text(TextReader& r, const std::string& unit, Encoder& enc) {
  const std::string sep = unit == "line" ? "\n" : unit == "paragraph" ? "\n\n" : "";
  std::string cur;           // the current document's unconsumed bytes
  size_t scanned = 0;        // bytes of `cur` known to hold no separator
  bool streaming = false;    // the current document is being streamed
  int64_t line = 1;          // line where the current document starts
  int64_t lines_in_cur = 0;  // newlines consumed into the current document so far
  auto doc_origin = [&] { return Origin{r.path(), unit == "file" ? 0 : line}; };
  auto finish_doc = [&](std::string text) {
    if (streaming) {
      enc.stream(text, true);
      enc.end_stream();
      streaming = false;
      return;
    }
    const bool keep = unit == "line"        ? !text.empty()
                      : unit == "paragraph" ? text.find_first_not_of(" \t\r\n") != std::string::npos
                                            : true;
    if (keep) enc.add(std::move(text), doc_origin());
  };
  while (true) {
    const bool more = r.read(cur, kBlockBytes);
    if (!sep.empty()) {
      // Split off every complete document (one erase per block: erasing per line would be
      // quadratic); `scanned` avoids rescanning a long document on every block.
      size_t begin = 0;
      while (true) {
        const size_t back = sep.size() - 1;
        const size_t at = cur.find(sep, std::max(begin, scanned >= back ? scanned - back : 0));
        if (at == std::string::npos) break;
        lines_in_cur += static_cast<int64_t>(std::count(cur.begin() + static_cast<std::ptrdiff_t>(begin),
                                                        cur.begin() + static_cast<std::ptrdiff_t>(at), '\n'));
        finish_doc(cur.substr(begin, at - begin));
        begin = at + sep.size();
        line += lines_in_cur + static_cast<int64_t>(sep.size());
        lines_in_cur = 0;
        scanned = begin;
      }
      cur.erase(0, begin);
      scanned = cur.size();
    }
    if (!more) break;
    if (cur.size() > enc.piece_bytes() + 4) {
      if (!streaming) {
        enc.begin_stream(doc_origin());
        streaming = true;
      }
      lines_in_cur += static_cast<int64_t>(std::count(cur.begin(), cur.end(), '\n'));
      const size_t old = cur.size();
      enc.stream(cur, false);
      // stream() consumed a prefix; the newlines of what remains are counted again later.
      lines_in_cur -= static_cast<int64_t>(std::count(cur.begin(), cur.end(), '\n'));
      scanned -= std::min(scanned, old - cur.size());
    }
  }
  // The file ends the last document (an empty remainder is a document only in file mode).
  if (unit == "file" || streaming || !cur.empty()) finish_doc(std::move(cur));
}

}  // namespace

TokenizeStats tokenize_corpus(const TokenizeOptions& o, const std::function<void(const TokenizeProgress&)>& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.output_dir.empty()) throw Error("no output directory", key_context("", "--output"));
  if (o.text_unit != "file" && o.text_unit != "line" && o.text_unit != "paragraph")
    throw Error("unknown text unit", key_context("", "--text-unit", "file, line or paragraph", o.text_unit));
  if (o.shard_tokens <= 0)
    throw Error("shard size must be > 0", key_context("", "--shard-tokens", "> 0", std::to_string(o.shard_tokens)));
  if (o.piece_bytes < 64)
    throw Error("piece size must be >= 64 bytes",
                key_context("", "--piece-bytes", ">= 64", std::to_string(o.piece_bytes)));
  if (o.max_record_bytes <= 0)
    throw Error("must be > 0", key_context("", "--max-record-bytes", "> 0", std::to_string(o.max_record_bytes)));
  auto tok = io::Tokenizer::from_file(o.tokenizer);
  auto files = expand_inputs(o.inputs);
  fs::create_directories(o.output_dir);

  TokenizeStats st;
  TokenizeProgress prog;
  for (const auto& f : files) prog.bytes_total += static_cast<int64_t>(fs::file_size(f));
  const int threads =
      o.num_threads > 0 ? o.num_threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int64_t done_bytes = 0;
  const TextReader* current = nullptr;
  const JsonlReader* current_jsonl = nullptr;
  auto report = [&] {
    prog.bytes_read = done_bytes + (current ? current->bytes_read() : current_jsonl ? current_jsonl->bytes_read() : 0);
    prog.documents = st.documents;
    prog.tokens = st.tokens;
    if (progress) progress(prog);
  };
  Encoder enc(o, *tok, st, threads, report);

  for (const auto& f : files) {
    const std::string base = ends_with(f, ".zst") ? f.substr(0, f.size() - 4) : f;
    if (ends_with(base, ".jsonl") || ends_with(base, ".json")) {
      JsonlReader r(f, static_cast<size_t>(o.max_record_bytes));
      current_jsonl = &r;
      r.on_bad_record([&](int64_t line, const std::string& why) { enc.bad({f, line}, why); });
      JsonRecord rec;
      while (r.next(rec)) {
        const Origin at{f, rec.line()};
        std::string text;
        try {
          if (!o.text_template.empty()) {
            text = rec.render(o.text_template);
          } else if (!rec.has(o.field)) {
            enc.bad(at, "missing string field '" + o.field + "'");
            continue;
          } else {
            text = rec.string(o.field);  // throws naming the field when it is not a string
          }
        } catch (const Error& e) {
          if (o.strict) throw;
          enc.bad(at, (e.context().key.empty() ? "" : e.context().key + ": ") + e.message());
          continue;
        }
        enc.add(std::move(text), at);
      }
      done_bytes += r.bytes_read();
      current_jsonl = nullptr;
    } else {
      TextReader r(f);
      current = &r;
      read_plain_text(r, o.text_unit, enc);
      done_bytes += r.bytes_read();
      current = nullptr;
    }
    report();
  }
  enc.finish();
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  if (st.documents == 0 && !o.allow_empty) {
    ErrorContext c;
    std::string why = "no input text";
    if (!st.bad.empty()) {
      const BadRecord& first = st.bad.front();
      c.file = first.line ? str(first.file, ":", first.line) : first.file;
      why = str("all ", st.bad_records, " records were bad (this one: ", st.bad.front().reason, ")");
    }
    throw Error(str("no document was tokenized: ", why,
                    "; fix the input, or pass --allow-empty to accept an empty "
                    "output"),
                c);
  }

  json m;
  m["format"] = "prism token shards (docs/data-format.md)";
  m["tokenizer"] = o.tokenizer;
  m["vocab_size"] = tok->vocab_size();
  m["inputs"] = files;
  m["field"] = o.field;
  m["template"] = o.text_template;
  m["text_unit"] = o.text_unit;
  m["add_special_tokens"] = o.add_special_tokens;
  m["piece_bytes"] = o.piece_bytes;
  m["shards"] = st.shards;
  m["documents"] = st.documents;
  m["tokens"] = st.tokens;
  m["bytes"] = st.bytes;
  m["bad_records"] = st.bad_records;
  m["forced_splits"] = st.forced_splits;
  json bads = json::array();
  for (const auto& b : st.bad) bads.push_back({{"file", b.file}, {"line", b.line}, {"reason", b.reason}});
  m["first_bad_records"] = bads;
  fs::write_file_atomic(fs::join(o.output_dir, "manifest.json"), m.dump(2) + "\n");
  return st;
}

}  // namespace prism::data
