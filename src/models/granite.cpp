// Granite 3.x family (GraniteForCausalLM): Llama layout plus four multipliers
// (architectures.md §3.3): embeddings x embedding_multiplier, each residual branch x
// residual_multiplier, attention scale = attention_multiplier (replacing 1/sqrt(d)), logits /
// logits_scaling.
#include "models/family.h"
#include "models/llama_layout.h"

namespace prism::models {

void parse_granite_multipliers(const JsonReader& cfg, ModelConfig& m) {
  m.embedding_multiplier = cfg.number("embedding_multiplier", 1.0);
  m.residual_multiplier = cfg.number("residual_multiplier", 1.0);
  m.attention_multiplier = cfg.number("attention_multiplier", 1.0);
  m.logits_scaling = cfg.number("logits_scaling", 1.0);
  if (m.logits_scaling == 0.0) cfg.refuse("logits_scaling", "must be non-zero");
}

ModelConfig parse_granite(const JsonReader& cfg) {
  refuse_unsupported_common(cfg);
  ModelConfig m;
  m.model_type = "granite";
  parse_transformer_common(cfg, m);
  parse_granite_multipliers(cfg, m);
  m.mlp = MlpKind::kSwiGLU;
  llama_layout(m, cfg.dimension("num_hidden_layers", JsonReader::kMaxLayers));
  return m;
}

}  // namespace prism::models
