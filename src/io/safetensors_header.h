// Private helpers shared by the torch-free header parser (safetensors_header.cpp, also compiled
// alone by the fuzzer) and the torch side (safetensors.cpp). Kept out of include/ because it
// exposes nlohmann::json, which public headers must not (style.md rule 1).
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstddef>
#include <string>
#include <string_view>

namespace prism::io::detail {

/// Position of a dtype in the official writer's `Dtype` enum (safetensors/src/tensor.rs). The
/// writer sorts tensors by this rank, descending, then by name; larger rank never means smaller
/// element size, so sorting by it keeps every tensor naturally aligned and makes prism's output
/// byte-identical to Python's `safetensors.torch.save_file`. Throws for unknown dtypes.
int safetensors_dtype_rank(const std::string& dtype);

/// Parses JSON text, rejecting duplicate keys at any depth (nlohmann silently keeps the last one,
/// the reference validator refuses them) and nesting deeper than 128 levels. Every failure is a
/// prism::Error naming `path`.
nlohmann::json parse_json_strict(std::string_view text, const std::string& path);

}  // namespace prism::io::detail
