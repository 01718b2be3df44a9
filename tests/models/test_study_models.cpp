// The study's dense models, instantiated on the meta device from their config.json values
// (architectures.md §4): no memory is allocated, and the parameter counts must equal the
// published totals.
#include <ATen/ATen.h>
#include <gtest/gtest.h>


#include "prism/models/causal_lm.h"
#include "prism/core/fs.h"
#include "util/test_util.h"

using prism::models::CausalLM;

namespace {

int64_t count_on_meta(const std::string& config_json) {
  auto dir = prism::test::make_temp_dir("cfg");
  prism::fs::write_file_atomic(dir + "/config.json", config_json);
  auto cfg = CausalLM::read_config(dir);
  prism::fs::remove_all(dir);
  prism::models::LoadOptions lo;
  lo.device = "meta";
  lo.dtype = at::kBFloat16;
  auto m = CausalLM::from_config(cfg, lo);
  for (const auto& [n, t] : m->named_parameters()) EXPECT_TRUE(t.is_meta()) << n;
  return m->num_parameters();
}

// Published totals: the "Safetensors: N params" of the official HF repos (exact for Llama-3.1-8B
// 8,030,261,248; Mistral-7B-v0.1 7,241,732,096; Mistral-Small-24B-Base-2501 23,572,403,200). For
// the Granite models the hub shows rounded figures (8.17B, 3.4B); the exact values below are the
// hand-summed shapes of architectures.md §4 and round to those.
TEST(StudyModels, Llama31_8B) {
  EXPECT_EQ(count_on_meta(R"({"model_type":"llama","architectures":["LlamaForCausalLM"],"vocab_size":128256,
    "hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,
    "num_key_value_heads":8,"rms_norm_eps":1e-5,"rope_theta":500000.0,"max_position_embeddings":131072,
    "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
    "original_max_position_embeddings":8192},"tie_word_embeddings":false,"hidden_act":"silu"})"),
            8030261248LL);
}

TEST(StudyModels, Mistral7Bv01) {
  EXPECT_EQ(count_on_meta(R"({"model_type":"mistral","architectures":["MistralForCausalLM"],"vocab_size":32000,
    "hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,
    "num_key_value_heads":8,"rms_norm_eps":1e-5,"rope_theta":10000.0,"sliding_window":4096,
    "max_position_embeddings":32768,"tie_word_embeddings":false,"hidden_act":"silu"})"),
            7241732096LL);
}

TEST(StudyModels, MistralSmall24B) {
  EXPECT_EQ(count_on_meta(R"({"model_type":"mistral","architectures":["MistralForCausalLM"],"vocab_size":131072,
    "hidden_size":5120,"intermediate_size":32768,"num_hidden_layers":40,"num_attention_heads":32,
    "num_key_value_heads":8,"head_dim":128,"rms_norm_eps":1e-5,"rope_theta":100000000.0,"sliding_window":null,
    "max_position_embeddings":32768,"tie_word_embeddings":false,"hidden_act":"silu"})"),
            23572403200LL);
}

TEST(StudyModels, Granite33_8B) {
  EXPECT_EQ(count_on_meta(R"({"model_type":"granite","architectures":["GraniteForCausalLM"],"vocab_size":49159,
    "hidden_size":4096,"intermediate_size":12800,"num_hidden_layers":40,"num_attention_heads":32,
    "num_key_value_heads":8,"rms_norm_eps":1e-5,"rope_theta":10000000.0,"attention_multiplier":0.0078125,
    "embedding_multiplier":12.0,"residual_multiplier":0.22,"logits_scaling":16.0,"tie_word_embeddings":true,
    "max_position_embeddings":131072,"hidden_act":"silu"})"),
            8170864640LL);
}

TEST(StudyModels, Granite40Micro) {
  std::string types;
  for (int i = 0; i < 40; ++i) types += std::string(i ? "," : "") + "\"attention\"";
  EXPECT_EQ(count_on_meta(R"({"model_type":"granitemoehybrid","architectures":["GraniteMoeHybridForCausalLM"],
    "vocab_size":100352,"hidden_size":2560,"intermediate_size":8192,"shared_intermediate_size":8192,
    "num_hidden_layers":40,"num_attention_heads":40,"num_key_value_heads":8,"rms_norm_eps":1e-5,
    "position_embedding_type":"rope","rope_theta":10000000.0,"num_local_experts":0,"embedding_multiplier":12.0,
    "attention_multiplier":0.015625,"residual_multiplier":0.22,"logits_scaling":10.0,"tie_word_embeddings":true,
    "max_position_embeddings":131072,"hidden_act":"silu","layer_types":[)" + types + "]}"),
            3402836480LL);
}

}  // namespace

namespace {

// The hybrids (hand-summed from architectures.md §3.6 / §4 shapes; the hub shows 8.1B and 3.19B).
TEST(StudyModels, NemotronH8B) {
  EXPECT_EQ(count_on_meta(R"({"model_type":"nemotron_h","architectures":["NemotronHForCausalLM"],"vocab_size":131072,
    "hidden_size":4096,"intermediate_size":21504,"num_hidden_layers":52,"num_attention_heads":32,
    "num_key_value_heads":8,"attention_head_dim":128,"mlp_hidden_act":"relu2","mamba_num_heads":128,
    "mamba_head_dim":64,"n_groups":8,"ssm_state_size":128,"conv_kernel":4,"chunk_size":128,"expand":2,
    "use_conv_bias":true,"use_bias":false,"mamba_proj_bias":false,"layer_norm_epsilon":1e-5,"rms_norm_eps":1e-5,
    "residual_in_fp32":false,"tie_word_embeddings":false,"max_position_embeddings":8192,
    "hybrid_override_pattern":"M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-"})"),
            8100852736LL);
}

TEST(StudyModels, Granite40HMicro) {
  std::string types;
  for (int i = 0; i < 40; ++i)
    types += std::string(i ? "," : "") + ((i == 5 || i == 15 || i == 25 || i == 35) ? "\"attention\"" : "\"mamba\"");
  EXPECT_EQ(count_on_meta(R"({"model_type":"granitemoehybrid","architectures":["GraniteMoeHybridForCausalLM"],
    "vocab_size":100352,"hidden_size":2048,"intermediate_size":8192,"shared_intermediate_size":8192,
    "num_hidden_layers":40,"num_attention_heads":32,"num_key_value_heads":8,"rms_norm_eps":1e-5,
    "position_embedding_type":"nope","num_local_experts":0,"embedding_multiplier":12.0,
    "attention_multiplier":0.015625,"residual_multiplier":0.22,"logits_scaling":8.0,"tie_word_embeddings":true,
    "mamba_n_heads":64,"mamba_d_head":64,"mamba_d_state":128,"mamba_n_groups":1,"mamba_d_conv":4,"mamba_expand":2,
    "mamba_chunk_size":256,"mamba_conv_bias":true,"mamba_proj_bias":false,"time_step_limit":[0.0, Infinity],
    "max_position_embeddings":131072,"hidden_act":"silu","layer_types":[)" + types + "]}"),
            3191396096LL);
}

TEST(StudyModels, HybridLayoutIsData) {
  auto dir = prism::test::make_temp_dir("cfg");
  prism::fs::write_file_atomic(dir + "/config.json", R"({"model_type":"nemotron_h","vocab_size":64,"hidden_size":32,
    "intermediate_size":48,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":8,"mamba_num_heads":4,
    "mamba_head_dim":8,"n_groups":2,"ssm_state_size":8,"hybrid_override_pattern":"MM*-M"})");
  auto cfg = CausalLM::read_config(dir);
  prism::fs::remove_all(dir);
  EXPECT_EQ(cfg.layout_string(), "M M * - M");
  EXPECT_EQ(cfg.num_layers(), 5);
}

}  // namespace
