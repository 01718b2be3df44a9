// Config fields shared by the Llama-style families: sizes, head_dim, RoPE in both spellings
// (v4 `rope_theta` + `rope_scaling`, v5 `rope_parameters`), biases, tying.
#include <string>

#include "models/family.h"

namespace prism::models {
namespace {

void parse_rope(const JsonReader& cfg, ModelConfig& m) {
  const auto& j = cfg.json();
  m.rope_theta = cfg.number("rope_theta", 10000.0);
  m.partial_rotary_factor = cfg.number("partial_rotary_factor", 1.0);
  const nlohmann::json* scaling = nullptr;
  std::string key;
  if (cfg.has("rope_parameters")) {
    key = "rope_parameters";
    scaling = &j.at(key);
  } else if (cfg.has("rope_scaling")) {
    key = "rope_scaling";
    scaling = &j.at(key);
  }
  if (!scaling) return;
  if (!scaling->is_object()) cfg.refuse(key, "expected an object");
  JsonReader r(*scaling, cfg.file());
  if (key == "rope_parameters") {
    m.rope_theta = r.number("rope_theta", m.rope_theta);
    m.partial_rotary_factor = r.number("partial_rotary_factor", m.partial_rotary_factor);
  }
  std::string type = r.string("rope_type", r.string("type", "default"));
  if (type == "default") return;
  if (type != "llama3") {
    throw Error("unsupported RoPE type '" + type + "' (prism implements: default, llama3)", key_context(cfg.file(), key + ".rope_type", "default or llama3", type));
  }
  m.rope_type = "llama3";
  m.rope_factor = r.number("factor");
  m.rope_low_freq_factor = r.number("low_freq_factor");
  m.rope_high_freq_factor = r.number("high_freq_factor");
  m.rope_original_max_position_embeddings = r.integer("original_max_position_embeddings");
  if (m.rope_factor <= 0 || m.rope_high_freq_factor <= m.rope_low_freq_factor)
    cfg.refuse(key, "llama3 rope needs factor > 0 and high_freq_factor > low_freq_factor");
}

}  // namespace

void parse_transformer_common(const JsonReader& cfg, ModelConfig& m) {
  m.vocab_size = cfg.dimension("vocab_size");
  m.hidden_size = cfg.dimension("hidden_size");
  m.intermediate_size = cfg.has("intermediate_size") ? cfg.dimension("intermediate_size") : 0;
  m.num_heads = cfg.dimension("num_attention_heads");
  m.num_kv_heads = cfg.dimension("num_key_value_heads", m.num_heads, JsonReader::kMaxDimension);
  if (m.hidden_size / m.num_heads == 0 && !cfg.has("head_dim"))
    cfg.refuse("num_attention_heads", "more heads than hidden_size leaves a head_dim of 0 (set head_dim)");
  m.head_dim = cfg.dimension("head_dim", m.hidden_size / m.num_heads, JsonReader::kMaxDimension);
  if (m.num_heads % m.num_kv_heads != 0)
    throw Error("num_attention_heads must be a multiple of num_key_value_heads", key_context(cfg.file(), "num_key_value_heads", "a divisor of " + std::to_string(m.num_heads),
                 std::to_string(m.num_kv_heads)));
  m.norm_eps = cfg.number("rms_norm_eps", 1e-6);
  m.attention_bias = cfg.boolean("attention_bias", false);
  m.mlp_bias = cfg.boolean("mlp_bias", false);
  m.tie_word_embeddings = cfg.boolean("tie_word_embeddings", false);
  m.max_position_embeddings = cfg.integer("max_position_embeddings", 0);
  m.torch_dtype = cfg.string("torch_dtype", cfg.string("dtype", "float32"));
  parse_rope(cfg, m);
  parse_init_fields(cfg, m);
  // These families build nn.Embedding(vocab, hidden, padding_idx=pad_token_id); only the init
  // zeroes that row. A non-integer pad_token_id (some configs write a list) is not an error here:
  // it never affects what prism computes.
  const auto& j = cfg.json();
  if (cfg.has("pad_token_id") && j.at("pad_token_id").is_number_integer()) {
    int64_t pad = j.at("pad_token_id").get<int64_t>();
    if (pad < 0) pad += m.vocab_size;  // nn.Embedding's convention for a negative padding_idx
    if (pad >= 0 && pad < m.vocab_size) m.padding_idx = pad;
  }
}

void parse_init_fields(const JsonReader& cfg, ModelConfig& m) {
  m.initializer_range = cfg.number("initializer_range", 0.02);
}

void refuse_unsupported_common(const JsonReader& cfg) {
  std::string act = cfg.string("hidden_act", "silu");
  if (act != "silu") cfg.refuse("hidden_act", "prism's gated MLP implements silu only");
  if (cfg.number("attention_dropout", 0.0) != 0.0) cfg.refuse("attention_dropout", "dropout is not implemented");
  if (cfg.number("partial_rotary_factor", 1.0) <= 0.0) cfg.refuse("partial_rotary_factor", "must be in (0, 1]");
}

}  // namespace prism::models
