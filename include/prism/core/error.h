// prism::Error: the one exception type of the library.
//
// Why one type with context fields: a user loading a 20-shard checkpoint needs to know *which*
// file, key or tensor was wrong and what was expected, not just that something failed. The CLIs
// catch prism::Error (and std::exception) once and print what() on a single line.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace prism {

/// Where an error happened. Empty fields are omitted from the message.
struct ErrorContext {
  std::string file;      ///< file path (checkpoint shard, YAML, JSON …)
  std::string key;       ///< config key path (`optimizer.lr`) or JSON key
  std::string tensor;    ///< tensor name (`model.layers.3.mlp.up_proj.weight`)
  std::string expected;  ///< what was expected
  std::string found;     ///< what was found
};

/// Context for a config/CLI key: `key_context(file, "optimizer.lr", "a number > 0", "\"abc\"")`.
inline ErrorContext key_context(std::string file, std::string key, std::string expected = {}, std::string found = {}) {
  ErrorContext c;
  c.file = std::move(file);
  c.key = std::move(key);
  c.expected = std::move(expected);
  c.found = std::move(found);
  return c;
}

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, ErrorContext ctx = {})
      : std::runtime_error(format(message, ctx)), message_(message), ctx_(std::move(ctx)) {}

  /// The bare message, without the context prefix/suffix.
  const std::string& message() const noexcept { return message_; }
  const ErrorContext& context() const noexcept { return ctx_; }

  /// `file: key 'k': tensor 't': message (expected E, found F)`.
  static std::string format(const std::string& message, const ErrorContext& c) {
    std::string s;
    if (!c.file.empty()) s += c.file + ": ";
    if (!c.key.empty()) s += c.key + ": ";
    if (!c.tensor.empty()) s += "tensor '" + c.tensor + "': ";
    s += message;
    if (!c.expected.empty() || !c.found.empty()) {
      s += " (";
      if (!c.expected.empty()) s += "expected " + c.expected;
      if (!c.expected.empty() && !c.found.empty()) s += ", ";
      if (!c.found.empty()) s += "found " + c.found;
      s += ")";
    }
    return s;
  }

 private:
  std::string message_;
  ErrorContext ctx_;
};

/// Concatenates anything streamable (`str("got ", n, " tensors")`). Used for messages only.
template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace prism

/// Throws prism::Error with the concatenated message when `cond` is false.
#define PRISM_CHECK(cond, ...)                                 \
  do {                                                         \
    if (!(cond)) throw ::prism::Error(::prism::str(__VA_ARGS__)); \
  } while (0)
