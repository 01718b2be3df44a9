// Granite 4.0 family (GraniteMoeHybridForCausalLM: Granite-4.0-Micro dense, Granite-4.0-H hybrids).
// Layers are listed in `layer_types` ("attention" / "mamba", or v5's "full_attention" /
// "linear_attention"); every layer has the fused shared MLP
// (`shared_mlp.input_linear` = [gate | up], `shared_mlp.output_linear`) and Granite's
// multipliers. RoPE only when position_embedding_type == "rope" (Granite-4.0-Micro); the
// hybrids use "nope". Routed experts (num_local_experts > 0) are refused.
#include "models/family.h"

namespace prism::models {

// Mamba2 fields shared by GraniteMoeHybrid and Bamba (`mamba_*` keys): I = mamba_expand * hidden.
void parse_granite_style_mamba(const JsonReader& cfg, ModelConfig& m) {
  auto& mb = m.mamba;
  mb.num_heads = cfg.dimension("mamba_n_heads", 128, JsonReader::kMaxDimension);
  mb.n_groups = cfg.dimension("mamba_n_groups", 1, JsonReader::kMaxDimension);
  mb.state_size = cfg.dimension("mamba_d_state", 256, JsonReader::kMaxDimension);
  mb.conv_kernel = cfg.integer("mamba_d_conv", 4);
  mb.chunk_size = cfg.integer("mamba_chunk_size", 256);
  mb.conv_bias = cfg.boolean("mamba_conv_bias", true);
  mb.proj_bias = cfg.boolean("mamba_proj_bias", false);
  mb.norm_eps = m.norm_eps;
  mb.dt_bias_init_ones = true;  // GraniteMoeHybrid/Bamba _init_weights: dt_bias = 1 (no log-uniform dt)
  const int64_t inner = cfg.integer("mamba_expand", 2) * m.hidden_size;
  if (cfg.has("mamba_d_head") && !cfg.json().at("mamba_d_head").is_string())
    mb.head_dim = cfg.integer("mamba_d_head");
  else
    mb.head_dim = mb.num_heads > 0 ? inner / mb.num_heads : 0;
  if (mb.num_heads <= 0 || mb.head_dim * mb.num_heads != inner || mb.n_groups <= 0 || mb.num_heads % mb.n_groups != 0)
    cfg.refuse("mamba_n_heads", "mamba_n_heads * mamba_d_head must equal mamba_expand * hidden_size, and mamba_n_groups must divide mamba_n_heads");
  if (cfg.has("time_step_limit")) {
    const auto& tl = cfg.json().at("time_step_limit");
    if (!tl.is_array() || tl.size() != 2) cfg.refuse("time_step_limit", "expected [min, max]");
    mb.dt_min = cfg.as_num(tl[0], "time_step_limit[0]");
    const double hi = cfg.as_num(tl[1], "time_step_limit[1]");
    mb.dt_max = hi >= 1e300 ? 0.0 : hi;  // Infinity = no upper limit
  }

}

ModelConfig parse_granitemoehybrid(const JsonReader& cfg) {
  refuse_unsupported_common(cfg);
  ModelConfig m;
  m.model_type = "granitemoehybrid";
  parse_transformer_common(cfg, m);
  parse_granite_multipliers(cfg, m);
  m.use_rope = cfg.string("position_embedding_type", "nope") == "rope";
  if (cfg.integer("num_local_experts", 0) > 0)
    cfg.refuse("num_local_experts", "routed MoE experts are not implemented (only num_local_experts: 0)");
  m.intermediate_size = cfg.dimension("shared_intermediate_size");
  m.mlp = MlpKind::kFusedSwiGLU;

  parse_granite_style_mamba(cfg, m);

  const int64_t n = cfg.dimension("num_hidden_layers", JsonReader::kMaxLayers);
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
    throw Error("layer_types length differs from num_hidden_layers", key_context(cfg.file(), types_key, std::to_string(n) + " entries", std::to_string(types.size())));

  m.embed_name = "model.embed_tokens.weight";
  m.final_norm_name = "model.norm.weight";
  m.lm_head_name = "lm_head.weight";
  for (int64_t i = 0; i < n; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    BlockSpec mixer;
    if (types[i] == "attention" || types[i] == "full_attention") {
      mixer = {BlockKind::kAttention, p + "self_attn.", p + "input_layernorm.weight"};
    } else if (types[i] == "mamba" || types[i] == "linear_attention") {
      mixer = {BlockKind::kMamba2, p + "mamba.", p + "input_layernorm.weight"};
    } else {
      throw Error("unknown layer type", key_context(cfg.file(), types_key + "[" + std::to_string(i) + "]", "attention or mamba", types[i]));
    }
    m.layers.push_back({{mixer, {BlockKind::kMlp, p + "shared_mlp.", p + "post_attention_layernorm.weight"}}});
  }
  return m;
}

}  // namespace prism::models
