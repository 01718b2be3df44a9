// The normalised model description every family's config.json parser produces. Layer layout is
// data (a list of blocks per layer), so forward never branches on model_type and a hybrid is
// just a different list (style.md rule 3).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace prism::models {

/// What one residual block computes after its pre-norm.
enum class BlockKind { kAttention, kMlp, kMamba2 };
/// The MLP flavour (all families' MLPs are one of these).
enum class MlpKind { kSwiGLU, kFusedSwiGLU, kRelu2 };

const char* block_kind_name(BlockKind k);

/// Mamba2 mixer dimensions and numerics (architectures.md §2). I = num_heads * head_dim.
struct Mamba2Config {
  int64_t num_heads = 0;         ///< H
  int64_t head_dim = 0;          ///< P
  int64_t n_groups = 1;          ///< G (B/C groups; also the gated-norm groups)
  int64_t state_size = 0;        ///< N
  int64_t conv_kernel = 4;       ///< K
  int64_t chunk_size = 256;      ///< Q
  bool conv_bias = true;
  bool proj_bias = false;        ///< in_proj / out_proj bias
  double dt_min = 0.0;           ///< dt = clamp(softplus(dt + dt_bias), dt_min, dt_max)
  double dt_max = 0.0;           ///< 0 = no upper limit
  double norm_eps = 1e-6;        ///< gated RMSNorm epsilon
  // Initialisation only (CausalLM::init_weights; docs/models.md "Initialisation").
  double time_step_min = 0.001;  ///< dt_bias = softplus^-1(dt), dt log-uniform in [time_step_min,
  double time_step_max = 0.1;    ///< time_step_max] and floored at time_step_floor ...
  double time_step_floor = 1e-4;
  bool dt_bias_init_ones = false;  ///< ... unless set: dt_bias = 1 (transformers' Granite-4 and Bamba)
  int64_t inner() const { return num_heads * head_dim; }
  int64_t conv_dim() const { return inner() + 2 * n_groups * state_size; }
};

/// One residual block: h = h + mixer(norm(h)) * residual_multiplier.
struct BlockSpec {
  BlockKind kind = BlockKind::kAttention;
  std::string prefix;        ///< HF tensor-name prefix of the block's mixer, e.g. "model.layers.3.self_attn."
  std::string norm;          ///< HF name of the block's pre-norm weight
};

/// A "layer" in transformers' sense (one entry of hidden_states): one or more blocks.
struct LayerSpec {
  std::vector<BlockSpec> blocks;
};

struct ModelConfig {
  std::string model_type;     ///< config.json "model_type"
  std::string architecture;   ///< config.json "architectures"[0]
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;  ///< MLP width (shared_intermediate_size for Granite-4)
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  double norm_eps = 1e-6;
  MlpKind mlp = MlpKind::kSwiGLU;
  bool attention_bias = false;
  bool mlp_bias = false;
  bool tie_word_embeddings = false;
  int64_t max_position_embeddings = 0;

  // Positional encoding
  bool use_rope = true;
  std::string rope_type = "default";
  double rope_theta = 10000.0;
  double rope_factor = 1.0;
  double rope_low_freq_factor = 1.0;
  double rope_high_freq_factor = 4.0;
  int64_t rope_original_max_position_embeddings = 8192;
  double partial_rotary_factor = 1.0;
  int64_t sliding_window = 0;  ///< 0 = full causal attention

  // Granite multipliers (1.0 = absent)
  double embedding_multiplier = 1.0;
  double residual_multiplier = 1.0;
  std::optional<double> attention_multiplier;  ///< replaces 1/sqrt(head_dim) when set
  double logits_scaling = 1.0;

  Mamba2Config mamba;  ///< used by kMamba2 blocks

  // Initialisation only (CausalLM::init_weights; docs/models.md "Initialisation").
  double initializer_range = 0.02;        ///< std of the normal init of linear / embedding / conv weights
  std::optional<int64_t> padding_idx;     ///< embedding row zeroed at init (HF nn.Embedding(padding_idx))
  bool rescale_prenorm_residual = false;  ///< Nemotron-H: Mamba2 out_proj ~ U(+-1/sqrt(fan_in)) / sqrt(num_layers)

  std::string torch_dtype = "float32";  ///< dtype the checkpoint declares
  /// Token ids that end a generation: generation_config.json's `eos_token_id` (an id or a list)
  /// when the checkpoint has one, else config.json's; empty when neither names one.
  std::vector<int64_t> eos_token_ids;
  std::string config_json;              ///< the config.json text this was parsed from (saved back)

  // Tensor names outside layers
  std::string embed_name;
  std::string final_norm_name;
  std::string lm_head_name;
  std::vector<LayerSpec> layers;
  /// Alternative tensor-name prefixes tried when a name is missing from a checkpoint
  /// ({"backbone.", "model."}: Nemotron-H hub checkpoints vs transformers v5 re-saves).
  std::vector<std::pair<std::string, std::string>> name_aliases;

  int64_t num_layers() const { return static_cast<int64_t>(layers.size()); }
  /// Per-block kinds, one letter each (A attention, M mamba2, F mlp) per layer, for display.
  std::string layout_string() const;
};

}  // namespace prism::models
