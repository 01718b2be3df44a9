// The "model.layers.{i}.{self_attn,mlp}" layout shared by Llama, Mistral and Granite 3.x.
#pragma once

#include <cstdint>

#include "prism/models/model_config.h"

namespace prism::models {
void llama_layout(ModelConfig& m, int64_t num_layers);
}  // namespace prism::models
