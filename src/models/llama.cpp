// Llama family (LlamaForCausalLM: Llama 2/3.x incl. llama3 RoPE scaling). The layer layout and
// HF tensor names of the classic "model.layers.{i}" checkpoints live here and are reused by the
// Mistral and Granite files, which differ only in config semantics.
#include "models/family.h"
#include "models/llama_layout.h"

namespace prism::models {

void llama_layout(ModelConfig& m, int64_t num_layers) {
  m.embed_name = "model.embed_tokens.weight";
  m.final_norm_name = "model.norm.weight";
  m.lm_head_name = "lm_head.weight";
  m.layers.clear();
  for (int64_t i = 0; i < num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    m.layers.push_back({{{BlockKind::kAttention, p + "self_attn.", p + "input_layernorm.weight"},
                         {BlockKind::kMlp, p + "mlp.", p + "post_attention_layernorm.weight"}}});
  }
}

ModelConfig parse_llama(const JsonReader& cfg) {
  refuse_unsupported_common(cfg);
  ModelConfig m;
  m.model_type = "llama";
  parse_transformer_common(cfg, m);
  m.mlp = MlpKind::kSwiGLU;
  llama_layout(m, cfg.dimension("num_hidden_layers", JsonReader::kMaxLayers));
  return m;
}

}  // namespace prism::models
