// Mistral family (MistralForCausalLM: Mistral-7B-v0.1 with its 4096 sliding window,
// Mistral-Small-24B with head_dim 128 != hidden/heads). Llama layout, never any bias.
#include "models/family.h"
#include "models/llama_layout.h"

namespace prism::models {

ModelConfig parse_mistral(const JsonReader& cfg) {
  refuse_unsupported_common(cfg);
  ModelConfig m;
  m.model_type = "mistral";
  parse_transformer_common(cfg, m);
  m.attention_bias = false;  // MistralAttention hard-codes bias=False
  m.mlp_bias = false;
  m.sliding_window = cfg.integer("sliding_window", 0);  // null = full causal
  if (m.sliding_window < 0) cfg.refuse("sliding_window", "must be a positive integer or null");
  m.mlp = MlpKind::kSwiGLU;
  llama_layout(m, cfg.dimension("num_hidden_layers", JsonReader::kMaxLayers));
  return m;
}

}  // namespace prism::models
