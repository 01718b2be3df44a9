// Reading config.json with errors that name the file and the key. Families call these instead
// of nlohmann accessors so that a wrong type or unsupported value never passes silently.
#pragma once

#include <nlohmann/json.hpp>

#include <limits>
#include <optional>
#include <string>

#include "prism/core/error.h"

namespace prism::models {

class JsonReader {
 public:
  JsonReader(const nlohmann::json& j, std::string file) : j_(j), file_(std::move(file)) {}

  const nlohmann::json& json() const { return j_; }
  const std::string& file() const { return file_; }
  bool has(const std::string& key) const { return j_.contains(key) && !j_.at(key).is_null(); }

  int64_t integer(const std::string& key) const {
    require(key);
    return as_int(j_.at(key), key);
  }
  int64_t integer(const std::string& key, int64_t def) const { return has(key) ? as_int(j_.at(key), key) : def; }
  /// A size of the model (hidden_size, num_hidden_layers, ...): an integer in [1, max]. The cap
  /// keeps absurd configs from overflowing shape products or building millions of layer specs
  /// before check_fits can refuse them; each key is blamed for its own value.
  static constexpr int64_t kMaxDimension = int64_t{1} << 31;
  static constexpr int64_t kMaxLayers = int64_t{1} << 16;
  int64_t dimension(const std::string& key, int64_t max = kMaxDimension) const {
    require(key);
    return check_dimension(as_int(j_.at(key), key), key, max);
  }
  int64_t dimension(const std::string& key, int64_t def, int64_t max) const {
    return has(key) ? check_dimension(as_int(j_.at(key), key), key, max) : def;
  }
  int64_t check_dimension(int64_t v, const std::string& key, int64_t max = kMaxDimension) const {
    if (v < 1 || v > max)
      throw Error("must be a positive integer", key_context(file_, key, "an integer in [1, " + std::to_string(max) + "]",
                                                            std::to_string(v)));
    return v;
  }

  double number(const std::string& key) const {
    require(key);
    return as_num(j_.at(key), key);
  }
  double number(const std::string& key, double def) const { return has(key) ? as_num(j_.at(key), key) : def; }
  bool boolean(const std::string& key, bool def) const {
    if (!has(key)) return def;
    const auto& v = j_.at(key);
    if (!v.is_boolean()) throw Error("expected a boolean", key_context(file_, key, "true or false", v.dump()));
    return v.get<bool>();
  }
  std::string string(const std::string& key, const std::string& def) const {
    if (!has(key)) return def;
    const auto& v = j_.at(key);
    if (!v.is_string()) throw Error("expected a string", key_context(file_, key, "a string", v.dump()));
    return v.get<std::string>();
  }
  void require(const std::string& key) const {
    if (!has(key)) throw Error("missing required key", key_context(file_, key, "", ""));
  }
  [[noreturn]] void refuse(const std::string& key, const std::string& why) const {
    throw Error("unsupported value: " + why, key_context(file_, key, "", has(key) ? j_.at(key).dump() : "absent"));
  }

  int64_t as_int(const nlohmann::json& v, const std::string& key) const {
    if (v.is_number_integer() || v.is_number_unsigned()) return v.get<int64_t>();
    if (v.is_number_float() && v.get<double>() == static_cast<double>(static_cast<int64_t>(v.get<double>())))
      return static_cast<int64_t>(v.get<double>());
    throw Error("expected an integer", key_context(file_, key, "an integer", v.dump()));
  }
  double as_num(const nlohmann::json& v, const std::string& key) const {
    if (v.is_number()) return v.get<double>();
    // transformers v5 writes non-finite floats as {"__float__": "Infinity"} (e.g. time_step_limit).
    if (v.is_object() && v.size() == 1 && v.contains("__float__") && v.at("__float__").is_string()) {
      const auto s = v.at("__float__").get<std::string>();
      if (s == "Infinity") return std::numeric_limits<double>::infinity();
      if (s == "-Infinity") return -std::numeric_limits<double>::infinity();
    }
    throw Error("expected a number", key_context(file_, key, "a number", v.dump()));
  }

 private:
  const nlohmann::json& j_;
  std::string file_;
};

}  // namespace prism::models
