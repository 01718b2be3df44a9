// Bamba family (BambaForCausalLM, the template of Granite-4.0-H; architectures.md §3.5): Mamba2
// layers except at `attn_layer_indices` (attention with RoPE on half of each head: transformers
// hard-codes partial_rotary_factor 0.5), a SwiGLU `feed_forward` after every mixer with its own
// `pre_ff_layernorm`, `model.final_layernorm`, no Granite multipliers, dt limits (0, inf).
#include <set>

#include "models/family.h"

namespace prism::models {

ModelConfig parse_bamba(const JsonReader& cfg) {
  refuse_unsupported_common(cfg);
  ModelConfig m;
  m.model_type = "bamba";
  parse_transformer_common(cfg, m);
  m.partial_rotary_factor = 0.5;  // BambaConfig.__post_init__ forces it for backward compatibility
  m.norm_eps = cfg.number("rms_norm_eps", 1e-5);
  m.mlp = MlpKind::kSwiGLU;
  // z_loss_coefficient only affects transformers' training loss, not the forward: accepted.
  parse_granite_style_mamba(cfg, m);

  const int64_t n = cfg.dimension("num_hidden_layers", JsonReader::kMaxLayers);
  std::set<int64_t> attn;
  if (cfg.has("attn_layer_indices")) {
    const auto& a = cfg.json().at("attn_layer_indices");
    if (!a.is_array()) cfg.refuse("attn_layer_indices", "expected a list of layer indices");
    for (size_t i = 0; i < a.size(); ++i) {
      const int64_t v = cfg.as_int(a[i], "attn_layer_indices[" + std::to_string(i) + "]");
      if (v < 0 || v >= n)
        throw Error("layer index out of range",
                    key_context(cfg.file(), "attn_layer_indices[" + std::to_string(i) + "]",
                                "0 <= index < " + std::to_string(n), std::to_string(v)));
      attn.insert(v);
    }
  }
  m.embed_name = "model.embed_tokens.weight";
  m.final_norm_name = "model.final_layernorm.weight";
  m.lm_head_name = "lm_head.weight";
  for (int64_t i = 0; i < n; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    BlockSpec mixer = attn.count(i) ? BlockSpec{BlockKind::kAttention, p + "self_attn.", p + "input_layernorm.weight"}
                                    : BlockSpec{BlockKind::kMamba2, p + "mamba.", p + "input_layernorm.weight"};
    m.layers.push_back({{mixer, {BlockKind::kMlp, p + "feed_forward.", p + "pre_ff_layernorm.weight"}}});
  }
  return m;
}

}  // namespace prism::models
