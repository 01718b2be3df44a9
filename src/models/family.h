// The registry of architecture families, keyed by config.json "model_type". Each family file
// owns its config keys and HF tensor names (style.md rule 2); nothing else in prism spells them.
#pragma once

#include <string>
#include <vector>

#include "models/json_util.h"
#include "prism/models/model_config.h"

namespace prism::models {

struct Family {
  const char* model_type;
  const char* description;
  ModelConfig (*parse)(const JsonReader& cfg);
};

/// The immutable table (registry.cpp).
const std::vector<Family>& families();
/// Throws naming the file and listing supported types when `model_type` is unknown.
const Family& find_family(const std::string& model_type, const std::string& file);

// Family parsers (one file each) are declared next to their row in registry.cpp, the only
// caller, so that adding a family touches that one table and not this header.
/// Granite's embedding/residual/attention multipliers and logits_scaling (granite.cpp).
void parse_granite_multipliers(const JsonReader& cfg, ModelConfig& m);
/// `mamba_*` keys of GraniteMoeHybrid / Bamba into m.mamba (granitemoehybrid.cpp).
void parse_granite_style_mamba(const JsonReader& cfg, ModelConfig& m);

// Shared helpers for families (dense_common.cpp).
/// Common transformer fields (sizes, eps, head_dim, rope in both spellings, biases, tying).
void parse_transformer_common(const JsonReader& cfg, ModelConfig& m);
/// `initializer_range` (default 0.02, transformers' default for every supported family).
void parse_init_fields(const JsonReader& cfg, ModelConfig& m);
/// Rejects settings prism does not implement so they never pass silently.
void refuse_unsupported_common(const JsonReader& cfg);

}  // namespace prism::models
