// Owns prism::io::Tokenizer: a re-implementation of Hugging Face `tokenizers` for BPE models
// (tokenizer.json), encoding and decoding id-for-id and byte-for-byte as the Rust library does.
//
// Key decisions:
// - The pipeline mirrors tokenizers' own structure (AddedVocabulary::extract_and_normalize ->
//   pre-tokenizers -> BPE::tokenize_with_cache -> post-processor; decoders chained with
//   decode_chain) because exactness comes from copying its order of operations, not from
//   "equivalent" shortcuts. Each step cites the Rust function it mirrors.
// - Regexes run on PCRE2 (UTF|UCP, JIT). HF uses Oniguruma, whose Unicode `\s` is 0009-000D,
//   0085, Zl, Zp, Zs; PCRE2-UCP `\s` also matches U+180E. So patterns are translated: `\s` ->
//   [\t\n\x0B\f\r\x85\p{Z}] (build-and-libtorch.md §5), `\v` -> VT, `\w` -> Oniguruma's word class.
// - The input is UTF-8-validated once per encode; PCRE2 then runs with NO_UTF_CHECK (its own
//   check re-scans the whole subject on every match call: quadratic over find_iter).
// - BPE merging is tokenizers' word.rs merge_all (min-heap on (rank, pos), stale entries
//   skipped), so tie-breaking is identical. Results per pre-token are cached in a sharded,
//   mutex-protected map: encode() is const and callable from many threads.
// - Anything we do not implement (other models, normalizers, pre-tokenizers, decoders,
//   truncation, dropout, subword prefixes) is refused at load with an error naming the component
//   and the file, never silently approximated.
// Known approximations (documented, not hit by the fixtures): Metaspace prepend_scheme "first"
// tests "original offset 0" as "first piece of the input that starts at offset 0"; Unicode
// property tables are PCRE2's (10.42) rather than Oniguruma's.
#include "prism/io/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <shared_mutex>
#include <unordered_map>
#include <unordered_set>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/core/utf8.h"

namespace prism::io {

using nlohmann::json;

namespace {

// ------------------------------------------------------------------------------------------------
// UTF-8 helpers

/// Length of a valid sequence from its lead byte (input already validated).
inline size_t utf8_len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

inline uint32_t decode_cp(const char* p, size_t n) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  switch (n) {
    case 1: return u[0];
    case 2: return ((u[0] & 0x1Fu) << 6) | (u[1] & 0x3Fu);
    case 3: return ((u[0] & 0x0Fu) << 12) | ((u[1] & 0x3Fu) << 6) | (u[2] & 0x3Fu);
    default: return ((u[0] & 0x07u) << 18) | ((u[1] & 0x3Fu) << 12) | ((u[2] & 0x3Fu) << 6) | (u[3] & 0x3Fu);
  }
}

inline void append_cp(std::string& s, uint32_t cp) {
  if (cp < 0x80) {
    s += char(cp);
  } else if (cp < 0x800) {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += char(0xE0 | (cp >> 12));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  } else {
    s += char(0xF0 | (cp >> 18));
    s += char(0x80 | ((cp >> 12) & 0x3F));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  }
}

/// Rust's String::from_utf8_lossy: one U+FFFD per maximal invalid subpart.
std::string utf8_lossy(const std::string& b) {
  std::string out;
  out.reserve(b.size());
  size_t i = 0;
  while (i < b.size()) {
    size_t m = 1;
    size_t l = utf8::sequence_length(b, i, &m);
    if (l) {
      out.append(b, i, l);
      i += l;
    } else {
      out += "\xEF\xBF\xBD";
      i += m;
    }
  }
  return out;
}

/// Rust char::is_whitespace (Unicode White_Space). U+180E is not in it.
bool is_rust_whitespace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

std::vector<uint32_t> to_cps(std::string_view s) {
  std::vector<uint32_t> v;
  for (size_t i = 0; i < s.size();) {
    size_t l = utf8_len(static_cast<unsigned char>(s[i]));
    v.push_back(decode_cp(s.data() + i, l));
    i += l;
  }
  return v;
}

// GPT-2 bytes_to_unicode (byte_level.rs bytes_char).
struct ByteTables {
  std::array<std::string, 256> byte_to_str;
  std::unordered_map<uint32_t, uint8_t> cp_to_byte;
  ByteTables() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      uint32_t cp = keep ? uint32_t(b) : uint32_t(256 + n++);
      append_cp(byte_to_str[b], cp);
      cp_to_byte[cp] = uint8_t(b);
    }
  }
};
const ByteTables& byte_tables() {
  static const ByteTables t;
  return t;
}

// ------------------------------------------------------------------------------------------------
// Regex (PCRE2)

/// Oniguruma -> PCRE2 translation of the classes whose meaning differs (see file comment).
std::string translate_pattern(const std::string& p) {
  static const char* kSpace = "\\t\\n\\x0B\\f\\r\\x{85}\\p{Z}";
  static const char* kWord = "\\p{L}\\p{M}\\p{Nd}\\p{Pc}";
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char d = p[++i];
      if (d == 's') {
        out += in_class ? std::string(kSpace) : "[" + std::string(kSpace) + "]";
      } else if (d == 'S' && !in_class) {
        out += "[^" + std::string(kSpace) + "]";
      } else if (d == 'w') {
        out += in_class ? std::string(kWord) : "[" + std::string(kWord) + "]";
      } else if (d == 'W' && !in_class) {
        out += "[^" + std::string(kWord) + "]";
      } else if (d == 'v') {
        out += "\\x0B";
      } else {
        out += c;
        out += d;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];  // literal ']' first in a class
      continue;
    }
    if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {  // POSIX [:alpha:]
      size_t e = p.find(":]", i + 2);
      if (e != std::string::npos) {
        out.append(p, i, e + 2 - i);
        i = e + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};

class Regex {
 public:
  /// `rust_syntax`: the pattern is already PCRE2 text (the Rust-`regex`-crate patterns below).
  Regex(const std::string& pattern, const std::string& source, const std::string& key, bool rust_syntax = false) {
    std::string t = rust_syntax ? pattern : translate_pattern(pattern);
    int err = 0;
    PCRE2_SIZE off = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(t.data()), t.size(), PCRE2_UTF | PCRE2_UCP, &err, &off,
                          nullptr);
    if (!code_) {
      PCRE2_UCHAR buf[256];
      pcre2_get_error_message(err, buf, sizeof(buf));
      throw Error(str("regex does not compile with PCRE2: ", reinterpret_cast<char*>(buf), " at offset ", off),
                  key_context(source, key, "", "'" + pattern + "'"));
    }
    jit_ = pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  /// All non-overlapping matches [start, end) like onig's find_iter (empty match: advance one char).
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
    thread_local std::unique_ptr<pcre2_match_data, MatchDataDeleter> md(pcre2_match_data_create(1, nullptr));
    const auto* subj = reinterpret_cast<PCRE2_SPTR>(s.data());
    size_t pos = 0;
    while (pos <= s.size()) {
      int rc = jit_ ? pcre2_jit_match(code_, subj, s.size(), pos, 0, md.get(), nullptr) : PCRE2_ERROR_JIT_STACKLIMIT;
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT)  // interpreter keeps its frames on the heap
        rc = pcre2_match(code_, subj, s.size(), pos, PCRE2_NO_UTF_CHECK, md.get(), nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR buf[256];
        pcre2_get_error_message(rc, buf, sizeof(buf));
        throw Error(str("tokenizer regex match failed: ", reinterpret_cast<char*>(buf)));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
      size_t a = ov[0], b = ov[1];
      out.emplace_back(a, b);
      if (b > a) {
        pos = b;
      } else {
        if (b >= s.size()) break;
        pos = b + utf8_len(static_cast<unsigned char>(s[b]));
      }
    }
  }

 private:
  pcre2_code* code_ = nullptr;
  bool jit_ = false;
};

// ------------------------------------------------------------------------------------------------
// Pieces of the input (tokenizers' PreTokenizedString splits)

struct Piece {
  std::string text;
  int32_t id = -1;        ///< >= 0: an added token, already final
  bool at_origin = false;  ///< starts at original offset 0 (Metaspace prepend_scheme "first")
};

/// A Pattern's find_matches: (start, end, is_match) covering the whole string.
using Spans = std::vector<std::tuple<size_t, size_t, bool>>;

Spans spans_from_matches(const std::vector<std::pair<size_t, size_t>>& m, size_t n, bool invert) {
  Spans sp;
  if (n == 0) {
    sp.emplace_back(0, 0, false);
    return sp;
  }
  size_t prev = 0;
  for (auto [a, b] : m) {
    if (prev != a) sp.emplace_back(prev, a, invert);
    sp.emplace_back(a, b, !invert);
    prev = b;
  }
  if (prev != n) sp.emplace_back(prev, n, invert);
  return sp;
}

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

/// normalizer.rs NormalizedString::split: returns the kept [start, end) ranges.
std::vector<std::pair<size_t, size_t>> apply_behavior(const Spans& sp, Behavior b) {
  std::vector<std::pair<size_t, size_t>> r;
  switch (b) {
    case Behavior::kIsolated:
      for (auto& [a, e, m] : sp) r.emplace_back(a, e);
      break;
    case Behavior::kRemoved:
      for (auto& [a, e, m] : sp)
        if (!m) r.emplace_back(a, e);
      break;
    case Behavior::kContiguous: {
      bool prev = false;
      for (auto& [a, e, m] : sp) {
        if (m == prev && !r.empty())
          r.back().second = e;
        else
          r.emplace_back(a, e);
        prev = m;
      }
      break;
    }
    case Behavior::kMergedWithPrevious: {
      bool prev = false;
      for (auto& [a, e, m] : sp) {
        if (m && !prev && !r.empty())
          r.back().second = e;
        else
          r.emplace_back(a, e);
        prev = m;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool prev = false;
      for (auto it = sp.rbegin(); it != sp.rend(); ++it) {
        auto& [a, e, m] = *it;
        if (m && !prev && !r.empty())
          r.back().first = a;
        else
          r.emplace_back(a, e);
        prev = m;
      }
      std::reverse(r.begin(), r.end());
      break;
    }
  }
  return r;
}

/// Splits `p` into the kept ranges; empty results are dropped (PreTokenizedString::split).
void emit_ranges(const Piece& p, const std::vector<std::pair<size_t, size_t>>& ranges, std::vector<Piece>& out) {
  for (auto [a, e] : ranges) {
    if (e <= a) continue;
    Piece q;
    q.text = p.text.substr(a, e - a);
    q.at_origin = p.at_origin && a == 0;
    out.push_back(std::move(q));
  }
}

/// Literal (SplitPattern::String / char) matches, non-overlapping left to right.
std::vector<std::pair<size_t, size_t>> find_literal(std::string_view s, const std::string& lit) {
  std::vector<std::pair<size_t, size_t>> m;
  if (lit.empty()) return m;
  for (size_t pos = s.find(lit); pos != std::string_view::npos; pos = s.find(lit, pos + lit.size()))
    m.emplace_back(pos, pos + lit.size());
  return m;
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  std::string out;
  size_t prev = 0;
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + from.size())) {
    out.append(s, prev, pos - prev);
    out += to;
    prev = pos + from.size();
  }
  out.append(s, prev, std::string::npos);
  return out;
}

/// A String or Regex pattern as stored in tokenizer.json ({"String": ..} / {"Regex": ..}).
struct Pattern {
  std::string literal;
  std::string regex_source;  // the Regex's pattern as written in tokenizer.json (split safety)
  std::unique_ptr<Regex> regex;
  void find(std::string_view s, std::vector<std::pair<size_t, size_t>>& m) const {
    if (regex)
      regex->find_all(s, m);
    else
      m = find_literal(s, literal);
  }
};

Pattern parse_pattern(const json& j, const std::string& src, const std::string& key) {
  Pattern p;
  if (j.is_object() && j.contains("String") && j["String"].is_string()) {
    p.literal = j["String"].get<std::string>();
  } else if (j.is_object() && j.contains("Regex") && j["Regex"].is_string()) {
    p.regex_source = j["Regex"].get<std::string>();
    p.regex = std::make_unique<Regex>(p.regex_source, src, key);
  } else {
    throw Error("pattern must be {\"String\": ...} or {\"Regex\": ...}", key_context(src, key, "", j.dump()));
  }
  return p;
}

// ------------------------------------------------------------------------------------------------
// JSON access with errors that name the file and key path

std::string jtype(const json& j, const std::string& src, const std::string& key) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    throw Error("component has no string \"type\"", key_context(src, key + ".type", "a type name", j.dump().substr(0, 80)));
  return j["type"].get<std::string>();
}

template <typename T>
T jget(const json& j, const char* name, T dflt) {
  if (!j.is_object() || !j.contains(name) || j[name].is_null()) return dflt;
  return j[name].get<T>();
}

[[noreturn]] void unsupported(const std::string& what, const std::string& type, const std::string& src,
                              const std::string& key, const std::string& supported) {
  throw Error(what + " type '" + type + "' is not supported", key_context(src, key, "one of " + supported, "'" + type + "'"));
}

// ------------------------------------------------------------------------------------------------
// Normalizers (normalizers/*.rs), string -> string on one piece

struct Normalizer {
  enum Kind { kPrepend, kReplace, kStrip, kSequence } kind;
  std::string a, b;  // Prepend: a; Replace: content b
  Pattern pattern;
  bool left = false, right = false;
  std::vector<std::unique_ptr<Normalizer>> seq;

  std::string apply(std::string s) const {
    switch (kind) {
      case kPrepend:
        return s.empty() ? s : a + s;
      case kReplace: {
        if (!pattern.regex) return replace_all(s, pattern.literal, b);
        std::vector<std::pair<size_t, size_t>> m;
        pattern.regex->find_all(s, m);
        std::string out;
        size_t prev = 0;
        for (auto [x, y] : m) {
          out.append(s, prev, x - prev);
          out += b;
          prev = y;
        }
        out.append(s, prev, std::string::npos);
        return out;
      }
      case kStrip: {
        auto cps = to_cps(s);
        size_t i = 0, j = cps.size();
        if (left)
          while (i < j && is_rust_whitespace(cps[i])) ++i;
        if (right)
          while (j > i && is_rust_whitespace(cps[j - 1])) --j;
        std::string out;
        for (size_t k = i; k < j; ++k) append_cp(out, cps[k]);
        return out;
      }
      case kSequence:
        for (auto& n : seq) s = n->apply(std::move(s));
        return s;
    }
    return s;
  }
};

std::unique_ptr<Normalizer> parse_normalizer(const json& j, const std::string& src, const std::string& key) {
  auto n = std::make_unique<Normalizer>();
  std::string t = jtype(j, src, key);
  if (t == "Prepend") {
    n->kind = Normalizer::kPrepend;
    n->a = j.at("prepend").get<std::string>();
  } else if (t == "Replace") {
    n->kind = Normalizer::kReplace;
    n->pattern = parse_pattern(j.at("pattern"), src, key + ".pattern");
    n->b = j.at("content").get<std::string>();
  } else if (t == "Strip") {
    n->kind = Normalizer::kStrip;
    n->left = jget<bool>(j, "strip_left", false);
    n->right = jget<bool>(j, "strip_right", false);
  } else if (t == "Sequence") {
    n->kind = Normalizer::kSequence;
    const json& arr = j.at("normalizers");
    for (size_t i = 0; i < arr.size(); ++i)
      n->seq.push_back(parse_normalizer(arr[i], src, key + ".normalizers[" + std::to_string(i) + "]"));
  } else {
    unsupported("normalizer", t, src, key + ".type", "Prepend, Replace, Strip, Sequence");
  }
  return n;
}

// ------------------------------------------------------------------------------------------------
// Pre-tokenizers (pre_tokenizers/*.rs)

// Rust `regex` crate classes (Whitespace pre-tokenizer, single_word checks use that crate, not
// Oniguruma): \w = Alphabetic + M + Nd + Pc + Join_Control, \s = White_Space.
#define PRISM_RUST_W "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}"
#define PRISM_RUST_S "\\t\\n\\x0B\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
const char* kRustWhitespacePattern = "[" PRISM_RUST_W "]+|[^" PRISM_RUST_W PRISM_RUST_S "]+";
const char* kRustWordChar = "^[" PRISM_RUST_W "]";
#undef PRISM_RUST_W
#undef PRISM_RUST_S

const char* kGpt2Pattern = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

struct PreTokenizer {
  enum Kind { kByteLevel, kSplit, kMetaspace, kDigits, kWhitespace, kWhitespaceSplit, kSequence } kind;
  bool add_prefix_space = false, use_regex = true;  // ByteLevel
  Pattern pattern;                                  // Split / ByteLevel regex / Whitespace / Digits
  Behavior behavior = Behavior::kIsolated;
  bool invert = false;
  std::string replacement;                          // Metaspace
  enum Scheme { kAlways, kFirst, kNever } scheme = kAlways;
  bool split = true;
  std::vector<std::unique_ptr<PreTokenizer>> seq;

  void split_pattern(const Piece& p, std::vector<Piece>& out) const {
    std::vector<std::pair<size_t, size_t>> m;
    pattern.find(p.text, m);
    emit_ranges(p, apply_behavior(spans_from_matches(m, p.text.size(), invert), behavior), out);
  }

  /// Transforms the non-token pieces of `in`; added-token pieces pass through.
  void apply(std::vector<Piece>& pieces) const {
    if (kind == kSequence) {
      for (auto& s : seq) s->apply(pieces);
      return;
    }
    std::vector<Piece> out;
    out.reserve(pieces.size() * 2);
    for (auto& p : pieces) {
      if (p.id >= 0) {
        out.push_back(std::move(p));
        continue;
      }
      switch (kind) {
        case kByteLevel: {
          if (add_prefix_space && (p.text.empty() || p.text[0] != ' ')) p.text.insert(0, " ");
          size_t first = out.size();
          if (use_regex)
            split_pattern(p, out);
          else if (!p.text.empty())
            out.push_back(std::move(p));
          const auto& bt = byte_tables();
          for (size_t i = first; i < out.size(); ++i) {
            std::string mapped;
            mapped.reserve(out[i].text.size() * 2);
            for (unsigned char c : out[i].text) mapped += bt.byte_to_str[c];
            out[i].text = std::move(mapped);
          }
          break;
        }
        case kSplit:
        case kDigits:
        case kWhitespace:
          split_pattern(p, out);
          break;
        case kWhitespaceSplit: {
          std::vector<std::pair<size_t, size_t>> m;
          for (size_t i = 0; i < p.text.size();) {
            size_t l = utf8_len(static_cast<unsigned char>(p.text[i]));
            if (is_rust_whitespace(decode_cp(p.text.data() + i, l))) m.emplace_back(i, i + l);
            i += l;
          }
          emit_ranges(p, apply_behavior(spans_from_matches(m, p.text.size(), false), Behavior::kRemoved), out);
          break;
        }
        case kMetaspace: {
          p.text = replace_all(p.text, " ", replacement);
          bool starts = p.text.compare(0, replacement.size(), replacement) == 0;
          if ((scheme == kAlways && !starts) || (scheme == kFirst && !starts && p.at_origin))
            p.text.insert(0, replacement);
          if (split) {
            auto m = find_literal(p.text, replacement);
            emit_ranges(p, apply_behavior(spans_from_matches(m, p.text.size(), false), Behavior::kMergedWithNext), out);
          } else if (!p.text.empty()) {
            out.push_back(std::move(p));
          }
          break;
        }
        case kSequence:
          break;
      }
    }
    pieces = std::move(out);
  }
};

Behavior parse_behavior(const json& j, const std::string& src, const std::string& key) {
  std::string b = j.is_string() ? j.get<std::string>() : "";
  if (b == "Removed") return Behavior::kRemoved;
  if (b == "Isolated") return Behavior::kIsolated;
  if (b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::kMergedWithNext;
  if (b == "Contiguous") return Behavior::kContiguous;
  throw Error("unknown split behavior",
              key_context(src, key, "Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous", j.dump()));
}

std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const json& j, const std::string& src, const std::string& key) {
  auto p = std::make_unique<PreTokenizer>();
  std::string t = jtype(j, src, key);
  if (t == "ByteLevel") {
    p->kind = PreTokenizer::kByteLevel;
    p->add_prefix_space = jget<bool>(j, "add_prefix_space", true);
    p->use_regex = jget<bool>(j, "use_regex", true);
    if (p->use_regex) {
      p->pattern.regex_source = kGpt2Pattern;
      p->pattern.regex = std::make_unique<Regex>(kGpt2Pattern, src, key);
    }
  } else if (t == "Split") {
    p->kind = PreTokenizer::kSplit;
    p->pattern = parse_pattern(j.at("pattern"), src, key + ".pattern");
    p->behavior = parse_behavior(j.at("behavior"), src, key + ".behavior");
    p->invert = jget<bool>(j, "invert", false);
  } else if (t == "Metaspace") {
    p->kind = PreTokenizer::kMetaspace;
    p->replacement = jget<std::string>(j, "replacement", "\xE2\x96\x81");
    std::string s = jget<std::string>(j, "prepend_scheme", "");
    if (s.empty()) s = jget<bool>(j, "add_prefix_space", true) ? "always" : "never";  // pre-0.19 files
    if (s == "always") p->scheme = PreTokenizer::kAlways;
    else if (s == "first") p->scheme = PreTokenizer::kFirst;
    else if (s == "never") p->scheme = PreTokenizer::kNever;
    else throw Error("unknown Metaspace prepend_scheme", key_context(src, key + ".prepend_scheme", "always, first or never", s));
    p->split = jget<bool>(j, "split", true);
  } else if (t == "Digits") {
    p->kind = PreTokenizer::kDigits;
    p->pattern.regex = std::make_unique<Regex>("\\p{N}", src, key);
    p->behavior = jget<bool>(j, "individual_digits", false) ? Behavior::kIsolated : Behavior::kContiguous;
  } else if (t == "Whitespace") {
    p->kind = PreTokenizer::kWhitespace;
    p->pattern.regex = std::make_unique<Regex>(kRustWhitespacePattern, src, key, true);
    p->behavior = Behavior::kRemoved;
    p->invert = true;
  } else if (t == "WhitespaceSplit") {
    p->kind = PreTokenizer::kWhitespaceSplit;
  } else if (t == "Sequence") {
    p->kind = PreTokenizer::kSequence;
    const json& arr = j.at("pretokenizers");
    for (size_t i = 0; i < arr.size(); ++i)
      p->seq.push_back(parse_pre_tokenizer(arr[i], src, key + ".pretokenizers[" + std::to_string(i) + "]"));
  } else {
    unsupported("pre_tokenizer", t, src, key + ".type",
                "ByteLevel, Split, Metaspace, Digits, Whitespace, WhitespaceSplit, Sequence");
  }
  return p;
}

// ------------------------------------------------------------------------------------------------
// Split points (Tokenizer::split_point): places where the pipeline provably splits anyway, so a
// long text encoded in two parts gives the ids of encoding it whole.
//
// Two kinds of candidate point p (bytes of the raw text):
//   kAfterNewline: text[p-1] == '\n', text[p] is an ASCII letter and text[p-2] is printable,
//                  non-space ASCII (so the newline is a whitespace run of its own);
//   kBeforeSpace:  text[p-1] and text[p+1] are ASCII letters and text[p] == ' ' (the second part
//                  starts with the space).
// Which kinds are exact is decided once per tokenizer from its components:
//  - no normalizer (any normalizer is refused: Prepend adds to each part, Strip trims each part);
//  - the pre-tokenizer chain must contain a splitter known to cut at p whatever came before it:
//    ByteLevel's GPT-2 regex, a Split with the GPT-2 / Llama-3 / Qwen2 regex (their alternatives
//    cannot contain a letter after '\n' or a space after a letter, and have no look-behind),
//    Whitespace, WhitespaceSplit, or Metaspace(split) (kBeforeSpace only: it splits before every
//    space). Before that splitter only position-local components may run (Digits); after it, the
//    pieces of both runs are identical, except that the second run's first piece counts as the
//    text's origin: Metaspace(prepend_scheme first) and ByteLevel(add_prefix_space) as the first
//    splitter then need the part to start with a space (kBeforeSpace);
//  - added tokens: none may contain a point (a '\n' before a letter, a letter-space-letter), and
//    lstrip / rstrip / single_word tokens that could reach across p disable that kind.
// The test (TokenizerSplit.*) holds every fixture tokenizer to the un-split encoding.
enum SplitKinds : unsigned { kNoSplit = 0, kAfterNewline = 1, kBeforeSpace = 2, kAnySplit = 3 };

const char* kLlama3Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* kQwen2Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

bool is_ascii_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/// The split kinds a pre-tokenizer chain keeps exact; `split_seen`: an earlier component already
/// cut at the point.
unsigned pre_tokenizer_split_kinds(const PreTokenizer& p, bool& split_seen) {
  switch (p.kind) {
    case PreTokenizer::kSequence: {
      unsigned k = kAnySplit;
      for (const auto& q : p.seq) k &= pre_tokenizer_split_kinds(*q, split_seen);
      return k;
    }
    case PreTokenizer::kByteLevel: {
      if (!p.use_regex) return split_seen ? kAnySplit : kNoSplit;  // maps bytes before any split
      const unsigned k = p.add_prefix_space && !split_seen ? kBeforeSpace : kAnySplit;
      split_seen = true;
      return k;
    }
    case PreTokenizer::kSplit: {
      if (split_seen) return kAnySplit;
      const std::string& re = p.pattern.regex_source;
      if (p.invert || !p.pattern.regex || (re != kGpt2Pattern && re != kLlama3Pattern && re != kQwen2Pattern))
        return kNoSplit;
      split_seen = true;
      return kAnySplit;
    }
    case PreTokenizer::kWhitespace:
    case PreTokenizer::kWhitespaceSplit:
      split_seen = true;
      return kAnySplit;
    case PreTokenizer::kMetaspace: {
      if (!p.split) return split_seen ? (p.scheme == PreTokenizer::kFirst ? kBeforeSpace : kAnySplit) : kNoSplit;
      const bool first_splitter = !split_seen;
      split_seen = true;
      return first_splitter || p.scheme == PreTokenizer::kFirst ? kBeforeSpace : kAnySplit;
    }
    case PreTokenizer::kDigits:
      return kAnySplit;  // splits only around digits, which no point touches
  }
  return kNoSplit;
}

// ------------------------------------------------------------------------------------------------
// Decoders (decoders/*.rs decode_chain)

struct Decoder {
  enum Kind { kByteLevel, kMetaspace, kReplace, kByteFallback, kFuse, kStrip, kSequence } kind;
  Pattern pattern;
  std::string content;
  uint32_t replacement = 0x2581, strip_char = ' ';
  bool prepend = true;  // Metaspace prepend_scheme != never
  size_t start = 0, stop = 0;
  std::vector<std::unique_ptr<Decoder>> seq;

  void chain(std::vector<std::string>& toks) const {
    switch (kind) {
      case kByteLevel: {
        const auto& bt = byte_tables();
        std::string bytes;
        for (auto& t : toks) {
          std::string b;
          bool ok = true;
          for (size_t i = 0; i < t.size() && ok;) {
            size_t l = utf8_len(static_cast<unsigned char>(t[i]));
            auto it = bt.cp_to_byte.find(decode_cp(t.data() + i, l));
            if (it == bt.cp_to_byte.end()) ok = false;
            else b += char(it->second);
            i += l;
          }
          bytes += ok ? b : t;
        }
        toks.assign(1, utf8_lossy(bytes));
        return;
      }
      case kMetaspace:
        for (size_t k = 0; k < toks.size(); ++k) {
          std::string o;
          for (uint32_t c : to_cps(toks[k])) {
            if (c == replacement) {
              if (!(k == 0 && prepend)) o += ' ';
            } else {
              append_cp(o, c);
            }
          }
          toks[k] = std::move(o);
        }
        return;
      case kReplace:
        for (auto& t : toks) {
          if (!pattern.regex) {
            t = replace_all(t, pattern.literal, content);
            continue;
          }
          std::vector<std::pair<size_t, size_t>> m;
          pattern.regex->find_all(t, m);
          std::string out;
          size_t prev = 0;
          for (auto [x, y] : m) {
            out.append(t, prev, x - prev);
            out += content;
            prev = y;
          }
          out.append(t, prev, std::string::npos);
          t = std::move(out);
        }
        return;
      case kByteFallback: {
        std::vector<std::string> out;
        std::string pending;
        auto flush = [&] {
          if (pending.empty()) return;
          if (utf8::is_valid(pending)) {
            out.push_back(pending);
          } else {
            for (size_t i = 0; i < pending.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
          }
          pending.clear();
        };
        for (auto& t : toks) {
          int v = -1;
          if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') v = parse_hex_byte(t[3], t[4]);
          if (v >= 0) {
            pending += char(v);
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        toks = std::move(out);
        return;
      }
      case kFuse: {
        std::string all;
        for (auto& t : toks) all += t;
        toks.assign(1, std::move(all));
        return;
      }
      case kStrip:
        for (auto& t : toks) {
          auto cps = to_cps(t);
          size_t a = 0, b = cps.size();
          for (size_t i = 0; i < start && i < cps.size(); ++i) {
            if (cps[i] != strip_char) break;
            a = i + 1;
          }
          for (size_t i = 0; i < stop && i < cps.size(); ++i) {
            size_t idx = cps.size() - i - 1;
            if (cps[idx] != strip_char) break;
            b = idx;
          }
          std::string o;
          for (size_t i = a; i < b; ++i) append_cp(o, cps[i]);
          t = std::move(o);
        }
        return;
      case kSequence:
        for (auto& d : seq) d->chain(toks);
        return;
    }
  }

  /// u8::from_str_radix(&t[3..5], 16): two hex digits, or '+' and one digit.
  static int parse_hex_byte(char a, char b) {
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    if (a == '+') return hex(b);
    int x = hex(a), y = hex(b);
    return x < 0 || y < 0 ? -1 : x * 16 + y;
  }
};

uint32_t single_char(const json& j, const std::string& src, const std::string& key) {
  std::string s = j.get<std::string>();
  auto cps = to_cps(s);
  if (cps.size() != 1) throw Error("expected a single character", key_context(src, key, "one character", "'" + s + "'"));
  return cps[0];
}

std::unique_ptr<Decoder> parse_decoder(const json& j, const std::string& src, const std::string& key) {
  auto d = std::make_unique<Decoder>();
  std::string t = jtype(j, src, key);
  if (t == "ByteLevel") {
    d->kind = Decoder::kByteLevel;
  } else if (t == "Metaspace") {
    d->kind = Decoder::kMetaspace;
    d->replacement = j.contains("replacement") ? single_char(j["replacement"], src, key + ".replacement") : 0x2581;
    std::string s = jget<std::string>(j, "prepend_scheme", "");
    if (s.empty()) s = jget<bool>(j, "add_prefix_space", true) ? "always" : "never";
    d->prepend = s != "never";
  } else if (t == "Replace") {
    d->kind = Decoder::kReplace;
    d->pattern = parse_pattern(j.at("pattern"), src, key + ".pattern");
    d->content = j.at("content").get<std::string>();
  } else if (t == "ByteFallback") {
    d->kind = Decoder::kByteFallback;
  } else if (t == "Fuse") {
    d->kind = Decoder::kFuse;
  } else if (t == "Strip") {
    d->kind = Decoder::kStrip;
    d->strip_char = single_char(j.at("content"), src, key + ".content");
    d->start = jget<size_t>(j, "start", 0);
    d->stop = jget<size_t>(j, "stop", 0);
  } else if (t == "Sequence") {
    d->kind = Decoder::kSequence;
    const json& arr = j.at("decoders");
    for (size_t i = 0; i < arr.size(); ++i)
      d->seq.push_back(parse_decoder(arr[i], src, key + ".decoders[" + std::to_string(i) + "]"));
  } else {
    unsupported("decoder", t, src, key + ".type", "ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence");
  }
  return d;
}

// ------------------------------------------------------------------------------------------------
// Post-processors: only the single-sequence, add_special_tokens=true path matters for ids.

struct PostProcessor {
  std::vector<std::vector<int32_t>> parts;  ///< empty vector = the sequence ($A); others are inserted ids
  void apply(std::vector<int32_t>& ids) const {
    std::vector<int32_t> out;
    for (auto& p : parts) {
      if (p.empty())
        out.insert(out.end(), ids.begin(), ids.end());
      else
        out.insert(out.end(), p.begin(), p.end());
    }
    ids = std::move(out);
  }
};

void parse_post_processor(const json& j, const std::string& src, const std::string& key,
                          std::vector<PostProcessor>& out) {
  std::string t = jtype(j, src, key);
  if (t == "ByteLevel") return;  // offsets only
  if (t == "Sequence") {
    const json& arr = j.at("processors");
    for (size_t i = 0; i < arr.size(); ++i)
      parse_post_processor(arr[i], src, key + ".processors[" + std::to_string(i) + "]", out);
    return;
  }
  PostProcessor pp;
  if (t == "TemplateProcessing") {
    const json& single = j.at("single");
    const json& specials = j.contains("special_tokens") ? j["special_tokens"] : json::object();
    for (size_t i = 0; i < single.size(); ++i) {
      const json& piece = single[i];
      std::string k = key + ".single[" + std::to_string(i) + "]";
      if (piece.contains("Sequence")) {
        std::string id = piece["Sequence"].value("id", "A");
        if (id != "A") throw Error("single template refers to sequence " + id, key_context(src, k, "A", id));
        pp.parts.emplace_back();
      } else if (piece.contains("SpecialToken")) {
        std::string id = piece["SpecialToken"].at("id").get<std::string>();
        if (!specials.contains(id))
          throw Error("template special token '" + id + "' is missing from special_tokens", key_context(src, k));
        auto ids = specials[id].at("ids").get<std::vector<int32_t>>();
        if (ids.empty()) continue;
        pp.parts.push_back(std::move(ids));
      } else {
        throw Error("unknown template piece", key_context(src, k, "Sequence or SpecialToken", piece.dump()));
      }
    }
  } else if (t == "RobertaProcessing" || t == "BertProcessing") {
    // single = [cls] $A [sep] (processors/roberta.rs, bert.rs); offsets flags do not touch ids.
    pp.parts.push_back({j.at("cls").at(1).get<int32_t>()});
    pp.parts.emplace_back();
    pp.parts.push_back({j.at("sep").at(1).get<int32_t>()});
  } else {
    unsupported("post_processor", t, src, key + ".type",
                "TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence");
  }
  out.push_back(std::move(pp));
}

// ------------------------------------------------------------------------------------------------
// Added vocabulary (tokenizer/added_vocabulary.rs)

struct AddedToken {
  int32_t id;
  std::string content;
  /// What decode/id_to_token see: the normalized content for normalized tokens when there is a
  /// normalizer (AddedVocabulary::simple_id_to_token reads normalized_cache), else the content.
  std::string surface;
  bool single_word, lstrip, rstrip, normalized, special;
};

/// The split kinds added tokens leave exact.
unsigned added_token_split_kinds(const AddedToken& t) {
  unsigned k = kAnySplit;
  const std::string& c = t.content;
  for (size_t i = 0; i + 1 < c.size(); ++i) {
    if (c[i] == '\n' && is_ascii_letter(c[i + 1])) k &= ~unsigned(kAfterNewline);
    if (i + 2 < c.size() && is_ascii_letter(c[i]) && c[i + 1] == ' ' && is_ascii_letter(c[i + 2]))
      k &= ~unsigned(kBeforeSpace);
  }
  if (c.empty()) return k;
  if (t.lstrip && is_ascii_letter(c.front())) k &= ~unsigned(kAfterNewline);  // would swallow the '\n'
  if (t.rstrip && is_ascii_letter(c.back())) k &= ~unsigned(kBeforeSpace);    // would swallow the ' '
  if (t.single_word && c.front() == ' ') k &= ~unsigned(kBeforeSpace);        // sees a letter before it
  if (t.single_word && c.back() == '\n') k &= ~unsigned(kAfterNewline);      // sees a letter after it
  return k;
}

/// Byte trie with leftmost-longest search (what the Aho-Corasick automaton with
/// MatchKind::LeftmostLongest returns, one match at a time).
class Trie {
 public:
  void add(const std::string& s, int32_t value) {
    if (s.empty()) return;
    int n = 0;
    for (unsigned char c : s) {
      auto it = nodes_[n].next.find(c);
      if (it == nodes_[n].next.end()) {
        nodes_.emplace_back();
        it = nodes_[n].next.emplace(c, int(nodes_.size() - 1)).first;
      }
      n = it->second;
    }
    nodes_[n].value = value;
    first_[static_cast<unsigned char>(s[0])] = true;
  }
  bool empty() const { return nodes_.size() == 1; }
  /// Next match at or after `from`: (start, end, value); start == npos when none.
  std::tuple<size_t, size_t, int32_t> find(std::string_view s, size_t from) const {
    for (size_t i = from; i < s.size(); ++i) {
      if (!first_[static_cast<unsigned char>(s[i])]) continue;
      int n = 0;
      size_t best_end = 0;
      int32_t best = -1;
      for (size_t k = i; k < s.size(); ++k) {
        auto it = nodes_[n].next.find(static_cast<unsigned char>(s[k]));
        if (it == nodes_[n].next.end()) break;
        n = it->second;
        if (nodes_[n].value >= 0) {
          best = nodes_[n].value;
          best_end = k + 1;
        }
      }
      if (best >= 0) return {i, best_end, best};
    }
    return {std::string_view::npos, 0, -1};
  }

 private:
  struct Node {
    std::unordered_map<unsigned char, int> next;
    int32_t value = -1;
  };
  std::vector<Node> nodes_{1};
  std::array<bool, 256> first_{};
};

// ------------------------------------------------------------------------------------------------
// BPE model (models/bpe/model.rs, word.rs)

struct PairHash {
  size_t operator()(uint64_t k) const { return std::hash<uint64_t>()(k * 0x9E3779B97F4A7C15ull); }
};

class PieceCache {
 public:
  bool get(const std::string& k, std::vector<int32_t>& out) const {
    const Shard& s = shards_[std::hash<std::string>()(k) % kShards];
    std::shared_lock lock(s.mu);
    auto it = s.map.find(k);
    if (it == s.map.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }
  void put(const std::string& k, const std::vector<int32_t>& v) const {
    if (k.size() >= kMaxKey) return;  // tokenizers' MAX_LENGTH: long pre-tokens are not cached
    Shard& s = shards_[std::hash<std::string>()(k) % kShards];
    std::unique_lock lock(s.mu);
    if (s.map.size() >= kPerShard) return;
    s.map.emplace(k, v);
  }

 private:
  static constexpr size_t kShards = 64, kPerShard = 2048, kMaxKey = 256;
  struct Shard {
    mutable std::shared_mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>> map;
  };
  mutable std::array<Shard, kShards> shards_;
};

struct Bpe {
  std::unordered_map<std::string, int32_t> vocab;
  std::vector<std::string> id_to_token;  // "" for holes
  std::vector<bool> has_id;
  std::unordered_map<uint64_t, std::pair<uint32_t, int32_t>, PairHash> merges;  // (a,b) -> (rank, new id)
  std::array<int32_t, 256> byte_ids{};
  bool byte_fallback = false, fuse_unk = false, ignore_merges = false;
  int32_t unk_id = -1;
  PieceCache cache;

  static uint64_t key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

  /// merge_all: min-heap on (rank, pos); stale entries are skipped.
  void merge_word(const std::string& w, std::vector<int32_t>& out) const {
    struct Sym {
      int32_t c;
      int prev, next;
      bool alive;
    };
    std::vector<Sym> sym;
    sym.reserve(w.size());
    std::optional<int32_t> unk;
    auto add = [&](int32_t id) {
      int n = int(sym.size());
      sym.push_back({id, n - 1, n + 1, true});
    };
    for (size_t i = 0; i < w.size();) {
      size_t l = utf8_len(static_cast<unsigned char>(w[i]));
      auto it = vocab.find(w.substr(i, l));
      if (it != vocab.end()) {
        if (unk) {
          add(*unk);
          unk.reset();
        }
        add(it->second);
      } else {
        bool done = false;
        if (byte_fallback) {
          bool all = true;
          for (size_t k = 0; k < l; ++k) all = all && byte_ids[static_cast<unsigned char>(w[i + k])] >= 0;
          if (all) {
            for (size_t k = 0; k < l; ++k) add(byte_ids[static_cast<unsigned char>(w[i + k])]);
            done = true;  // note: a pending unk is not flushed here, exactly as in model.rs
          }
        }
        if (!done && unk_id >= 0) {
          if (unk && !fuse_unk) add(*unk);
          unk = unk_id;
        }
      }
      i += l;
    }
    if (unk) add(*unk);
    if (sym.empty()) return;
    sym.back().next = -1;

    struct M {
      uint32_t rank;
      int pos;
      int32_t new_id;
      bool operator>(const M& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<M, std::vector<M>, std::greater<M>> q;
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      auto it = merges.find(key(sym[i].c, sym[i + 1].c));
      if (it != merges.end()) q.push({it->second.first, int(i), it->second.second});
    }
    while (!q.empty()) {
      M top = q.top();
      q.pop();
      Sym& s = sym[top.pos];
      if (!s.alive || s.next < 0) continue;
      Sym& r = sym[s.next];
      auto it = merges.find(key(s.c, r.c));
      if (it == merges.end() || it->second.second != top.new_id) continue;
      s.c = top.new_id;
      r.alive = false;
      s.next = r.next;
      if (s.next >= 0) sym[s.next].prev = top.pos;
      if (s.prev >= 0) {
        auto jt = merges.find(key(sym[s.prev].c, s.c));
        if (jt != merges.end()) q.push({jt->second.first, s.prev, jt->second.second});
      }
      if (s.next >= 0) {
        auto jt = merges.find(key(s.c, sym[s.next].c));
        if (jt != merges.end()) q.push({jt->second.first, top.pos, jt->second.second});
      }
    }
    for (auto& s : sym)
      if (s.alive) out.push_back(s.c);
  }

  /// tokenize_with_cache.
  void tokenize(const std::string& w, std::vector<int32_t>& out) const {
    if (w.empty()) return;
    if (ignore_merges) {
      auto it = vocab.find(w);
      if (it != vocab.end()) {
        out.push_back(it->second);
        return;
      }
    }
    if (cache.get(w, out)) return;
    size_t first = out.size();
    merge_word(w, out);
    cache.put(w, std::vector<int32_t>(out.begin() + std::ptrdiff_t(first), out.end()));
  }
};

/// A token id from tokenizer.json: an integer in [0, 2^31 - 1) (ids are int32 everywhere).
int32_t token_id(const json& v, const std::string& src, const std::string& key) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  if (!v.is_number_integer()) throw Error("token id is not an integer", key_context(src, key, "an integer", v.dump()));
  if (v.is_number_unsigned() ? v.get<uint64_t>() >= static_cast<uint64_t>(kMax) : (v.get<int64_t>() < 0 || v.get<int64_t>() >= kMax))
    throw Error("token id out of range", key_context(src, key, "an id in [0, " + std::to_string(kMax) + ")", v.dump()));
  return static_cast<int32_t>(v.get<int64_t>());
}

std::unique_ptr<Bpe> parse_bpe(const json& m, const std::string& src) {
  auto b = std::make_unique<Bpe>();
  std::string type = m.contains("type") ? m["type"].get<std::string>() : (m.contains("merges") ? "BPE" : "");
  if (type != "BPE") unsupported("model", type, src, "model.type", "BPE");
  if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].get<double>() > 0.0)
    throw Error("BPE dropout is not supported", key_context(src, "model.dropout", "null or 0", m["dropout"].dump()));
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (m.contains(k) && !m[k].is_null() && !m[k].get<std::string>().empty())
      throw Error(std::string("BPE ") + k + " is not supported", key_context(src, std::string("model.") + k, "null", m[k].dump()));
  }
  b->byte_fallback = jget<bool>(m, "byte_fallback", false);
  b->fuse_unk = jget<bool>(m, "fuse_unk", false);
  b->ignore_merges = jget<bool>(m, "ignore_merges", false);
  int32_t max_id = -1;
  for (auto& [tok, id] : m.at("vocab").items()) {
    int32_t i = token_id(id, src, "model.vocab[" + json(tok).dump() + "]");
    b->vocab[tok] = i;
    max_id = std::max(max_id, i);
  }
  b->id_to_token.assign(size_t(max_id + 1), {});
  b->has_id.assign(size_t(max_id + 1), false);
  for (auto& [tok, id] : b->vocab) {
    b->id_to_token[size_t(id)] = tok;
    b->has_id[size_t(id)] = true;
  }
  b->byte_ids.fill(-1);
  for (int c = 0; c < 256; ++c) {
    static const char* kHex = "0123456789ABCDEF";  // format!("<{b:#04X}>") in model.rs
    const std::string name = std::string("<0x") + kHex[c >> 4] + kHex[c & 15] + ">";
    auto it = b->vocab.find(name);
    if (it != b->vocab.end()) b->byte_ids[size_t(c)] = it->second;
  }
  if (m.contains("unk_token") && !m["unk_token"].is_null()) {
    std::string u = m["unk_token"].get<std::string>();
    auto it = b->vocab.find(u);
    if (it == b->vocab.end()) throw Error("unk_token is not in the vocabulary", key_context(src, "model.unk_token", "a vocab entry", u));
    b->unk_id = it->second;
  }
  const json& merges = m.at("merges");
  for (size_t i = 0; i < merges.size(); ++i) {
    std::string a, c;
    const json& e = merges[i];
    std::string k = "model.merges[" + std::to_string(i) + "]";
    if (e.is_string()) {  // legacy "a b"
      std::string s = e.get<std::string>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos)
        throw Error("legacy merge has no space", key_context(src, k, "\"left right\"", "\"" + s + "\""));
      a = s.substr(0, sp);
      c = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>();
      c = e[1].get<std::string>();
    } else {
      throw Error("merge must be \"a b\" or [\"a\", \"b\"]", key_context(src, k, "", e.dump()));
    }
    auto ia = b->vocab.find(a), ic = b->vocab.find(c), in = b->vocab.find(a + c);
    if (ia == b->vocab.end() || ic == b->vocab.end() || in == b->vocab.end())
      throw Error("merge refers to a token missing from the vocabulary", key_context(src, k, "", e.dump()));
    b->merges[Bpe::key(ia->second, ic->second)] = {uint32_t(i), in->second};
  }
  return b;
}

}  // namespace

// ------------------------------------------------------------------------------------------------

struct Tokenizer::Impl {
  std::string source;
  std::unique_ptr<Bpe> model;
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<Decoder> decoder;
  std::vector<PostProcessor> post;
  std::vector<AddedToken> added;  // in file order
  std::unordered_map<int32_t, size_t> added_by_id;
  std::unordered_map<std::string, int32_t> added_by_content;
  std::unordered_set<std::string> special_contents;
  Trie raw_trie, norm_trie;  // values index `added`
  std::unique_ptr<Regex> word_char;  // Rust regex `\w` for single_word
  int64_t vocab_size = 0;
  unsigned split_kinds = kNoSplit;  // exact split points of this pipeline (split_point)

  void compute_split_kinds() {
    bool split_seen = false;
    split_kinds = normalizer || !pre_tokenizer ? kNoSplit : pre_tokenizer_split_kinds(*pre_tokenizer, split_seen);
    if (!split_seen) split_kinds = kNoSplit;
    for (const auto& t : added) split_kinds &= added_token_split_kinds(t);
  }

  bool is_word_char_before(std::string_view s) const {
    if (s.empty()) return false;
    size_t i = s.size() - 1;
    while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
    std::vector<std::pair<size_t, size_t>> m;
    word_char->find_all(s.substr(i), m);
    return !m.empty();
  }
  bool is_word_char_after(std::string_view s) const {
    if (s.empty()) return false;
    std::vector<std::pair<size_t, size_t>> m;
    word_char->find_all(s.substr(0, utf8_len(static_cast<unsigned char>(s[0]))), m);
    return !m.empty();
  }

  /// find_matches + split_with_indices over one piece.
  void split_added(const Piece& p, const Trie& trie, std::vector<Piece>& out) const {
    if (trie.empty() || p.text.empty()) {
      if (!p.text.empty()) out.push_back(p);
      return;
    }
    std::string_view s = p.text;
    size_t start_offset = 0, from = 0;
    auto push_text = [&](size_t a, size_t e) {
      Piece q;
      q.text = std::string(s.substr(a, e - a));
      q.at_origin = p.at_origin && a == 0;
      if (!q.text.empty()) out.push_back(std::move(q));
    };
    while (true) {
      auto [start, stop, idx] = trie.find(s, from);
      if (start == std::string_view::npos) break;
      from = stop;
      const AddedToken& t = added[size_t(idx)];
      if (t.single_word) {
        bool start_space = start == 0 || !is_word_char_before(s.substr(0, start));
        bool stop_space = stop == s.size() || !is_word_char_after(s.substr(stop));
        if (!start_space || !stop_space) continue;
      }
      if (t.lstrip) {
        size_t ns = start;
        while (ns > 0) {
          size_t i = ns - 1;
          while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
          if (!is_rust_whitespace(decode_cp(s.data() + i, ns - i))) break;
          ns = i;
        }
        start = std::max(ns, start_offset);
      }
      if (t.rstrip) {
        while (stop < s.size()) {
          size_t l = utf8_len(static_cast<unsigned char>(s[stop]));
          if (!is_rust_whitespace(decode_cp(s.data() + stop, l))) break;
          stop += l;
        }
      }
      if (start_offset < start) push_text(start_offset, start);
      Piece q;
      q.text = std::string(s.substr(start, stop - start));
      q.id = t.id;
      out.push_back(std::move(q));
      start_offset = stop;
    }
    if (start_offset < s.size()) push_text(start_offset, s.size());
  }

  std::vector<int32_t> encode(std::string_view text, bool add_special) const {
    if (!utf8::is_valid(text)) throw Error("Tokenizer::encode: input is not valid UTF-8", key_context(source, ""));
    std::vector<Piece> pieces, tmp;
    Piece whole;
    whole.text = std::string(text);
    whole.at_origin = true;
    // 1. non-normalized added tokens on the raw text, 2. normalize the rest, then normalized tokens
    split_added(whole, raw_trie, tmp);
    for (auto& p : tmp) {
      if (p.id >= 0) {
        pieces.push_back(std::move(p));
        continue;
      }
      if (normalizer) p.text = normalizer->apply(std::move(p.text));
      split_added(p, norm_trie, pieces);
    }
    if (pre_tokenizer) pre_tokenizer->apply(pieces);
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 4);
    for (auto& p : pieces) {
      if (p.id >= 0)
        ids.push_back(p.id);
      else
        model->tokenize(p.text, ids);
    }
    if (add_special)
      for (auto& pp : post) pp.apply(ids);
    return ids;
  }

  const std::string* token_of(int32_t id) const {
    auto it = added_by_id.find(id);
    if (it != added_by_id.end()) return &added[it->second].surface;
    if (id >= 0 && size_t(id) < model->has_id.size() && model->has_id[size_t(id)]) return &model->id_to_token[size_t(id)];
    return nullptr;
  }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::from_file(const std::string& path) {
  std::string file = fs::is_directory(path) ? fs::join(path, "tokenizer.json") : path;
  if (!fs::is_regular_file(file))
    throw Error("tokenizer file not found", key_context(file, "", "a tokenizer.json file", "nothing"));
  return from_json(fs::read_file(file), file);
}

std::unique_ptr<Tokenizer> Tokenizer::from_json(const std::string& text, const std::string& src) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(std::string("tokenizer.json is not valid JSON: ") + e.what(), key_context(src, ""));
  }
  auto impl = std::make_unique<Impl>();
  impl->source = src;
  try {
    if (!j.is_object() || !j.contains("model")) throw Error("no \"model\" section", key_context(src, "model"));
    if (j.contains("truncation") && !j["truncation"].is_null())
      throw Error("truncation is not supported", key_context(src, "truncation", "null", j["truncation"].dump()));
    if (j.contains("padding") && !j["padding"].is_null()) {
      const json& pad = j["padding"];
      bool batch_longest = pad.contains("strategy") && pad["strategy"] == json("BatchLongest");
      if (!batch_longest)  // BatchLongest pads a single encode to its own length: a no-op
        throw Error("padding is not supported", key_context(src, "padding", "null or strategy BatchLongest", pad.dump()));
    }
    impl->model = parse_bpe(j["model"], src);
    if (j.contains("normalizer") && !j["normalizer"].is_null())
      impl->normalizer = parse_normalizer(j["normalizer"], src, "normalizer");
    if (j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null())
      impl->pre_tokenizer = parse_pre_tokenizer(j["pre_tokenizer"], src, "pre_tokenizer");
    if (j.contains("decoder") && !j["decoder"].is_null()) impl->decoder = parse_decoder(j["decoder"], src, "decoder");
    if (j.contains("post_processor") && !j["post_processor"].is_null())
      parse_post_processor(j["post_processor"], src, "post_processor", impl->post);
    impl->word_char = std::make_unique<Regex>(kRustWordChar, src, "", true);
    int64_t max_id = int64_t(impl->model->id_to_token.size()) - 1;
    if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
      const json& arr = j["added_tokens"];
      for (size_t i = 0; i < arr.size(); ++i) {
        const json& a = arr[i];
        AddedToken t;
        t.id = token_id(a.at("id"), src, "added_tokens[" + std::to_string(i) + "].id");
        t.content = a.at("content").get<std::string>();
        t.special = jget<bool>(a, "special", false);
        t.single_word = jget<bool>(a, "single_word", false);
        t.lstrip = jget<bool>(a, "lstrip", false);
        t.rstrip = jget<bool>(a, "rstrip", false);
        t.normalized = jget<bool>(a, "normalized", !t.special);
        max_id = std::max<int64_t>(max_id, t.id);
        size_t idx = impl->added.size();
        impl->added_by_id[t.id] = idx;
        impl->added_by_content[t.content] = t.id;
        if (t.special) impl->special_contents.insert(t.content);
        t.surface = t.normalized && impl->normalizer ? impl->normalizer->apply(t.content) : t.content;
        if (t.normalized)
          impl->norm_trie.add(t.surface, int32_t(idx));
        else
          impl->raw_trie.add(t.content, int32_t(idx));
        impl->added.push_back(std::move(t));
      }
    }
    impl->vocab_size = max_id + 1;
    impl->compute_split_kinds();
  } catch (const json::exception& e) {
    throw Error(std::string("malformed tokenizer.json: ") + e.what(), key_context(src, ""));
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  return impl_->encode(text, add_special_tokens);
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> toks;
  toks.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* t = impl_->token_of(id);
    if (!t) continue;  // unknown ids are dropped, as tokenizers' filter_map does
    // tokenizers tests the surface string against the special *contents* (is_special_token)
    if (skip_special_tokens && impl_->special_contents.count(*t)) continue;
    toks.push_back(*t);
  }
  if (!impl_->decoder) {
    std::string out;
    for (size_t i = 0; i < toks.size(); ++i) out += (i ? " " : "") + toks[i];
    return out;
  }
  impl_->decoder->chain(toks);
  std::string out;
  for (auto& t : toks) out += t;
  return out;
}

int64_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

size_t Tokenizer::split_point(std::string_view text, size_t max_bytes) const {
  const unsigned kinds = impl_->split_kinds;
  if (kinds == kNoSplit || text.size() < 2) return 0;
  for (size_t p = std::min(max_bytes, text.size() - 1); p >= 1; --p) {
    // The newline must end a whitespace run of its own: at the end of the first part, a longer
    // run would be taken whole by GPT-2's `\s+(?!\S)` (the look-ahead sees the end of the text),
    // while in the whole text it stops one short of the letter.
    if ((kinds & kAfterNewline) && text[p - 1] == '\n' && is_ascii_letter(text[p]) && p >= 2 && text[p - 2] > ' ' &&
        text[p - 2] < 0x7F)
      return p;
    if ((kinds & kBeforeSpace) && text[p] == ' ' && is_ascii_letter(text[p - 1]) && p + 1 < text.size() &&
        is_ascii_letter(text[p + 1]))
      return p;
  }
  return 0;
}

bool Tokenizer::can_split() const { return impl_->split_kinds != kNoSplit; }

std::pair<std::vector<int32_t>, std::vector<int32_t>> Tokenizer::special_tokens_around() const {
  std::vector<int32_t> ids{-1};  // a marker for the sequence: real ids are >= 0
  for (const auto& pp : impl_->post) pp.apply(ids);
  auto it = std::find(ids.begin(), ids.end(), -1);
  if (it == ids.end() || std::count(ids.begin(), ids.end(), -1) != 1)
    throw Error("the post-processor does not frame a single sequence once", key_context(impl_->source, "post_processor"));
  return {std::vector<int32_t>(ids.begin(), it), std::vector<int32_t>(it + 1, ids.end())};
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  auto it = impl_->added_by_content.find(std::string(token));
  if (it != impl_->added_by_content.end()) return it->second;
  auto jt = impl_->model->vocab.find(std::string(token));
  if (jt != impl_->model->vocab.end()) return jt->second;
  return std::nullopt;
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  const std::string* t = impl_->token_of(id);
  if (!t) return std::nullopt;
  return *t;
}

}  // namespace prism::io
