// Nemotron-H family (NemotronHForCausalLM). Every layer is ONE residual block whose kind comes
// from `hybrid_override_pattern` ("M" Mamba2, "*" attention, "-" MLP, "E" MoE) or its v5
// spelling `layers_block_type` / `layer_types` ("mamba"/"attention"/"mlp"/"moe" or
// "linear_attention"/"full_attention"/"mlp"/"moe"). Attention has no positional encoding; the MLP
// is relu² (up/down, no gate); the Mamba2 gated norm is grouped (n_groups); the torch path clamps
// dt at time_step_min (architectures.md §2.5, §3.6). Hub checkpoints name tensors "backbone.*";
// transformers v5 re-saves may use "model.*": both load.
#include "models/family.h"

namespace prism::models {
namespace {

BlockKind kind_of(const std::string& t, const JsonReader& cfg, const std::string& key) {
  if (t == "M" || t == "mamba" || t == "linear_attention") return BlockKind::kMamba2;
  if (t == "*" || t == "attention" || t == "full_attention") return BlockKind::kAttention;
  if (t == "-" || t == "mlp") return BlockKind::kMlp;
  if (t == "E" || t == "moe")
    throw Error("MoE blocks are not implemented (Nemotron-H MoE variants are refused)", key_context(cfg.file(), key, "M, * or -", t));
  throw Error("unknown Nemotron-H block type", key_context(cfg.file(), key, "M, *, - (mamba, attention, mlp)", t));
}

}  // namespace

ModelConfig parse_nemotron_h(const JsonReader& cfg) {
  ModelConfig m;
  m.model_type = "nemotron_h";
  m.vocab_size = cfg.dimension("vocab_size");
  m.hidden_size = cfg.dimension("hidden_size");
  m.intermediate_size = cfg.dimension("intermediate_size");
  m.num_heads = cfg.dimension("num_attention_heads");
  m.num_kv_heads = cfg.dimension("num_key_value_heads", m.num_heads, JsonReader::kMaxDimension);
  const std::string head_dim_key = cfg.has("head_dim") ? "head_dim" : "attention_head_dim";
  m.head_dim = cfg.has(head_dim_key) ? cfg.dimension(head_dim_key) : m.hidden_size / m.num_heads;
  if (m.head_dim == 0) cfg.refuse("num_attention_heads", "more heads than hidden_size leaves a head_dim of 0 (set head_dim)");
  if (m.num_heads % m.num_kv_heads != 0)
    cfg.refuse("num_key_value_heads", "num_attention_heads must be a multiple of num_key_value_heads");
  m.norm_eps = cfg.number("layer_norm_epsilon", cfg.number("rms_norm_eps", 1e-5));
  m.attention_bias = false;  // NemotronHAttention hard-codes bias=False
  m.mlp_bias = cfg.boolean("mlp_bias", false);
  // transformers 5.x never ties this family (NemotronHForCausalLM._tied_weights_keys = {}): a
  // `tie_word_embeddings: true` is ignored and lm_head.weight is its own tensor. Follow it, or the
  // logits differ. The key is still type-checked.
  cfg.boolean("tie_word_embeddings", false);
  m.tie_word_embeddings = false;
  m.max_position_embeddings = cfg.integer("max_position_embeddings", 0);
  m.torch_dtype = cfg.string("torch_dtype", cfg.string("dtype", "float32"));
  m.use_rope = false;
  m.mlp = MlpKind::kRelu2;
  if (cfg.string("mlp_hidden_act", "relu2") != "relu2") cfg.refuse("mlp_hidden_act", "only relu2 is implemented");
  if (cfg.string("mamba_hidden_act", "silu") != "silu") cfg.refuse("mamba_hidden_act", "only silu is implemented");
  if (cfg.boolean("residual_in_fp32", false))
    cfg.refuse("residual_in_fp32", "the native transformers class ignores it; prism follows that class");
  if (cfg.has("sliding_window")) cfg.refuse("sliding_window", "sliding-window attention is not used by Nemotron-H");
  if (cfg.number("attention_dropout", 0.0) != 0.0) cfg.refuse("attention_dropout", "dropout is not implemented");

  auto& mb = m.mamba;
  mb.num_heads = cfg.dimension("mamba_num_heads");
  mb.head_dim = cfg.dimension("mamba_head_dim");
  mb.n_groups = cfg.integer("n_groups", cfg.integer("mamba_n_groups", 8));
  mb.state_size = cfg.dimension("ssm_state_size");
  mb.conv_kernel = cfg.integer("conv_kernel", cfg.integer("mamba_d_conv", 4));
  mb.chunk_size = cfg.integer("chunk_size", cfg.integer("mamba_chunk_size", 128));
  mb.conv_bias = cfg.boolean("use_conv_bias", cfg.boolean("mamba_conv_bias", true));
  mb.proj_bias = cfg.boolean("use_bias", false);
  mb.norm_eps = m.norm_eps;
  // The transformers torch path clamps dt at time_step_min (no upper limit); see docs/models.md.
  mb.dt_min = cfg.number("time_step_min", cfg.number("mamba_dt_min", 0.001));
  mb.dt_max = 0.0;
  // Initialisation only (transformers' NemotronHPreTrainedModel._init_weights), with the legacy
  // aliases; checked by init_weights, not here, so odd values never block loading a checkpoint.
  mb.time_step_min = mb.dt_min;
  mb.time_step_max = cfg.number("time_step_max", cfg.number("mamba_dt_max", 0.1));
  mb.time_step_floor = cfg.number("time_step_floor", cfg.number("mamba_dt_init_floor", 1e-4));
  parse_init_fields(cfg, m);
  m.rescale_prenorm_residual = cfg.boolean("rescale_prenorm_residual", true);
  const std::string groups_key = cfg.has("n_groups") ? "n_groups" : "mamba_n_groups";
  cfg.check_dimension(mb.n_groups, groups_key);
  if (mb.num_heads % mb.n_groups != 0) cfg.refuse(groups_key, "must divide mamba_num_heads");

  std::vector<std::pair<std::string, std::string>> kinds;  // (type, key path)
  if (cfg.has("hybrid_override_pattern")) {
    const std::string pat = cfg.string("hybrid_override_pattern", "");
    for (size_t i = 0; i < pat.size(); ++i) kinds.emplace_back(std::string(1, pat[i]), "hybrid_override_pattern[" + std::to_string(i) + "]");
  } else {
    const std::string key = cfg.has("layers_block_type") ? "layers_block_type" : "layer_types";
    cfg.require(key);
    const auto& lt = cfg.json().at(key);
    if (!lt.is_array()) cfg.refuse(key, "expected a list of block types");
    for (size_t i = 0; i < lt.size(); ++i) {
      if (!lt[i].is_string()) cfg.refuse(key, "expected strings");
      kinds.emplace_back(lt[i].get<std::string>(), key + "[" + std::to_string(i) + "]");
    }
  }
  if (kinds.empty()) cfg.refuse("hybrid_override_pattern", "no layers");
  if (static_cast<int64_t>(kinds.size()) > JsonReader::kMaxLayers)
    cfg.refuse(cfg.has("hybrid_override_pattern") ? "hybrid_override_pattern" : "layers_block_type",
               "more than " + std::to_string(JsonReader::kMaxLayers) + " layers");

  m.embed_name = "backbone.embeddings.weight";
  m.final_norm_name = "backbone.norm_f.weight";
  m.lm_head_name = "lm_head.weight";
  m.name_aliases = {{"backbone.", "model."}};
  for (size_t i = 0; i < kinds.size(); ++i) {
    const std::string p = "backbone.layers." + std::to_string(i) + ".";
    m.layers.push_back({{{kind_of(kinds[i].first, cfg, kinds[i].second), p + "mixer.", p + "norm.weight"}}});
  }
  return m;
}

}  // namespace prism::models
