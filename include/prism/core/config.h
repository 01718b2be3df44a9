// prism::config: typed, validated configuration structs, with YAML only at the edge.
//
// Why a visitor: every config struct declares its fields exactly once, in a `visit()` member,
// and that single declaration drives reading YAML (with key paths in errors), dumping the
// resolved config, validating ranges/choices of structs built directly in C++, and listing the
// fields with their docs. There is no second table to keep in sync.
//
// Why the Visitor is abstract: the templates below must stay YAML-free (style.md §3 rule 1), so
// they only walk the struct and call a handful of virtual hooks; the YAML reader and writer that
// implement those hooks live in src/core/config.cpp, the only place that sees yaml-cpp.
//
// **Example**:
//
//     struct OptimizerConfig {
//       double lr = 3e-4;
//       std::array<double, 2> betas{0.9, 0.95};
//       void visit(prism::config::Visitor& v) {
//         v.field("lr", lr, prism::config::positive(), "peak learning rate");
//         v.field("betas", betas, prism::config::range(0, 1), "AdamW betas");
//       }
//     };
//     auto cfg = prism::config::load_config<OptimizerConfig>("opt.yaml", {"lr=1e-3"});
//
// A struct may also define `void validate() const` for cross-field rules; it runs after parsing
// and in validate_config(), and a prism::Error it throws gets the struct's key path prepended.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "prism/core/error.h"

namespace prism::config {

/// Constraints on one field. Bounds and choices apply to scalars, and to every element of a
/// list; `min_items` applies to lists and strings. Build them with the helpers below and
/// combine with `&`: `required() & non_empty() & non_negative()`.
struct Check {
  std::optional<double> min, max;    ///< numeric bounds
  bool min_exclusive = false;        ///< `> min` instead of `>= min`
  bool max_exclusive = false;        ///< `< max` instead of `<= max`
  std::vector<std::string> choices;  ///< allowed strings (empty: any)
  std::size_t min_items = 0;         ///< minimum list length / string length
  bool required = false;             ///< no default: the key must be present in YAML
  /// Numbers: accept .inf / -.inf / .nan. Off by default: a non-finite learning rate or weight is
  /// always a mistake, and it surfaces steps later as NaN weights, so it is refused at parse time.
  bool allow_non_finite = false;
};

/// Combines two checks; the tighter bound wins.
Check operator&(Check a, const Check& b);

// (Built by assignment: GCC 12's -Wextra warns on designated initializers that skip members.)
inline Check greater_than(double lo) {
  Check c;
  c.min = lo;
  c.min_exclusive = true;
  return c;
}
inline Check at_least(double lo) {
  Check c;
  c.min = lo;
  return c;
}
inline Check less_than(double hi) {
  Check c;
  c.max = hi;
  c.max_exclusive = true;
  return c;
}
inline Check at_most(double hi) {
  Check c;
  c.max = hi;
  return c;
}
inline Check positive() { return greater_than(0); }
inline Check non_negative() { return at_least(0); }
/// Closed interval [lo, hi]; for half-open ones combine: `greater_than(0) & at_most(1)`.
inline Check range(double lo, double hi) { return at_least(lo) & at_most(hi); }
inline Check one_of(std::vector<std::string> choices) {
  Check c;
  c.choices = std::move(choices);
  return c;
}
inline Check non_empty() {
  Check c;
  c.min_items = 1;
  return c;
}
inline Check required() {
  Check c;
  c.required = true;
  return c;
}
/// Lets a number field hold .inf, -.inf or .nan (no field needs it today).
inline Check non_finite_ok() {
  Check c;
  c.allow_non_finite = true;
  return c;
}

/// What a field holds, computed from its C++ type; used for messages and docs.
enum class Kind { kBool, kInt, kNumber, kString, kStruct, kList };
struct TypeDesc {
  constexpr TypeDesc(Kind kind = Kind::kStruct, Kind item = Kind::kStruct, std::size_t fixed_size = 0)
      : kind(kind), item(item), fixed_size(fixed_size) {}
  Kind kind;
  Kind item;               ///< element kind when kind == kList
  std::size_t fixed_size;  ///< std::array length (0: any length)
  bool optional = false;   ///< std::optional<...>: null allowed
};

/// One field as listed by describe_config().
struct FieldInfo {
  std::string path;           ///< `data.mixture[].weight` (`[]`: any list element)
  std::string expected;       ///< `a number > 0`
  std::string default_value;  ///< YAML text of the default (empty for maps and required keys)
  std::string doc;
  bool required = false;
};

/// A reference to one scalar field; the only leaf types the readers/writers handle.
using ScalarRef = std::variant<bool*, int*, std::int64_t*, double*, std::string*>;

class Visitor;

namespace detail {
template <class T>
inline constexpr bool kIsScalar =
    std::is_same_v<T, bool> || std::is_same_v<T, int> || std::is_same_v<T, std::int64_t> || std::is_same_v<T, double> ||
    std::is_same_v<T, std::string>;
template <class T>
concept Struct = requires(T& t, Visitor& v) {
  t.visit(v);
};
template <class T>
struct Optional : std::false_type {};
template <class T>
struct Optional<std::optional<T>> : std::true_type {
  using Item = T;
};
template <class T>
struct Vector : std::false_type {};
template <class T>
struct Vector<std::vector<T>> : std::true_type {
  using Item = T;
};
template <class T>
struct Array : std::false_type {};
template <class T, std::size_t N>
struct Array<std::array<T, N>> : std::true_type {
  using Item = T;
  static constexpr std::size_t kSize = N;
};

template <class T>
constexpr TypeDesc type_desc() {
  if constexpr (std::is_same_v<T, bool>) {
    return {Kind::kBool};
  } else if constexpr (std::is_same_v<T, int> || std::is_same_v<T, std::int64_t>) {
    return {Kind::kInt};
  } else if constexpr (std::is_same_v<T, double>) {
    return {Kind::kNumber};
  } else if constexpr (std::is_same_v<T, std::string>) {
    return {Kind::kString};
  } else if constexpr (Optional<T>::value) {
    TypeDesc d = type_desc<typename Optional<T>::Item>();
    d.optional = true;
    return d;
  } else if constexpr (Vector<T>::value) {
    return {Kind::kList, type_desc<typename Vector<T>::Item>().kind};
  } else if constexpr (Array<T>::value) {
    return {Kind::kList, type_desc<typename Array<T>::Item>().kind, Array<T>::kSize};
  } else {
    return {Kind::kStruct};
  }
}
}  // namespace detail

/// Walks a config struct. Struct authors only call field() and choice() inside `visit()`; the
/// protected hooks are implemented by the reader, writer, validator and describer.
class Visitor {
 public:
  virtual ~Visitor() = default;

  /// Declares one field. T: bool, int, int64_t, double, std::string, a struct with visit(),
  /// std::optional<T>, std::vector<T> or std::array<T, N> of those.
  template <class T>
  void field(std::string_view key, T& value, const Check& check = {}, std::string_view doc = {}) {
    enter_field(key, detail::type_desc<T>(), check, doc);
    visit_value(value, check);
    leave_field();
  }
  template <class T>
  void field(std::string_view key, T& value, std::string_view doc) {
    field(key, value, Check{}, doc);
  }

  /// Declares an enum field spelled as one of the given names in YAML:
  /// `v.choice("dtype", dtype, {{Dtype::kFp32, "fp32"}, {Dtype::kBf16, "bf16"}})`.
  template <class E>
  requires std::is_enum_v<E>
  void choice(std::string_view key, E& value, std::initializer_list<std::pair<E, const char*>> names, Check check = {},
              std::string_view doc = {}) {
    std::string name;
    for (const auto& [e, n] : names) {
      check.choices.emplace_back(n);
      if (e == value) name = n;
    }
    enter_field(key, {Kind::kString}, check, doc);
    scalar(&name, check);
    for (const auto& [e, n] : names) {
      if (name == n) value = e;
    }
    leave_field();
  }
  template <class E>
  requires std::is_enum_v<E>
  void choice(std::string_view key, E& value, std::initializer_list<std::pair<E, const char*>> names,
              std::string_view doc) {
    choice(key, value, names, Check{}, doc);
  }

  /// Visits one value (a whole config struct, at the root). Used by the entry points below.
  template <class T>
  void visit_value(T& x, const Check& check = {}) {
    if constexpr (detail::kIsScalar<T>) {
      scalar(&x, check);
    } else if constexpr (detail::Struct<T>) {
      enter_struct();
      x.visit(*this);
      if constexpr (requires(const T& t) { t.validate(); }) {
        check_struct([&x] { std::as_const(x).validate(); });
      }
      leave_struct();
    } else if constexpr (detail::Optional<T>::value) {
      if (enter_optional(x.has_value())) {
        if (!x) x.emplace();
        visit_value(*x, check);
      } else {
        x.reset();
      }
    } else if constexpr (detail::Vector<T>::value) {
      using Item = typename detail::Vector<T>::Item;
      static_assert(!std::is_same_v<Item, bool>, "use std::vector<int> (std::vector<bool> has no bool&)");
      // A reader replaces the list with fresh default elements, so that keys missing from a
      // YAML element take the element type's defaults, not those of a default list entry.
      if (auto n = enter_list(x.size(), 0, detail::Struct<Item>, check)) {
        x.clear();
        x.resize(*n);
      }
      visit_items(x, check);
    } else if constexpr (detail::Array<T>::value) {
      using Item = typename detail::Array<T>::Item;
      if (enter_list(x.size(), x.size(), detail::Struct<Item>, check)) x.fill(Item{});
      visit_items(x, check);
    } else {
      static_assert(detail::kIsScalar<T>, "unsupported config field type (see Visitor::field)");
    }
  }

 protected:
  // The hooks, called in nesting order: enter_field(key) then the value's hooks then leave_field().
  virtual void enter_field(std::string_view key, const TypeDesc& desc, const Check& check, std::string_view doc) = 0;
  virtual void leave_field() = 0;
  virtual void scalar(ScalarRef value, const Check& check) = 0;
  virtual void enter_struct() = 0;
  virtual void leave_struct() = 0;
  /// Returns the new length when the list must be replaced by that many default elements.
  virtual std::optional<std::size_t> enter_list(std::size_t size, std::size_t fixed_size, bool of_structs,
                                                const Check& check) = 0;
  virtual void enter_item(std::size_t index) = 0;
  virtual void leave_item() = 0;
  virtual void leave_list() = 0;
  /// Returns whether the optional holds a value after this call (false: reset it).
  virtual bool enter_optional(bool has_value) = 0;
  /// Runs a struct's cross-field validate(); only the validator does.
  virtual void check_struct(const std::function<void()>& /*validate*/) {}

 private:
  template <class L>
  void visit_items(L& list, const Check& check) {
    for (std::size_t i = 0; i < list.size(); ++i) {
      enter_item(i);
      visit_value(list[i], check);
      leave_item();
    }
    leave_list();
  }
};

/// Where each key of a parsed config was written: key path (`optimizer.lr`, `rl.set[0]`) ->
/// `file:line`, or `--set KEY=VALUE` for a key an override wrote. Lets a caller that finds a bad
/// value after parsing (or composes another config from it) point at the line, as parse errors do.
using Origins = std::map<std::string, std::string>;

/// The origin of `key` or, when the key was not written (a default), of its nearest written
/// parent; `fallback` (typically the file name) when neither was.
std::string origin_of(const Origins& origins, const std::string& key, const std::string& fallback);

namespace detail {
/// Visits a root struct with the given visitor.
using VisitRoot = std::function<void(Visitor&)>;
void parse_yaml(std::string_view text, const std::string& source, const std::vector<std::string>& overrides,
                const VisitRoot& visit, Origins* origins);
std::string read_text_file(const std::string& path);
std::string dump_yaml(const VisitRoot& visit);
void validate(const VisitRoot& visit);
std::vector<FieldInfo> describe(const VisitRoot& visit);
void write_file_atomic(const std::string& path, std::string_view text);
}  // namespace detail

/// Parses YAML text into T, then applies `overrides` (`a.b[2].c=value`, value parsed as YAML).
/// Unknown keys, duplicate keys, wrong types, out-of-range values, bad choices, failed validate()
/// rules and missing required keys throw prism::Error naming where the key was written and its
/// path: `source:12: optimizer.lr: expected a number > 0, got -1`, or `--set optimizer.lr=-1: ...`
/// for a value from an override. `origins`, when given, receives where every key was written.
template <class T>
T parse_config_string(std::string_view yaml, const std::vector<std::string>& overrides = {},
                      const std::string& source = "<string>", Origins* origins = nullptr) {
  T cfg{};
  auto visit = [&cfg](Visitor& v) { v.visit_value(cfg); };
  detail::parse_yaml(yaml, source, overrides, visit, origins);
  return cfg;
}

/// Reads and parses a YAML file (see parse_config_string); errors name `path` and the line.
template <class T>
T load_config(const std::string& path, const std::vector<std::string>& overrides = {}, Origins* origins = nullptr) {
  return parse_config_string<T>(detail::read_text_file(path), overrides, path, origins);
}

/// The fully resolved config (defaults included) as YAML; parse_config_string reads it back equal.
template <class T>
std::string dump_config(const T& cfg) {
  T copy = cfg;  // the visitor interface is non-const; configs are small
  return detail::dump_yaml([&copy](Visitor& v) { v.visit_value(copy); });
}

/// Writes dump_config(cfg) to `path` atomically (temp file, fsync, rename); creates parent dirs.
template <class T>
void save_config(const T& cfg, const std::string& path) {
  detail::write_file_atomic(path, dump_config(cfg));
}

/// Checks a struct built in C++ against its declared constraints (and its validate()); throws
/// prism::Error with the key path. parse/load run this after reading.
template <class T>
void validate_config(const T& cfg) {
  T copy = cfg;
  detail::validate([&copy](Visitor& v) { v.visit_value(copy); });
}

/// Every field of T in declaration order, with its expected value, default and doc.
template <class T>
std::vector<FieldInfo> describe_config() {
  T cfg{};
  return detail::describe([&cfg](Visitor& v) { v.visit_value(cfg); });
}

}  // namespace prism::config
