// Granite 4.0 family (GraniteMoeHybridForCausalLM). Layers are listed in `layer_types`
// ("attention" / "mamba"); every layer has the fused shared MLP
// (`shared_mlp.input_linear` = [gate | up], `shared_mlp.output_linear`) and Granite's
// multipliers. RoPE only when position_embedding_type == "rope" (Granite-4.0-Micro); the
// hybrids use "nope". Routed experts (num_local_experts > 0) are refused.
#include "models/family.h"

namespace prism::models {

ModelConfig parse_granitemoehybrid(const JsonReader& cfg) {
  refuse_unsupported_common(cfg);
  ModelConfig m;
  m.model_type = "granitemoehybrid";
  parse_transformer_common(cfg, m);
  m.embedding_multiplier = cfg.number("embedding_multiplier", 1.0);
  m.residual_multiplier = cfg.number("residual_multiplier", 1.0);
  m.attention_multiplier = cfg.number("attention_multiplier", 1.0);
  m.logits_scaling = cfg.number("logits_scaling", 1.0);
  if (m.logits_scaling == 0.0) cfg.refuse("logits_scaling", "must be non-zero");
  m.use_rope = cfg.string("position_embedding_type", "nope") == "rope";
  if (cfg.integer("num_local_experts", 0) > 0)
    cfg.refuse("num_local_experts", "routed MoE experts are not implemented (only num_local_experts: 0)");
  m.intermediate_size = cfg.integer("shared_intermediate_size");
  m.mlp = MlpKind::kFusedSwiGLU;

  const int64_t n = cfg.integer("num_hidden_layers");
  std::vector<std::string> types;
  const std::string types_key = cfg.has("layer_types") ? "layer_types" : "layers_block_type";
  if (cfg.has(types_key)) {
    const auto& lt = cfg.json().at(types_key);
    if (!lt.is_array()) cfg.refuse(types_key, "expected a list of layer types");
    for (const auto& t : lt) {
      if (!t.is_string()) cfg.refuse(types_key, "expected strings");
      types.push_back(t.get<std::string>());
    }
  } else {
    types.assign(n, "mamba");  // transformers' default when the key is absent
  }
  if (static_cast<int64_t>(types.size()) != n)
    throw Error("layer_types length differs from num_hidden_layers",
                {cfg.file(), types_key, std::to_string(n) + " entries", std::to_string(types.size())});

  m.embed_name = "model.embed_tokens.weight";
  m.final_norm_name = "model.norm.weight";
  m.lm_head_name = "lm_head.weight";
  for (int64_t i = 0; i < n; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    BlockSpec mixer;
    if (types[i] == "attention") {
      mixer = {BlockKind::kAttention, p + "self_attn.", p + "input_layernorm.weight"};
    } else if (types[i] == "mamba") {
      throw Error("Mamba2 layers are not supported yet (Granite-4.0-H hybrids arrive with the hybrid issue)",
                  {cfg.file(), types_key + "[" + std::to_string(i) + "]", "attention", "mamba"});
    } else {
      throw Error("unknown layer type", {cfg.file(), types_key + "[" + std::to_string(i) + "]", "attention or mamba", types[i]});
    }
    m.layers.push_back({{mixer, {BlockKind::kMlp, p + "shared_mlp.", p + "post_attention_layernorm.weight"}}});
  }
  return m;
}

}  // namespace prism::models
