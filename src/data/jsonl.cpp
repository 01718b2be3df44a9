// TextReader / JsonlReader (prism/data/jsonl.h): buffered reads, zstd streaming, line numbers.
#include "prism/data/jsonl.h"

#include <zstd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "prism/core/error.h"
#include "prism/core/utf8.h"

namespace prism::data {

namespace {

using json = nlohmann::json;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// `file:line` (just `file` for line 0), the location prefix of every message.
ErrorContext at_line(const std::string& file, int64_t line, std::string key = {}) {
  return key_context(line > 0 ? file + ":" + std::to_string(line) : file, std::move(key));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// TextReader

struct TextReader::Impl {
  std::string path;
  bool zst = false;
  FILE* f = nullptr;
  ZSTD_DStream* ds = nullptr;
  std::vector<char> in_buf;
  ZSTD_inBuffer in{nullptr, 0, 0};
  size_t last_ret = 0;
  std::vector<char> buf;  // decoded bytes not yet returned: buf[pos, end)
  size_t pos = 0;
  int64_t raw_read = 0;
  int64_t line = 0;

  ~Impl() {
    if (f) std::fclose(f);
    if (ds) ZSTD_freeDStream(ds);
  }

  /// Replaces buf with the next decoded bytes; false at the end of the file.
  bool fill() {
    buf.clear();
    pos = 0;
    if (!zst) {
      buf.resize(1 << 20);
      const size_t n = std::fread(buf.data(), 1, buf.size(), f);
      buf.resize(n);
      raw_read += static_cast<int64_t>(n);
      if (n == 0 && std::ferror(f)) throw Error("read error", at_line(path, 0));
      return n > 0;
    }
    for (;;) {
      if (in.pos == in.size) {
        const size_t n = std::fread(in_buf.data(), 1, in_buf.size(), f);
        raw_read += static_cast<int64_t>(n);
        if (n == 0) {
          if (std::ferror(f)) throw Error("read error", at_line(path, 0));
          if (last_ret != 0) throw Error("truncated zstd stream", at_line(path, 0));
          return false;
        }
        in = {in_buf.data(), n, 0};
      }
      buf.resize(ZSTD_DStreamOutSize());
      ZSTD_outBuffer out{buf.data(), buf.size(), 0};
      last_ret = ZSTD_decompressStream(ds, &out, &in);
      if (ZSTD_isError(last_ret)) throw Error(std::string("zstd: ") + ZSTD_getErrorName(last_ret), at_line(path, 0));
      buf.resize(out.pos);
      if (out.pos > 0) return true;
    }
  }
};

TextReader::TextReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.path = path;
  m.zst = ends_with(path, ".zst");
  m.f = std::fopen(path.c_str(), "rb");
  if (!m.f) throw Error("cannot open input", at_line(path, 0));
  if (m.zst) {
    m.ds = ZSTD_createDStream();
    ZSTD_initDStream(m.ds);
    m.in_buf.resize(ZSTD_DStreamInSize());
  }
}

TextReader::~TextReader() = default;

bool TextReader::next_line(std::string& line, size_t max_bytes, bool* truncated) {
  Impl& m = *impl_;
  line.clear();
  if (truncated) *truncated = false;
  bool any = false;
  for (;;) {
    if (m.pos == m.buf.size() && !m.fill()) {
      if (any) ++m.line;
      return any;
    }
    any = true;
    auto begin = m.buf.begin() + static_cast<std::ptrdiff_t>(m.pos);
    auto nl = std::find(begin, m.buf.end(), '\n');
    const size_t room = max_bytes - std::min(max_bytes, line.size());
    const size_t take = std::min(room, static_cast<size_t>(nl - begin));
    line.append(begin, begin + static_cast<std::ptrdiff_t>(take));
    if (take < static_cast<size_t>(nl - begin) && truncated) *truncated = true;
    if (nl != m.buf.end()) {
      m.pos = static_cast<size_t>(nl - m.buf.begin()) + 1;
      ++m.line;
      return true;
    }
    m.pos = m.buf.size();
  }
}

bool TextReader::read(std::string& out, size_t n) {
  Impl& m = *impl_;
  if (m.pos == m.buf.size() && !m.fill()) return false;
  const size_t take = std::min(n, m.buf.size() - m.pos);
  out.append(m.buf.data() + m.pos, take);
  m.pos += take;
  return true;
}

const std::string& TextReader::path() const { return impl_->path; }
int64_t TextReader::line_number() const { return impl_->line; }
int64_t TextReader::bytes_read() const { return impl_->raw_read; }

// ---------------------------------------------------------------------------------------------
// JsonRecord

struct JsonRecord::Impl {
  json value;
  std::string file;
  int64_t line = 0;

  [[noreturn]] void fail(const std::string& key, const std::string& why) const {
    throw Error(why, at_line(file, line, key));
  }
  const json& at(const std::string& key) const {
    auto it = value.find(key);
    if (it == value.end() || it->is_null()) fail(key, "missing field");
    return *it;
  }
};

JsonRecord::JsonRecord() : impl_(std::make_unique<Impl>()) {}
JsonRecord::~JsonRecord() = default;
JsonRecord::JsonRecord(const JsonRecord& o) : impl_(std::make_unique<Impl>(*o.impl_)) {}
JsonRecord& JsonRecord::operator=(const JsonRecord& o) {
  *impl_ = *o.impl_;
  return *this;
}

const std::string& JsonRecord::file() const { return impl_->file; }
int64_t JsonRecord::line() const { return impl_->line; }

bool JsonRecord::has(const std::string& key) const {
  auto it = impl_->value.find(key);
  return it != impl_->value.end() && !it->is_null();
}

std::string JsonRecord::string(const std::string& key) const {
  const json& v = impl_->at(key);
  if (!v.is_string()) impl_->fail(key, "expected a string, got " + v.dump());
  return v.get<std::string>();
}

std::string JsonRecord::text(const std::string& key) const {
  const json& v = impl_->at(key);
  return v.is_string() ? v.get<std::string>() : v.dump();
}

std::string JsonRecord::render(const std::string& tmpl) const {
  std::string out;
  for (size_t i = 0; i < tmpl.size(); ++i) {
    const char c = tmpl[i];
    if (c == '{' && i + 1 < tmpl.size() && tmpl[i + 1] == '{') {
      out += '{';
      ++i;
    } else if (c == '}' && i + 1 < tmpl.size() && tmpl[i + 1] == '}') {
      out += '}';
      ++i;
    } else if (c == '{' && i + 1 < tmpl.size() && tmpl[i + 1] == '}') {
      out += "{}";  // no field has an empty name: this is LaTeX's "\boxed{}" of every study template
      ++i;
    } else if (c == '{') {
      const size_t e = tmpl.find('}', i);
      if (e == std::string::npos)
        throw Error("unclosed '{' in template", key_context("", "--template", "{field}", tmpl));
      out += text(tmpl.substr(i + 1, e - i - 1));
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

std::string JsonRecord::dump() const { return impl_->value.dump(); }

// ---------------------------------------------------------------------------------------------
// JsonlReader

JsonlReader::JsonlReader(const std::string& path, size_t max_record_bytes)
    : reader_(path), max_record_bytes_(max_record_bytes) {}
JsonlReader::~JsonlReader() = default;

void JsonlReader::on_bad_record(std::function<void(int64_t, const std::string&)> handler) {
  on_bad_ = std::move(handler);
}

bool JsonlReader::next(JsonRecord& record) {
  std::string line;
  bool truncated = false;
  while (reader_.next_line(line, max_record_bytes_, &truncated)) {
    const int64_t ln = reader_.line_number();
    std::string why;
    json value;
    if (truncated) {
      why = "record longer than " + std::to_string(max_record_bytes_) + " bytes";
    } else if (line.find_first_not_of(" \t\r") == std::string::npos) {
      continue;
    } else if (!utf8::is_valid(line)) {
      why = "invalid UTF-8";
    } else {
      try {
        value = json::parse(line);
      } catch (const json::exception& e) {
        why = std::string("invalid JSON: ") + e.what();
      }
      if (why.empty() && !value.is_object()) why = "record is not a JSON object";
    }
    if (!why.empty()) {
      if (!on_bad_) throw Error(why, at_line(reader_.path(), ln));
      on_bad_(ln, why);
      continue;
    }
    record.impl_->value = std::move(value);
    record.impl_->file = reader_.path();
    record.impl_->line = ln;
    return true;
  }
  return false;
}

const std::string& JsonlReader::path() const { return reader_.path(); }
int64_t JsonlReader::bytes_read() const { return reader_.bytes_read(); }

}  // namespace prism::data
