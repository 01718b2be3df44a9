// Reading config.json with errors that name the file and the key. Families call these instead
// of nlohmann accessors so that a wrong type or unsupported value never passes silently.
#pragma once

#include <nlohmann/json.hpp>

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
  double number(const std::string& key) const {
    require(key);
    return as_num(j_.at(key), key);
  }
  double number(const std::string& key, double def) const { return has(key) ? as_num(j_.at(key), key) : def; }
  bool boolean(const std::string& key, bool def) const {
    if (!has(key)) return def;
    const auto& v = j_.at(key);
    if (!v.is_boolean()) throw Error("expected a boolean", {file_, key, "true or false", v.dump()});
    return v.get<bool>();
  }
  std::string string(const std::string& key, const std::string& def) const {
    if (!has(key)) return def;
    const auto& v = j_.at(key);
    if (!v.is_string()) throw Error("expected a string", {file_, key, "a string", v.dump()});
    return v.get<std::string>();
  }
  void require(const std::string& key) const {
    if (!has(key)) throw Error("missing required key", {file_, key, "", ""});
  }
  [[noreturn]] void refuse(const std::string& key, const std::string& why) const {
    throw Error("unsupported value: " + why, {file_, key, "", has(key) ? j_.at(key).dump() : "absent"});
  }

  int64_t as_int(const nlohmann::json& v, const std::string& key) const {
    if (v.is_number_integer() || v.is_number_unsigned()) return v.get<int64_t>();
    if (v.is_number_float() && v.get<double>() == static_cast<double>(static_cast<int64_t>(v.get<double>())))
      return static_cast<int64_t>(v.get<double>());
    throw Error("expected an integer", {file_, key, "an integer", v.dump()});
  }
  double as_num(const nlohmann::json& v, const std::string& key) const {
    if (v.is_number()) return v.get<double>();
    throw Error("expected a number", {file_, key, "a number", v.dump()});
  }

 private:
  const nlohmann::json& j_;
  std::string file_;
};

}  // namespace prism::models
