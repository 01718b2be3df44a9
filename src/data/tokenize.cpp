// Corpus -> token shards. Records are read sequentially (plain or zstd-compressed files, line by
// line for JSONL), encoded in chunks by a pool of threads, and written in input order, so the
// shards are identical whatever the thread count. Bad records (invalid JSON or UTF-8, missing
// field) are counted with their file and line, or abort the run with --strict.
#include "prism/data/tokenize.h"

#include <glob.h>
#include <sys/stat.h>
#include <zstd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <mutex>
#include <thread>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/data/token_shard.h"
#include "prism/io/tokenizer.h"

namespace prism::data {
namespace {

using json = nlohmann::json;

// ---- input files ------------------------------------------------------------------------------

std::vector<std::string> expand_inputs(const std::vector<std::string>& patterns) {
  std::vector<std::string> files;
  for (const auto& p : patterns) {
    glob_t g{};
    int rc = ::glob(p.c_str(), 0, nullptr, &g);
    if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
      ::globfree(&g);
      throw Error("input pattern matches no file", key_context("", "--input", "existing files", p));
    }
    if (rc != 0) {
      ::globfree(&g);
      throw Error("cannot expand input pattern", key_context("", "--input", "", p));
    }
    for (size_t i = 0; i < g.gl_pathc; ++i) files.emplace_back(g.gl_pathv[i]);
    ::globfree(&g);
  }
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  return files;
}

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

/// Reads a file (optionally zstd-compressed) as a byte stream, line by line.
class LineReader {
 public:
  explicit LineReader(const std::string& path) : path_(path), zst_(ends_with(path, ".zst")) {
    f_ = std::fopen(path.c_str(), "rb");
    if (!f_) throw Error("cannot open input", key_context(path, ""));
    if (zst_) {
      ds_ = ZSTD_createDStream();
      ZSTD_initDStream(ds_);
      in_buf_.resize(ZSTD_DStreamInSize());
    }
  }
  ~LineReader() {
    if (f_) std::fclose(f_);
    if (ds_) ZSTD_freeDStream(ds_);
  }
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  /// Next line without its '\n' (a trailing '\r' is kept: it is data). False at the end.
  bool next(std::string& line) {
    line.clear();
    for (;;) {
      auto nl = std::find(buf_.begin() + pos_, buf_.end(), '\n');
      if (nl != buf_.end()) {
        line.append(buf_.begin() + pos_, nl);
        pos_ = static_cast<size_t>(nl - buf_.begin()) + 1;
        return true;
      }
      line.append(buf_.begin() + pos_, buf_.end());
      buf_.clear();
      pos_ = 0;
      if (!fill()) return !line.empty();
    }
  }
  /// The rest of the file.
  std::string rest() {
    std::string all(buf_.begin() + pos_, buf_.end());
    buf_.clear();
    pos_ = 0;
    while (fill()) {
      all.append(buf_.begin(), buf_.end());
      buf_.clear();
    }
    return all;
  }
  int64_t bytes_read() const { return raw_read_; }

 private:
  bool fill() {
    if (!zst_) {
      buf_.resize(1 << 20);
      size_t n = std::fread(buf_.data(), 1, buf_.size(), f_);
      buf_.resize(n);
      raw_read_ += static_cast<int64_t>(n);
      if (n == 0 && std::ferror(f_)) throw Error("read error", key_context(path_, ""));
      return n > 0;
    }
    for (;;) {
      if (in_.pos == in_.size) {
        size_t n = std::fread(in_buf_.data(), 1, in_buf_.size(), f_);
        raw_read_ += static_cast<int64_t>(n);
        if (n == 0) {
          if (last_ret_ != 0) throw Error("truncated zstd stream", key_context(path_, ""));
          return false;
        }
        in_ = {in_buf_.data(), n, 0};
      }
      buf_.resize(ZSTD_DStreamOutSize());
      ZSTD_outBuffer out{buf_.data(), buf_.size(), 0};
      last_ret_ = ZSTD_decompressStream(ds_, &out, &in_);
      if (ZSTD_isError(last_ret_))
        throw Error(std::string("zstd: ") + ZSTD_getErrorName(last_ret_), key_context(path_, ""));
      buf_.resize(out.pos);
      if (out.pos > 0) return true;
    }
  }

  std::string path_;
  bool zst_;
  FILE* f_ = nullptr;
  ZSTD_DStream* ds_ = nullptr;
  std::vector<char> in_buf_;
  ZSTD_inBuffer in_{nullptr, 0, 0};
  size_t last_ret_ = 0;
  std::vector<char> buf_;
  size_t pos_ = 0;
  int64_t raw_read_ = 0;
};

// ---- records ----------------------------------------------------------------------------------

struct Record {
  std::string text;
};

std::string scalar_text(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

std::string render(const std::string& tmpl, const json& obj) {
  std::string out;
  for (size_t i = 0; i < tmpl.size(); ++i) {
    char c = tmpl[i];
    if (c == '{' && i + 1 < tmpl.size() && tmpl[i + 1] == '{') {
      out += '{';
      ++i;
    } else if (c == '}' && i + 1 < tmpl.size() && tmpl[i + 1] == '}') {
      out += '}';
      ++i;
    } else if (c == '{') {
      size_t e = tmpl.find('}', i);
      if (e == std::string::npos) throw Error("unclosed '{' in template", key_context("", "--template", "{field}", tmpl));
      std::string key = tmpl.substr(i + 1, e - i - 1);
      auto it = obj.find(key);
      if (it == obj.end() || it->is_null()) throw Error("missing field '" + key + "'");
      out += scalar_text(*it);
      i = e;
    } else if (c == '\\' && i + 1 < tmpl.size() && (tmpl[i + 1] == 'n' || tmpl[i + 1] == 't')) {
      out += tmpl[i + 1] == 'n' ? '\n' : '\t';  // shells pass "\n" literally: accept the escape
      ++i;
    } else {
      out += c;
    }
  }
  return out;
}

struct Collector {
  const TokenizeOptions& opt;
  TokenizeStats& stats;
  void bad(const std::string& file, int64_t line, const std::string& why) {
    if (opt.strict) {
      ErrorContext c;
      c.file = file;
      throw Error((line ? "line " + std::to_string(line) + ": " : std::string()) + why + " (--strict)", c);
    }
    ++stats.bad_records;
    if (stats.bad.size() < 100) stats.bad.push_back({file, line, why});
  }
};

// ---- output -----------------------------------------------------------------------------------

class ShardSink {
 public:
  ShardSink(const TokenizeOptions& o, int64_t vocab) : o_(o), vocab_(vocab) {}
  void add(const std::vector<int32_t>& ids, TokenizeStats& st) {
    if (!w_) {
      char name[64];
      std::snprintf(name, sizeof name, "%s-%05d.tok", o_.shard_prefix.c_str(), next_++);
      path_ = fs::join(o_.output_dir, name);
      w_ = std::make_unique<ShardWriter>(path_, vocab_);
    }
    w_->add_document(ids);
    if (w_->num_tokens() >= o_.shard_tokens) close(st);
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

}  // namespace

bool is_valid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07;
    else return false;
    if (i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

std::string render_template(const std::string& tmpl, const std::string& json_object_text) {
  json j = json::parse(json_object_text);
  if (!j.is_object()) throw Error("render_template: expected a JSON object");
  return render(tmpl, j);
}

TokenizeStats tokenize_corpus(const TokenizeOptions& o, const std::function<void(const TokenizeProgress&)>& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.output_dir.empty()) throw Error("no output directory", key_context("", "--output"));
  if (o.text_unit != "file" && o.text_unit != "line" && o.text_unit != "paragraph")
    throw Error("unknown text unit", key_context("", "--text-unit", "file, line or paragraph", o.text_unit));
  if (o.shard_tokens <= 0) throw Error("shard size must be > 0", key_context("", "--shard-tokens", "> 0", std::to_string(o.shard_tokens)));
  auto tok = io::Tokenizer::from_file(o.tokenizer);
  auto files = expand_inputs(o.inputs);
  fs::create_directories(o.output_dir);

  TokenizeStats st;
  Collector bad{o, st};
  ShardSink sink(o, tok->vocab_size());
  TokenizeProgress prog;
  for (const auto& f : files) prog.bytes_total += static_cast<int64_t>(fs::file_size(f));
  const int threads = o.num_threads > 0 ? o.num_threads : std::max(1u, std::thread::hardware_concurrency());

  std::vector<Record> chunk;
  size_t chunk_bytes = 0;
  std::vector<std::vector<int32_t>> encoded;
  auto flush = [&] {
    if (chunk.empty()) return;
    encoded.assign(chunk.size(), {});
    std::vector<std::thread> pool;
    std::exception_ptr err;
    std::mutex err_mu;
    const size_t nt = std::min<size_t>(static_cast<size_t>(threads), chunk.size());
    for (size_t t = 0; t < nt; ++t) {
      pool.emplace_back([&, t] {
        try {
          for (size_t i = t; i < chunk.size(); i += nt) encoded[i] = tok->encode(chunk[i].text, o.add_special_tokens);
        } catch (...) {
          std::lock_guard<std::mutex> lk(err_mu);
          if (!err) err = std::current_exception();
        }
      });
    }
    for (auto& th : pool) th.join();
    if (err) std::rethrow_exception(err);
    for (size_t i = 0; i < chunk.size(); ++i) {
      if (encoded[i].empty()) continue;  // empty text: nothing to learn from
      sink.add(encoded[i], st);
      st.documents += 1;
      st.tokens += static_cast<int64_t>(encoded[i].size());
      st.bytes += static_cast<int64_t>(chunk[i].text.size());
    }
    chunk.clear();
    chunk_bytes = 0;
    prog.documents = st.documents;
    prog.tokens = st.tokens;
    if (progress) progress(prog);
  };
  auto push = [&](std::string text) {
    chunk_bytes += text.size();
    chunk.push_back({std::move(text)});
    if (chunk.size() >= 4096 || chunk_bytes >= (16u << 20)) flush();
  };

  int64_t done_bytes = 0;
  for (const auto& f : files) {
    LineReader r(f);
    std::string base = ends_with(f, ".zst") ? f.substr(0, f.size() - 4) : f;
    const bool jsonl = ends_with(base, ".jsonl") || ends_with(base, ".json");
    std::string line;
    if (jsonl) {
      int64_t ln = 0;
      while (r.next(line)) {
        ++ln;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        if (!is_valid_utf8(line)) {
          bad.bad(f, ln, "invalid UTF-8");
          continue;
        }
        json j;
        try {
          j = json::parse(line);
        } catch (const json::exception& e) {
          bad.bad(f, ln, std::string("invalid JSON: ") + e.what());
          continue;
        }
        if (!j.is_object()) {
          bad.bad(f, ln, "record is not a JSON object");
          continue;
        }
        try {
          if (!o.text_template.empty()) {
            push(render(o.text_template, j));
          } else {
            auto it = j.find(o.field);
            if (it == j.end() || !it->is_string()) {
              bad.bad(f, ln, "missing string field '" + o.field + "'");
              continue;
            }
            push(it->get<std::string>());
          }
        } catch (const Error& e) {
          if (o.strict) throw;
          bad.bad(f, ln, e.message());
        }
        prog.bytes_read = done_bytes + r.bytes_read();
      }
    } else if (o.text_unit == "line") {
      int64_t ln = 0;
      while (r.next(line)) {
        ++ln;
        if (line.empty()) continue;
        if (!is_valid_utf8(line)) bad.bad(f, ln, "invalid UTF-8");
        else push(line);
      }
    } else {
      std::string all = r.rest();
      if (!is_valid_utf8(all)) {
        bad.bad(f, 0, "invalid UTF-8");
      } else if (o.text_unit == "file") {
        push(std::move(all));
      } else {  // paragraphs: split on blank lines
        size_t b = 0;
        while (b < all.size()) {
          size_t e = all.find("\n\n", b);
          if (e == std::string::npos) e = all.size();
          std::string para = all.substr(b, e - b);
          if (para.find_first_not_of(" \t\r\n") != std::string::npos) push(std::move(para));
          b = e + 2;
        }
      }
    }
    done_bytes += r.bytes_read();
    prog.bytes_read = done_bytes;
  }
  flush();
  sink.close(st);
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  json m;
  m["format"] = "prism token shards (docs/data-format.md)";
  m["tokenizer"] = o.tokenizer;
  m["vocab_size"] = tok->vocab_size();
  m["inputs"] = files;
  m["field"] = o.field;
  m["template"] = o.text_template;
  m["text_unit"] = o.text_unit;
  m["add_special_tokens"] = o.add_special_tokens;
  m["shards"] = st.shards;
  m["documents"] = st.documents;
  m["tokens"] = st.tokens;
  m["bytes"] = st.bytes;
  m["bad_records"] = st.bad_records;
  json bads = json::array();
  for (const auto& b : st.bad) bads.push_back({{"file", b.file}, {"line", b.line}, {"reason", b.reason}});
  m["first_bad_records"] = bads;
  fs::write_file_atomic(fs::join(o.output_dir, "manifest.json"), m.dump(2) + "\n");
  return st;
}

}  // namespace prism::data
