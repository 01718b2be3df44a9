// Owns the safetensors header parser and validator: parse_safetensors_header, the dtype table.
//
// Why it is torch-free: this is the one place that reads untrusted bytes from disk, so it is
// fuzzed on its own (tests/fuzz/run_fuzz.sh compiles this file alone with libFuzzer + ASan +
// UBSan, without LibTorch). Every offset and size is validated here, before safetensors.cpp
// creates a single tensor view into the mapping, so any input gives either a header whose
// tensors lie exactly inside the buffer or a prism::Error naming the file and the tensor.
//
// The rules are the reference validator's (huggingface/safetensors src/tensor.rs): header length
// within the file and <= 100 MB, a JSON object starting with '{' (right-padding with whitespace
// allowed), no duplicate keys, known dtypes, byte span == numel * itemsize, and the tensors
// covering the buffer contiguously in offset order (no overlap, no hole, no trailing bytes).
#define PRISM_IO_SAFETENSORS_NO_TORCH
#include "prism/io/safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "prism/core/error.h"
#include "safetensors_header.h"

namespace prism::io {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference's MAX_HEADER_SIZE
constexpr size_t kMaxJsonDepth = 128;              // a valid header needs 3; bounds the DOM

struct DtypeRow {
  std::string_view name;
  size_t size;  // bytes per element
  int rank;     // position in the reference Dtype enum (see safetensors_header.h)
};

// Byte-sized dtypes only. The sub-byte ones (F4, F6_E2M3, F6_E3M2) have no ATen equivalent and
// are rejected as unsupported; their ranks 1..3 are kept free so the numbering matches the enum.
constexpr std::array<DtypeRow, 19> kDtypes{{
    {"BOOL", 1, 0},         {"U8", 1, 4},           {"I8", 1, 5},           {"F8_E5M2", 1, 6},
    {"F8_E4M3", 1, 7},      {"F8_E8M0", 1, 8},      {"F8_E4M3FNUZ", 1, 9},  {"F8_E5M2FNUZ", 1, 10},
    {"I16", 2, 11},         {"U16", 2, 12},         {"F16", 2, 13},         {"BF16", 2, 14},
    {"I32", 4, 15},         {"U32", 4, 16},         {"F32", 4, 17},         {"C64", 8, 18},
    {"F64", 8, 19},         {"I64", 8, 20},         {"U64", 8, 21},
}};

const DtypeRow* find_dtype(std::string_view name) {
  for (const auto& row : kDtypes)
    if (row.name == name) return &row;
  return nullptr;
}

std::string known_dtypes() {
  std::string s = "one of";
  for (const auto& row : kDtypes) s += str(" ", row.name);
  return s;
}

// A short rendering of an untrusted JSON value for error messages: never the whole 100 MB.
std::string short_dump(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 64) s = s.substr(0, 61) + "...";
  return s;
}

// Reads a JSON value that must be a non-negative integer no larger than `max`.
bool as_uint(const json& v, uint64_t max, uint64_t* out) {
  if (!v.is_number_unsigned()) return false;
  uint64_t x = v.get<uint64_t>();
  if (x > max) return false;
  *out = x;
  return true;
}

TensorInfo parse_entry(const std::string& name, const json& entry, uint64_t buffer_size, const std::string& path) {
  auto fail = [&](const std::string& msg, std::string expected = "", std::string found = "") {
    return Error(msg, ErrorContext{path, "", name, std::move(expected), std::move(found)});
  };
  if (!entry.is_object()) throw fail("header entry is not a JSON object", "an object", short_dump(entry));
  TensorInfo info;
  info.name = name;

  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end()) throw fail("header entry has no \"dtype\"");
  if (!dtype_it->is_string()) throw fail("\"dtype\" is not a string", "a string", short_dump(*dtype_it));
  info.dtype = dtype_it->get<std::string>();
  const DtypeRow* dtype = find_dtype(info.dtype);
  if (dtype == nullptr) throw fail("unknown or unsupported dtype", known_dtypes(), short_dump(*dtype_it));

  auto shape_it = entry.find("shape");
  if (shape_it == entry.end()) throw fail("header entry has no \"shape\"");
  if (!shape_it->is_array()) throw fail("\"shape\" is not an array", "an array", short_dump(*shape_it));
  // numel is guarded with every dimension counted as at least 1, so that ATen's contiguous
  // strides (which multiply max(d, 1)) cannot overflow either, even for a zero-size tensor.
  uint64_t strides_product = 1;
  bool has_zero = false;
  for (const auto& d : *shape_it) {
    uint64_t dim = 0;
    if (!as_uint(d, static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), &dim))
      throw fail("\"shape\" must hold non-negative integers", "integers in [0, 2^63)", short_dump(d));
    if (dim == 0) has_zero = true;
    if (__builtin_mul_overflow(strides_product, std::max<uint64_t>(dim, 1), &strides_product) ||
        strides_product > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      throw fail("shape overflows: its element count does not fit in 63 bits", "", short_dump(*shape_it));
    info.shape.push_back(static_cast<int64_t>(dim));
  }
  const uint64_t numel = has_zero ? 0 : strides_product;
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dtype->size), &nbytes))
    throw fail("shape overflows: its byte size does not fit in 64 bits", "", short_dump(*shape_it));

  auto off_it = entry.find("data_offsets");
  if (off_it == entry.end()) throw fail("header entry has no \"data_offsets\"");
  const uint64_t kMax = std::numeric_limits<uint64_t>::max();
  if (!off_it->is_array() || off_it->size() != 2 || !as_uint((*off_it)[0], kMax, &info.begin) ||
      !as_uint((*off_it)[1], kMax, &info.end))
    throw fail("\"data_offsets\" must be [begin, end] with non-negative integers", "[begin, end]",
               short_dump(*off_it));
  if (info.begin > info.end)
    throw fail("data_offsets begin > end", str("begin <= ", info.end), str("begin ", info.begin));
  if (info.end > buffer_size)
    throw fail("data_offsets out of range", str("end <= ", buffer_size), str(info.end));
  if (info.end - info.begin != nbytes)
    throw fail(str("byte span does not match shape and dtype ", info.dtype), str(nbytes, " bytes"),
               str(info.end - info.begin, " bytes"));
  return info;
}

}  // namespace

namespace detail {

int safetensors_dtype_rank(const std::string& dtype) {
  const DtypeRow* row = find_dtype(dtype);
  if (row == nullptr) throw Error("unknown safetensors dtype", ErrorContext{"", "", "", known_dtypes(), dtype});
  return row->rank;
}

json parse_json_strict(std::string_view text, const std::string& path) {
  // One key set per open object; arrays push an empty marker so the depth count includes them.
  std::vector<std::set<std::string>> open;
  std::vector<bool> is_object;
  auto callback = [&](int /*depth*/, json::parse_event_t event, json& parsed) -> bool {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (is_object.size() >= kMaxJsonDepth)
          throw Error("JSON nested too deeply", ErrorContext{path, "", "", str("depth <= ", kMaxJsonDepth), ""});
        is_object.push_back(event == json::parse_event_t::object_start);
        open.emplace_back();
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        if (!open.empty()) {
          open.pop_back();
          is_object.pop_back();
        }
        break;
      case json::parse_event_t::key:
        if (!open.empty() && parsed.is_string()) {
          const auto& k = parsed.get_ref<const std::string&>();
          if (!open.back().insert(k).second) {
            // A duplicate at the top level is a duplicate tensor name; deeper, a duplicate field.
            if (open.size() == 1) throw Error("duplicate tensor name in header", ErrorContext{path, "", k, "", ""});
            throw Error("duplicate key in JSON object", ErrorContext{path, k, "", "", ""});
          }
        }
        break;
      case json::parse_event_t::value:
        break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    throw Error(str("invalid JSON: ", e.what()), ErrorContext{path, "", "", "", ""});
  }
}

}  // namespace detail

size_t safetensors_dtype_size(const std::string& dtype) {
  const DtypeRow* row = find_dtype(dtype);
  if (row == nullptr) throw Error("unknown safetensors dtype", ErrorContext{"", "", "", known_dtypes(), dtype});
  return row->size;
}

SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, const std::string& path) {
  auto fail = [&](const std::string& msg, std::string expected = "", std::string found = "") {
    return Error(msg, ErrorContext{path, "", "", std::move(expected), std::move(found)});
  };
  if (size < 8 || data == nullptr)
    throw fail("file too small for a safetensors header", ">= 8 bytes", str(size, " bytes"));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];  // little-endian u64, any host
  if (n > kMaxHeaderBytes) throw fail("header length too large", str("<= ", kMaxHeaderBytes), str(n));
  if (n > size - 8) throw fail("header length past the end of the file", str("<= ", size - 8), str(n));
  if (n == 0 || data[8] != '{')
    throw fail("header does not start with '{'", "'{'", n == 0 ? "an empty header" : str("byte ", int(data[8])));

  const std::string_view text(reinterpret_cast<const char*>(data + 8), n);
  json j = detail::parse_json_strict(text, path);
  if (!j.is_object()) throw fail("header is not a JSON object");

  SafetensorsHeader header;
  header.header_size = n;
  const uint64_t buffer_size = size - 8 - n;
  for (const auto& [name, value] : j.items()) {
    if (name == "__metadata__") {
      if (!value.is_object())
        throw Error("\"__metadata__\" is not a string->string map", ErrorContext{path, name, "", "an object",
                                                                                  short_dump(value)});
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string())
          throw Error("\"__metadata__\" values must be strings",
                      ErrorContext{path, "__metadata__." + k, "", "a string", short_dump(v)});
        header.metadata.emplace(k, v.get<std::string>());
      }
      continue;
    }
    header.tensors.push_back(parse_entry(name, value, buffer_size, path));
  }

  // The reference rule: in offset order every tensor starts where the previous one ended, and the
  // last one ends at the end of the file. Ties (zero-size tensors) are broken by name so the
  // order is deterministic.
  std::sort(header.tensors.begin(), header.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  uint64_t cursor = 0;
  const TensorInfo* prev = nullptr;
  for (const auto& t : header.tensors) {
    if (t.begin < cursor)
      throw Error(str("data overlaps tensor '", prev->name, "'"),
                  ErrorContext{path, "", t.name, str("begin >= ", cursor), str("begin ", t.begin)});
    if (t.begin > cursor)
      throw Error("hole in the data buffer before this tensor",
                  ErrorContext{path, "", t.name, str("begin == ", cursor), str("begin ", t.begin)});
    cursor = t.end;
    prev = &t;
  }
  if (cursor != buffer_size)
    throw fail("data buffer not fully covered by the tensors (trailing bytes)", str(buffer_size, " bytes used"),
               str(cursor, " bytes used"));
  return header;
}

}  // namespace prism::io
