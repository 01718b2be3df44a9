// The one table of supported architectures, keyed by config.json "model_type". Adding a family:
// a parser file, its declaration and row here, a fixture entry in tests/fixtures/make_fixtures.py
// and its name in tests/util's model_fixtures() (docs/architecture.md "Adding a family").
#include <string>

#include "models/family.h"

namespace prism::models {

// One parser per family file (src/models/<family>.cpp).
ModelConfig parse_llama(const JsonReader& cfg);
ModelConfig parse_mistral(const JsonReader& cfg);
ModelConfig parse_granite(const JsonReader& cfg);
ModelConfig parse_granitemoehybrid(const JsonReader& cfg);
ModelConfig parse_nemotron_h(const JsonReader& cfg);
ModelConfig parse_bamba(const JsonReader& cfg);

const std::vector<Family>& families() {
  static const std::vector<Family> table = {
      {"llama", "LlamaForCausalLM (Llama 2/3.x, llama3 RoPE scaling)", &parse_llama},
      {"mistral", "MistralForCausalLM (sliding window, explicit head_dim)", &parse_mistral},
      {"granite", "GraniteForCausalLM (Granite 3.x: multipliers, logits_scaling)", &parse_granite},
      {"granitemoehybrid", "GraniteMoeHybridForCausalLM (Granite 4.0 dense and -H hybrids: attention/Mamba2, shared MLP)",
       &parse_granitemoehybrid},
      {"bamba", "BambaForCausalLM (Mamba2 layers + attention at attn_layer_indices, half-rotary RoPE)", &parse_bamba},
      {"nemotron_h", "NemotronHForCausalLM (Mamba2 / attention / relu2-MLP blocks from hybrid_override_pattern)",
       &parse_nemotron_h},
  };
  return table;
}

const Family& find_family(const std::string& model_type, const std::string& file) {
  std::string supported;
  for (const auto& f : families()) {
    if (model_type == f.model_type) return f;
    supported += (supported.empty() ? "" : ", ") + std::string(f.model_type);
  }
  throw Error("unsupported model_type '" + model_type + "'", key_context(file, "model_type", "one of: " + supported, model_type));
}

const char* block_kind_name(BlockKind k) {
  switch (k) {
    case BlockKind::kAttention: return "attention";
    case BlockKind::kMlp: return "mlp";
    case BlockKind::kMamba2: return "mamba2";
  }
  return "?";
}

std::string ModelConfig::layout_string() const {
  std::string s;
  for (const auto& l : layers) {
    if (!s.empty()) s += ' ';
    for (const auto& b : l.blocks) s += b.kind == BlockKind::kAttention ? '*' : b.kind == BlockKind::kMamba2 ? 'M' : '-';
  }
  return s;
}

}  // namespace prism::models
