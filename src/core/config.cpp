// The YAML edge of prism::config: the visitors behind load/parse/dump/validate/describe.
//
// This is the only translation unit that sees yaml-cpp (style.md §3 rule 1 and 9). Parsing is
// two passes over the same visit() declarations:
//   1. YamlReader: structure and types. Unknown keys (with a "did you mean"), wrong kinds,
//      unparsable scalars and missing required keys are errors with the key path. Present
//      scalars are also range-checked here, so the message can quote what the user wrote.
//   2. Validator: constraints on every value, defaults included, plus each struct's validate().
//      The same pass serves structs built directly in C++ (validate_config).
// Errors are raised with only the key path; parse_yaml() adds where that key was written: the
// file and line (from the reader's record of every key's YAML mark, or the nearest written parent
// for a default), or the `--set` override that introduced it, so a message always says where the
// bad value came from.
//
// Overrides are merged into the YAML tree before reading, not applied to the typed struct:
// that way `--set` can supply a required key the file lacks, and every check runs exactly once.
#include "prism/core/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

namespace prism::config {

Check operator&(Check a, const Check& b) {
  if (b.min && (!a.min || *b.min > *a.min || (*b.min == *a.min && b.min_exclusive))) {
    a.min = b.min;
    a.min_exclusive = b.min_exclusive;
  }
  if (b.max && (!a.max || *b.max < *a.max || (*b.max == *a.max && b.max_exclusive))) {
    a.max = b.max;
    a.max_exclusive = b.max_exclusive;
  }
  if (!b.choices.empty()) a.choices = b.choices;
  a.min_items = std::max(a.min_items, b.min_items);
  a.required = a.required || b.required;
  a.allow_non_finite = a.allow_non_finite || b.allow_non_finite;
  return a;
}

namespace {

// ---------------------------------------------------------------------------------------------
// Text: numbers, quoting, and the "expected ..." descriptions shared by every message.

/// Shortest text that reads back to the same double.
std::string shortest(double v) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

/// A double as YAML: always recognisably a float (`0.0`, `1.0e-05`), so that YAML 1.1 readers
/// such as PyYAML also see a number.
std::string format_double(double v) {
  if (std::isnan(v)) return ".nan";
  if (std::isinf(v)) return v > 0 ? ".inf" : "-.inf";
  std::string s = shortest(v);
  if (s.find_first_of(".e") == std::string::npos) return s + ".0";
  if (auto e = s.find('e'); e != std::string::npos && s.find('.') == std::string::npos) s.insert(e, ".0");
  return s;
}

std::optional<std::int64_t> parse_int(std::string_view s) {
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  if (s.empty() || s[0] == '+') return std::nullopt;
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
  return v;
}

/// YAML 1.2 numbers: decimal/exponent forms, `.inf` and `.nan`. Non-finite values are read so that
/// their refusal (Check::allow_non_finite is off for every field today) quotes them as numbers.
std::optional<double> parse_number(std::string_view s) {
  if (s == ".nan" || s == ".NaN" || s == ".NAN") return std::numeric_limits<double>::quiet_NaN();
  bool neg = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    neg = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s == ".inf" || s == ".Inf" || s == ".INF") {
    return neg ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
  }
  // from_chars alone would also take "inf", "nan" and a second sign.
  if (s.empty() || !(std::isdigit(static_cast<unsigned char>(s[0])) || s[0] == '.')) return std::nullopt;
  double v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, std::chars_format::general);
  if (ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
  return neg ? -v : v;
}

bool is_null_word(std::string_view s) { return s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL"; }
bool is_bool_word(std::string_view s) { return s == "true" || s == "false"; }

std::string quote(std::string_view s) {
  std::string q = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') q += '\\';
    q += c;
  }
  return q + "\"";
}

/// Strings that a YAML reader would take for something else must be quoted when written.
bool needs_quotes(std::string_view s) {
  std::string lower(s);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  return is_null_word(s) || lower == "true" || lower == "false" || lower == "yes" || lower == "no" || lower == "on" ||
         lower == "off" || parse_number(s).has_value() || lower == ".nan";
}

std::string bounds_text(const Check& c) {
  if (c.min && c.max) {
    return str(" in ", c.min_exclusive ? "(" : "[", shortest(*c.min), ", ", shortest(*c.max),
               c.max_exclusive ? ")" : "]");
  }
  if (c.min) return str(c.min_exclusive ? " > " : " >= ", shortest(*c.min));
  if (c.max) return str(c.max_exclusive ? " < " : " <= ", shortest(*c.max));
  return "";
}

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string s;
  for (std::size_t i = 0; i < items.size(); ++i) s += (i ? std::string(sep) : "") + items[i];
  return s;
}

/// `an integer >= 0`, `one of fp32 | bf16`, or the plural used for list elements.
std::string describe_kind(Kind kind, const Check& c, bool plural) {
  switch (kind) {
    case Kind::kBool:
      return plural ? "booleans (true or false)" : "true or false";
    case Kind::kInt:
      return (plural ? "integers" : "an integer") + bounds_text(c);
    case Kind::kNumber:
      return (plural ? "numbers" : "a number") + bounds_text(c);
    case Kind::kString:
      if (!c.choices.empty()) return (plural ? "strings, each one of " : "one of ") + join(c.choices, " | ");
      if (c.required || c.min_items > 0) return plural ? "non-empty strings" : "a non-empty string";
      return plural ? "strings" : "a string";
    case Kind::kStruct:
      return plural ? "maps" : "a map";
    case Kind::kList:
      return plural ? "lists" : "a list";
  }
  return "?";
}

std::string describe(const TypeDesc& d, const Check& c) {
  std::string s;
  if (d.kind == Kind::kList) {
    Check item = c;  // the length rules are the list's, the rest apply to each element
    item.min_items = 0;
    item.required = false;
    s = d.fixed_size ? str("a list of ", d.fixed_size, " ") : (c.min_items ? "a non-empty list of " : "a list of ");
    s += describe_kind(d.item, item, true);
  } else {
    s = describe_kind(d.kind, c, false);
  }
  return d.optional ? s + " or null" : s;
}

Kind kind_of(const ScalarRef& ref) {
  static constexpr Kind kKinds[] = {Kind::kBool, Kind::kInt, Kind::kInt, Kind::kNumber, Kind::kString};
  return kKinds[ref.index()];
}

/// A value for messages: numbers as written, strings quoted.
std::string value_text(const ScalarRef& ref) {
  struct {
    std::string operator()(bool* b) const { return *b ? "true" : "false"; }
    std::string operator()(int* i) const { return std::to_string(*i); }
    std::string operator()(std::int64_t* i) const { return std::to_string(*i); }
    std::string operator()(double* d) const { return format_double(*d); }
    std::string operator()(std::string* s) const { return quote(*s); }
  } f;
  return std::visit(f, ref);
}

/// The same, as YAML text (strings quoted only when they must be).
std::string yaml_text(const ScalarRef& ref) {
  if (auto* s = std::get_if<std::string*>(&ref)) return needs_quotes(**s) ? quote(**s) : **s;
  return value_text(ref);
}

bool in_bounds(double v, const Check& c) {
  if (!std::isfinite(v) && !c.allow_non_finite) return false;
  if (std::isnan(v)) return !c.min && !c.max;
  if (c.min && (c.min_exclusive ? v <= *c.min : v < *c.min)) return false;
  if (c.max && (c.max_exclusive ? v >= *c.max : v > *c.max)) return false;
  return true;
}

/// A number refused only for being .inf / -.inf / .nan (the message then says "a finite number").
bool non_finite_refused(const ScalarRef& ref, const Check& c) {
  auto* d = std::get_if<double*>(&ref);
  return d && !std::isfinite(**d) && !c.allow_non_finite;
}

/// What a scalar field expects, for "expected ...".
std::string expected_text(const ScalarRef& ref, const Check& c) {
  if (non_finite_refused(ref, c)) return "a finite number" + bounds_text(c);
  return describe_kind(kind_of(ref), c, false);
}

/// Whether a scalar satisfies its constraints (bounds, choices, non-empty).
bool satisfies(const ScalarRef& ref, const Check& c) {
  if (auto* s = std::get_if<std::string*>(&ref)) {
    if ((c.required || c.min_items > 0) && (*s)->empty()) return false;
    return c.choices.empty() || std::find(c.choices.begin(), c.choices.end(), **s) != c.choices.end();
  }
  if (auto* i = std::get_if<int*>(&ref)) return in_bounds(**i, c);
  if (auto* i = std::get_if<std::int64_t*>(&ref)) return in_bounds(static_cast<double>(**i), c);
  if (auto* d = std::get_if<double*>(&ref)) return in_bounds(**d, c);
  return true;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

/// The closest candidate when it is plausibly a typo of `word`.
std::optional<std::string> closest(std::string_view word, const std::vector<std::string>& candidates) {
  std::optional<std::string> best;
  std::size_t best_d = std::max<std::size_t>(2, word.size() / 3) + 1;
  for (const auto& c : candidates) {
    std::size_t d = edit_distance(word, c);
    if (d < best_d) best_d = d, best = c;
  }
  return best;
}

/// A list for "got ...": `[]`, `a list of 1 item`, `a list of 3 items`.
std::string list_text(std::size_t size) {
  return size == 0 ? std::string("[]") : str("a list of ", size, size == 1 ? " item" : " items");
}

std::string child_path(const std::string& parent, std::string_view key) {
  return parent.empty() ? std::string(key) : str(parent, ".", key);
}

// Plain assignments rather than designated initializers: GCC 12's -Wextra flags every
// in_file(...) for the members it leaves out.
ErrorContext in_file(std::string file, std::string key = {}) {
  ErrorContext c;
  c.file = std::move(file);
  c.key = std::move(key);
  return c;
}

[[noreturn]] void fail_at(const std::string& path, const std::string& message) {
  throw Error(message, in_file("", path));
}

/// The key path one level up: `a.b[2]` -> `a.b` -> `a` -> `` (empty: the root).
std::string parent_path(const std::string& path) {
  const auto pos = path.find_last_of(".[");
  return pos == std::string::npos ? std::string() : path.substr(0, pos);
}

/// A line of the parsed text (1-based; 0: unknown), or 0 for nodes an override created.
int64_t line_of(const YAML::Node& n) { return n.Mark().line + 1; }

/// An error about a key the reader does not record (an unknown or repeated key): it carries the
/// key's line itself, for parse_yaml() to name as `file:line`.
class LineError : public Error {
 public:
  LineError(const std::string& message, const std::string& key, int64_t line)
      : Error(message, in_file("", key)), line_(line) {}
  int64_t line() const { return line_; }

 private:
  int64_t line_;
};

// ---------------------------------------------------------------------------------------------
// Pass 1: YAML -> struct.

/// What the user wrote, for "got ...": numbers and bools bare, other scalars quoted.
std::string found_text(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return "null";
  if (n.IsMap()) return "a map";
  if (n.IsSequence()) return list_text(n.size());
  const std::string& s = n.Scalar();
  bool plain = n.Tag() != "!";
  if (plain && (parse_number(s) || is_bool_word(s))) return s;
  return quote(s);
}

class YamlReader final : public Visitor {
 public:
  explicit YamlReader(const YAML::Node& root) { stack_.push_back({root, false, "", TypeDesc{}, {}}); }
  /// Every key path present in the YAML (after overrides) -> the line it was written on.
  const std::map<std::string, int64_t>& lines() const { return lines_; }
  /// The line of `path`, or of its nearest present parent (a default's section); 0 if none.
  int64_t line_of_key(std::string path) const {
    for (; !path.empty(); path = parent_path(path)) {
      if (auto it = lines_.find(path); it != lines_.end()) return it->second;
    }
    return 0;
  }

 protected:
  void enter_field(std::string_view key, const TypeDesc& desc, const Check& check, std::string_view) override {
    Frame& parent = stack_.back();
    parent.known.emplace_back(key);
    Frame child{YAML::Node(), true, child_path(parent.path, key), desc, {}};
    if (!parent.absent && parent.node.IsMap()) {
      for (auto it = parent.node.begin(); it != parent.node.end(); ++it) {
        if (it->first.IsScalar() && it->first.Scalar() == key) {
          child.node.reset(it->second);  // rebind the handle; `=` would assign through it
          child.absent = false;
          lines_[child.path] = line_of(it->first);  // the key's line: its value may start below
          break;
        }
      }
    }
    // Reported after the struct's unknown keys: a misspelt key explains the missing one.
    if (child.absent && check.required) missing_.push_back(child.path);
    stack_.push_back(std::move(child));
  }
  void leave_field() override { stack_.pop_back(); }

  void scalar(ScalarRef ref, const Check& check) override {
    const Frame& f = stack_.back();
    if (f.absent) return;  // keep the default
    const YAML::Node& n = f.node;
    Check c = check;
    auto fail = [&] {
      fail_at(f.path, str("expected ", describe_kind(kind_of(ref), c, false), ", got ", found_text(n)));
    };
    if (!n.IsScalar()) fail();
    const std::string& s = n.Scalar();
    bool plain = n.Tag() != "!";  // quoted scalars are strings, whatever they spell
    if (auto* b = std::get_if<bool*>(&ref)) {
      if (!plain || !is_bool_word(s)) fail();
      **b = s == "true";
    } else if (auto* str_ref = std::get_if<std::string*>(&ref)) {
      **str_ref = s;
    } else if (auto* d = std::get_if<double*>(&ref)) {
      auto v = plain ? parse_number(s) : std::nullopt;
      if (!v) fail();
      **d = *v;
    } else {
      auto v = plain ? parse_int(s) : std::nullopt;  // "1.5" and "1e3" are not integers
      if (!v) fail();
      if (auto* i = std::get_if<int*>(&ref)) {
        if (*v < INT_MIN || *v > INT_MAX) {
          c = c & range(INT_MIN, INT_MAX);  // say why a valid-looking integer was refused
          fail();
        }
        **i = static_cast<int>(*v);
      } else {
        *std::get<std::int64_t*>(ref) = *v;
      }
    }
    if (non_finite_refused(ref, c)) fail_at(f.path, str("expected ", expected_text(ref, c), ", got ", found_text(n)));
    if (!satisfies(ref, c)) fail();
  }

  void enter_struct() override {
    const Frame& f = stack_.back();
    if (f.absent || f.node.IsNull() || f.node.IsMap()) return;  // `section:` with no keys is an empty map
    fail_at(f.path, str("expected a map, got ", found_text(f.node)));
  }

  void leave_struct() override {
    const Frame& f = stack_.back();
    if (!f.absent && f.node.IsMap()) {
      std::map<std::string, int64_t> seen;  // key -> its first line
      for (auto it = f.node.begin(); it != f.node.end(); ++it) {
        const int64_t line = line_of(it->first);
        if (!it->first.IsScalar()) throw LineError("map keys must be plain strings", f.path, line);
        const std::string& key = it->first.Scalar();
        std::string path = child_path(f.path, key);
        if (auto [first, fresh] = seen.emplace(key, line); !fresh) {
          throw LineError(first->second > 0 ? str("duplicate key (first written on line ", first->second, ")")
                                            : std::string("duplicate key"),
                          path, line);
        }
        if (std::find(f.known.begin(), f.known.end(), key) != f.known.end()) continue;
        if (auto guess = closest(key, f.known)) {
          throw LineError(str("unknown key (did you mean '", *guess, "'?)"), path, line);
        }
        throw LineError(str("unknown key (expected one of: ", join(f.known, ", "), ")"), path, line);
      }
    }
    if (stack_.size() == 1 && !missing_.empty()) {
      std::vector<std::string> rest(missing_.begin() + 1, missing_.end());
      fail_at(missing_.front(), rest.empty() ? "missing required key"
                                             : str("missing required key (also missing: ", join(rest, ", "), ")"));
    }
  }

  std::optional<std::size_t> enter_list(std::size_t size, std::size_t fixed_size, bool, const Check& check) override {
    const Frame& f = stack_.back();
    if (f.absent) return std::nullopt;
    TypeDesc desc = f.desc.kind == Kind::kList ? f.desc : TypeDesc{Kind::kList, Kind::kStruct};
    desc.optional = false;  // null was already handled by enter_optional
    const YAML::Node& n = f.node;
    if (!n.IsSequence() || (fixed_size && n.size() != fixed_size) || n.size() < check.min_items) {
      fail_at(f.path, str("expected ", describe(desc, check), ", got ", found_text(n)));
    }
    return n.size();
  }
  void enter_item(std::size_t index) override {
    const Frame& f = stack_.back();
    TypeDesc item{f.desc.item};
    Frame child{f.absent ? YAML::Node() : f.node[index], f.absent, str(f.path, "[", index, "]"), item, {}};
    if (!child.absent) lines_[child.path] = line_of(child.node);
    stack_.push_back(std::move(child));
  }
  void leave_item() override { stack_.pop_back(); }
  void leave_list() override {}

  bool enter_optional(bool has_value) override {
    const Frame& f = stack_.back();
    if (f.absent) return has_value;
    return !f.node.IsNull();
  }

 private:
  struct Frame {
    YAML::Node node;
    bool absent = false;  // key not in the YAML: the value keeps its default
    std::string path;
    TypeDesc desc{};
    std::vector<std::string> known;  // declared keys, when this frame is a struct
  };
  std::vector<Frame> stack_;
  std::vector<std::string> missing_;
  std::map<std::string, int64_t> lines_;
};

// ---------------------------------------------------------------------------------------------
// Pass 2 (and validate_config): constraints on every value, wherever it came from.

class Validator final : public Visitor {
 public:
  Validator() { stack_.push_back({"", {}}); }

 protected:
  void enter_field(std::string_view key, const TypeDesc& desc, const Check&, std::string_view) override {
    stack_.push_back({child_path(stack_.back().path, key), desc});
  }
  void leave_field() override { stack_.pop_back(); }
  void scalar(ScalarRef ref, const Check& check) override {
    if (!satisfies(ref, check)) {
      fail_at(stack_.back().path, str("expected ", expected_text(ref, check), ", got ", value_text(ref)));
    }
  }
  void enter_struct() override {}
  void leave_struct() override {}
  std::optional<std::size_t> enter_list(std::size_t size, std::size_t, bool, const Check& check) override {
    if (size < check.min_items) {
      TypeDesc desc = stack_.back().desc;
      desc.optional = false;
      fail_at(stack_.back().path, str("expected ", describe(desc, check), ", got ", list_text(size)));
    }
    return std::nullopt;
  }
  void enter_item(std::size_t index) override {
    const Frame& f = stack_.back();
    stack_.push_back({str(f.path, "[", index, "]"), TypeDesc{f.desc.item}});
  }
  void leave_item() override { stack_.pop_back(); }
  void leave_list() override {}
  bool enter_optional(bool has_value) override { return has_value; }
  void check_struct(const std::function<void()>& validate) override {
    try {
      validate();
    } catch (const Error& e) {
      ErrorContext c = e.context();
      c.key = c.key.empty() ? stack_.back().path : child_path(stack_.back().path, c.key);
      throw Error(e.message(), c);
    }
  }

 private:
  struct Frame {
    std::string path;
    TypeDesc desc;
  };
  std::vector<Frame> stack_;
};

// ---------------------------------------------------------------------------------------------
// struct -> YAML.

class YamlWriter final : public Visitor {
 public:
  YamlWriter() { out_.SetNullFormat(YAML::LowerNull); }
  std::string text() const { return std::string(out_.c_str()) + "\n"; }

 protected:
  void enter_field(std::string_view key, const TypeDesc&, const Check&, std::string_view) override {
    out_ << YAML::Key << std::string(key) << YAML::Value;
  }
  void leave_field() override {}
  void scalar(ScalarRef ref, const Check&) override {
    auto* s = std::get_if<std::string*>(&ref);
    if (s && needs_quotes(**s)) {
      out_ << YAML::DoubleQuoted << **s;
    } else {
      out_ << (s ? **s : value_text(ref));
    }
  }
  void enter_struct() override { out_ << YAML::BeginMap; }
  void leave_struct() override { out_ << YAML::EndMap; }
  std::optional<std::size_t> enter_list(std::size_t size, std::size_t, bool of_structs, const Check&) override {
    // Scalar lists read best on one line (`betas: [0.9, 0.95]`); lists of maps as blocks.
    if (!of_structs || size == 0) out_ << YAML::Flow;
    out_ << YAML::BeginSeq;
    return std::nullopt;
  }
  void enter_item(std::size_t) override {}
  void leave_item() override {}
  void leave_list() override { out_ << YAML::EndSeq; }
  bool enter_optional(bool has_value) override {
    if (!has_value) out_ << YAML::Null;
    return has_value;
  }

 private:
  YAML::Emitter out_;
};

// ---------------------------------------------------------------------------------------------
// Field listing for docs and `--help`-style output.

class Describer final : public Visitor {
 public:
  Describer() { stack_.push_back({"", -1, false, false, {}}); }
  std::vector<FieldInfo> fields;

 protected:
  void enter_field(std::string_view key, const TypeDesc& desc, const Check& check, std::string_view doc) override {
    std::string path = child_path(stack_.back().path, key);
    fields.push_back({path, describe(desc, check), "", std::string(doc), check.required});
    stack_.push_back({path, static_cast<int>(fields.size()) - 1, false, false, {}});
  }
  void leave_field() override {
    Frame& f = stack_.back();
    if (fields[f.field].required) fields[f.field].default_value.clear();  // a required key has no default
    stack_.pop_back();
  }
  void scalar(ScalarRef ref, const Check&) override {
    Frame& f = stack_.back();
    if (f.field >= 0) {
      set_default(f, yaml_text(ref));
    } else if (stack_.size() > 1 && stack_[stack_.size() - 2].collecting) {
      stack_[stack_.size() - 2].items.push_back(yaml_text(ref));
    }
  }
  void enter_struct() override {}
  void leave_struct() override {}
  std::optional<std::size_t> enter_list(std::size_t size, std::size_t, bool of_structs, const Check&) override {
    Frame& f = stack_.back();
    if (!of_structs) {
      f.collecting = true;
      return std::nullopt;
    }
    if (f.field >= 0) set_default(f, size == 0 ? "[]" : str("[", size, " items]"));
    return std::size_t{1};  // one default element, to list the element's fields as `list[].key`
  }
  void enter_item(std::size_t) override { stack_.push_back({stack_.back().path + "[]", -1, false, false, {}}); }
  void leave_item() override { stack_.pop_back(); }
  void leave_list() override {
    Frame& f = stack_.back();
    if (f.collecting && f.field >= 0) set_default(f, "[" + join(f.items, ", ") + "]");
    f.collecting = false;
  }
  bool enter_optional(bool has_value) override {
    if (!has_value && stack_.back().field >= 0) set_default(stack_.back(), "null");
    return true;  // describe what the optional would hold
  }

 private:
  struct Frame {
    std::string path;
    int field = -1;  // index into `fields` when this frame is a field itself
    bool default_set = false;
    bool collecting = false;  // scalar list: its items make the default text
    std::vector<std::string> items;
  };
  void set_default(Frame& f, std::string text) {
    if (f.default_set) return;
    fields[f.field].default_value = std::move(text);
    f.default_set = true;
  }
  std::vector<Frame> stack_;
};

// ---------------------------------------------------------------------------------------------
// `--set a.b[2].c=value`

struct Override {
  std::string text;  // as given, for messages
  std::string path;  // canonical key path, to attribute errors under it to this override
};

struct Segment {
  std::string name;                  // a map key, or
  std::optional<std::size_t> index;  // a list index
};

/// `source`: a file (errors name `file:line`) or an override (`--set ...`, its text is one line).
YAML::Node load_yaml(const std::string& text, const std::string& source, bool is_file = true) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    if (!is_file || e.mark.line < 0) throw Error(str("invalid YAML: ", e.msg), in_file(source));
    throw Error(str("invalid YAML: ", e.msg, " (column ", e.mark.column + 1, ")"),
                in_file(str(source, ":", e.mark.line + 1)));
  }
}

std::vector<Segment> parse_key_path(std::string_view path, const std::string& where) {
  auto bad = [&] {
    throw Error("expected KEY.PATH=VALUE with keys like `optimizer.lr` or `data.mixture[1].weight`", in_file(where));
  };
  std::vector<Segment> segs;
  std::size_t i = 0;
  auto is_key_char = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'; };
  while (true) {
    std::size_t start = i;
    while (i < path.size() && is_key_char(path[i])) ++i;
    if (i == start) bad();
    segs.push_back({std::string(path.substr(start, i - start)), std::nullopt});
    while (i < path.size() && path[i] == '[') {
      std::size_t close = path.find(']', i);
      if (close == std::string_view::npos) bad();
      auto idx = parse_int(path.substr(i + 1, close - i - 1));
      if (!idx || *idx < 0) bad();
      segs.push_back({"", static_cast<std::size_t>(*idx)});
      i = close + 1;
    }
    if (i == path.size()) return segs;
    if (path[i] != '.') bad();
    ++i;
  }
}

Override apply_override(YAML::Node& root, const std::string& text) {
  const std::string where = "--set " + text;
  auto eq = text.find('=');
  if (eq == std::string::npos) throw Error("expected KEY.PATH=VALUE", in_file(where));
  std::vector<Segment> segs = parse_key_path(std::string_view(text).substr(0, eq), where);
  YAML::Node value = load_yaml(text.substr(eq + 1), where, /*is_file=*/false);

  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  YAML::Node cur = root;  // a handle into the tree: assignments through it edit `root`
  std::string path;
  for (std::size_t k = 0; k < segs.size(); ++k) {
    const Segment& s = segs[k];
    bool last = k + 1 == segs.size();
    if (s.index) {
      if (!cur.IsSequence()) {
        throw Error(str("cannot index ", path, "[", *s.index, "]: ", path, " is not a list"), in_file(where, path));
      }
      if (*s.index >= cur.size()) {
        throw Error(str("index ", *s.index, " is out of range (the list has ", cur.size(),
                        cur.size() == 1 ? " element)" : " elements)"),
                    in_file(where, path));
      }
      path = str(path, "[", *s.index, "]");
      if (last) {
        cur[*s.index] = value;
      } else {
        YAML::Node next = cur[*s.index];
        cur.reset(next);
      }
    } else {
      if (!cur.IsMap() && !cur.IsNull()) {
        throw Error(str("cannot set key '", s.name, "': ", path.empty() ? "the document" : path, " is not a map"),
                    in_file(where, path));
      }
      path = child_path(path, s.name);
      if (last) {
        cur[s.name] = value;
      } else {
        if (!cur[s.name].IsDefined() || cur[s.name].IsNull()) cur[s.name] = YAML::Node(YAML::NodeType::Map);
        YAML::Node next = cur[s.name];
        cur.reset(next);
      }
    }
  }
  return {text, path};
}

/// `mkdir -p dir`.
void make_dirs(const std::string& dir) {
  for (std::size_t pos = dir.find('/', 1);; pos = dir.find('/', pos + 1)) {
    const std::string prefix = dir.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      throw Error(str("cannot create directory: ", std::strerror(errno)), in_file(prefix));
    }
    if (pos == std::string::npos) break;
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) throw Error("not a directory", in_file(dir));
}

bool is_under(const std::string& key, const std::string& prefix) {
  if (key.size() < prefix.size() || key.compare(0, prefix.size(), prefix) != 0) return false;
  return key.size() == prefix.size() || key[prefix.size()] == '.' || key[prefix.size()] == '[';
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Entry points behind the templates in config.h.

std::string origin_of(const Origins& origins, const std::string& key, const std::string& fallback) {
  for (std::string path = key; !path.empty(); path = parent_path(path)) {
    if (auto it = origins.find(path); it != origins.end()) return it->second;
  }
  return fallback;
}

namespace detail {

void parse_yaml(std::string_view text, const std::string& source, const std::vector<std::string>& overrides,
                const VisitRoot& visit, Origins* origins) {
  YAML::Node root = load_yaml(std::string(text), source);
  std::vector<Override> applied;
  for (const auto& o : overrides) applied.push_back(apply_override(root, o));
  // Where the key at `key` (written on `line`, 0: not in the file) came from. The latest override
  // at or above the key wins; then the file's line; then an override below the key, which created
  // it (such as an unknown key's map). Never a line of an override's text, whose nodes have marks
  // of their own.
  auto origin = [&](const std::string& key, int64_t line) -> std::string {
    for (auto it = applied.rbegin(); it != applied.rend(); ++it) {
      if (is_under(key, it->path)) return "--set " + it->text;
    }
    if (line > 0) return str(source, ":", line);
    for (auto it = applied.rbegin(); it != applied.rend(); ++it) {
      if (is_under(it->path, key)) return "--set " + it->text;
    }
    return source;
  };
  YamlReader reader(root);
  try {
    visit(reader);
    Validator validator;
    visit(validator);
  } catch (const Error& e) {
    ErrorContext c = e.context();
    if (c.file.empty()) {
      const auto* at_line = dynamic_cast<const LineError*>(&e);
      c.file = origin(c.key, at_line ? at_line->line() : reader.line_of_key(c.key));
    }
    throw Error(e.message(), c);
  }
  if (origins) {
    for (const auto& [path, line] : reader.lines()) (*origins)[path] = origin(path, line);
  }
}

// Files are handled with POSIX calls, not std::filesystem: the torch wheel's libtorch.so exports
// its own copies of std::filesystem functions, which win symbol resolution in every binary that
// links torch, and some of them crash (remove_all does).

std::string read_text_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw Error(
        errno == ENOENT ? std::string("config file not found") : str("cannot access file: ", std::strerror(errno)),
        in_file(path));
  }
  if (!S_ISREG(st.st_mode)) throw Error("not a regular file", in_file(path));
  std::ifstream in(path, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  if (!in) throw Error(str("cannot read config file: ", std::strerror(errno)), in_file(path));
  return os.str();
}

std::string dump_yaml(const VisitRoot& visit) {
  YamlWriter writer;
  visit(writer);
  return writer.text();
}

void validate(const VisitRoot& visit) {
  Validator validator;
  visit(validator);
}

std::vector<FieldInfo> describe(const VisitRoot& visit) {
  Describer describer;
  visit(describer);
  return std::move(describer.fields);
}

void write_file_atomic(const std::string& path, std::string_view text) {
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  make_dirs(dir);
  // Same directory as the target, so rename() is atomic; the pid keeps concurrent writers apart.
  const std::string tmp = str(path, ".tmp.", ::getpid());
  auto fail = [&](const char* what) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw Error(str(what, ": ", std::strerror(err)), in_file(path));
  };
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create file");
  for (std::size_t done = 0; done < text.size();) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(fd);
      fail("cannot write file");
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    fail("cannot sync file");
  }
  if (::close(fd) != 0) fail("cannot close file");
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("cannot rename temporary file into place");
  // Make the rename itself durable; failure here loses nothing already written.
  int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

}  // namespace detail
}  // namespace prism::config
