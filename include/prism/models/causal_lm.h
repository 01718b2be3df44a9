// CausalLM: a decoder-only language model loaded from (and saved to) a Hugging Face checkpoint
// directory, computing exactly what transformers computes. One class serves every family:
// the family only decides the ModelConfig (layer layout, tensor names, multipliers).
//
// Parameters are plain at::Tensors keyed by their HF names, so a trainer can hand them to an
// optimizer, and saving needs no name conversion.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "prism/models/decode_state.h"
#include "prism/models/decode_weights.h"
#include "prism/models/model_config.h"
#include "prism/ops/dispatch.h"

namespace prism::models {

struct ForwardOptions {
  at::Tensor attention_mask;  ///< [B, L] 1 = token, 0 = padding (padded batches)
  at::Tensor position_ids;    ///< [B, L]; default: each row's state length + arange(L) (or per document)
  at::Tensor cu_seqlens;      ///< packed documents: int64 [num_docs + 1], requires B == 1; positions
                              ///< restart at 0 in each document and attention never crosses them
  /// Incremental decoding: input row b extends state row `state_row + b` (its keys/values and
  /// Mamba2 states are read and appended to, its length advanced by L). Rows may hold different
  /// lengths when L == 1 (each row attends to its own keys); a multi-token call (prefill) needs the
  /// rows it extends to hold equal lengths. Not combinable with attention_mask or cu_seqlens.
  DecodeState* state = nullptr;
  int64_t state_row = 0;
  /// Final norm and lm_head on the last position only: logits are [B, 1, V] (prefill without
  /// materialising [B, L, V]); the last hidden_states entry and last_hidden are [B, 1, D] too.
  bool last_logits_only = false;
  bool output_hidden_states = false;
  /// Per-layer activation checkpointing (when grad mode is on): each decoder layer keeps only its
  /// input for backward and is recomputed there, so activation memory is one hidden state per layer
  /// plus one layer's intermediates, for about one extra forward of compute. Results and gradients
  /// equal the plain forward's. Not allowed with `state`; the model must outlive the backward.
  bool activation_checkpointing = false;
  /// kAuto: CUDA kernels where they apply; kReference: the ATen reference ops everywhere.
  ops::Impl impl = ops::Impl::kAuto;
  /// Stop after the final norm: ForwardOutput::last_hidden is set and logits are not computed, so
  /// a trainer can fuse lm_head with the loss (ops::linear_cross_entropy with lm_head_weight()
  /// and config().logits_scaling) instead of materialising [B, L, V] logits.
  bool skip_lm_head = false;
  /// [in, out] copies of the matrices (decode_weights.h) used instead of at::linear on the
  /// parameters' [out, in] layout; the caller keeps them refreshed. Null = the parameters.
  const DecodeWeights* decode_weights = nullptr;
};

struct ForwardOutput {
  at::Tensor logits;                       ///< [B, L, V] in the model dtype (undefined with skip_lm_head)
  at::Tensor last_hidden;                  ///< [B, L, D] final-norm output (only with skip_lm_head)
  std::vector<at::Tensor> hidden_states;   ///< num_layers + 1 entries (transformers' convention)
};

/// Where one parameter sits in the architecture, so per-component analysis (prism::analysis) groups
/// tensors by what the model builds rather than by guessing from names.
struct ParameterInfo {
  std::string name;            ///< HF tensor name
  std::vector<int64_t> shape;
  std::string kind;            ///< embedding | attention | mlp | mamba2 | norm | lm_head
  /// Family-independent part: q k v o (attention); gate up down, gate_up for a fused [gate | up]
  /// (mlp); in_proj out_proj conv1d A_log dt_bias D gated_norm (mamba2); norm; embed; lm_head.
  /// A bias has the role of its weight.
  std::string role;
  int64_t layer = -1;          ///< decoder layer index, -1 for embedding / final norm / lm_head
};

struct LoadOptions {
  c10::ScalarType dtype = c10::ScalarType::Float;  ///< parameter/compute dtype
  std::string device = "cpu";                       ///< "cpu", "cuda", "cuda:1", "meta"
};

/// What a parameter is, for per-kind training rules (optimizer.no_decay): decided where the model
/// declares the parameter, so no caller re-derives it from names.
enum class ParameterKind { kEmbedding, kLmHead, kNorm, kBias, kSsm, kMatrix };
/// "embedding" | "lm_head" | "norm" | "bias" | "ssm" (Mamba2 A_log, D, dt_bias) | "matrix".
const char* parameter_kind_name(ParameterKind kind);

/// Called by forward() around every decoder layer, for parameter sharding (train::DistributedAdamW
/// with dist.shard_size > 1 gathers a layer's parameters before it runs and frees them after).
/// Installed with CausalLM::set_layer_hooks; without hooks forward() runs exactly as before.
class LayerHooks {
 public:
  virtual ~LayerHooks() = default;
  /// Before layer `i` reads its parameters (also called in no-grad forwards: evaluation, decoding).
  virtual void before_layer(size_t i) = 0;
  /// After layer `i` produced `out`; returns the tensor the next layer consumes (`out`, possibly
  /// with a gradient hook that re-gathers the layer's parameters before its backward or recompute).
  virtual at::Tensor after_layer(size_t i, const at::Tensor& out) = 0;
  /// Makes every parameter readable until the returned handle is released. Collective over the
  /// ranks sharing the parameters: all of them call it at the same point.
  virtual std::shared_ptr<void> gather_all() = 0;
};

class CausalLM {
 public:
  /// Loads config.json + safetensors (single or sharded) from `dir`. Every expected tensor must
  /// be present with the expected shape; missing and unexpected tensors are listed by name.
  static std::unique_ptr<CausalLM> from_pretrained(const std::string& dir, const LoadOptions& opts = {});
  /// Parses `dir`/config.json only (no weights).
  static ModelConfig read_config(const std::string& dir);
  /// A model with uninitialised (empty) parameters of the right shapes; on the "meta" device it
  /// allocates nothing (for parameter counts of 8B–24B configs).
  static std::unique_ptr<CausalLM> from_config(const ModelConfig& cfg, const LoadOptions& opts = {});
  /// from_config of `dir`/config.json (for training from scratch: call init_weights), keeping the
  /// directory as the model's source, so save_pretrained copies its tokenizer and generation files
  /// as it does for from_pretrained and the export is a usable checkpoint.
  static std::unique_ptr<CausalLM> from_architecture(const std::string& dir, const LoadOptions& opts = {});
  /// The number of parameters from_config(cfg) would create, computed from the shapes alone
  /// (each distinct layer kind is built once; nothing is allocated), in floating point so that an
  /// absurd config cannot overflow. check_fits (prism/models/memory.h) uses it.
  static double parameter_count(const ModelConfig& cfg);

  ~CausalLM();
  CausalLM(const CausalLM&) = delete;
  CausalLM& operator=(const CausalLM&) = delete;

  const ModelConfig& config() const;
  /// HF-named parameters in checkpoint order; the tensors are the live parameters.
  const std::vector<std::pair<std::string, at::Tensor>>& named_parameters() const;
  /// The kind of each parameter, aligned with named_parameters() (a tied lm_head is the embedding).
  const std::vector<ParameterKind>& parameter_kinds() const;
  int64_t num_parameters() const;
  /// Parameter counts grouped by kind (embedding, attention, mlp, norm, lm_head), in model order.
  std::vector<std::pair<std::string, int64_t>> parameter_counts_by_kind() const;
  /// Every parameter with its kind, role and layer, in checkpoint order (works on "meta" models).
  std::vector<ParameterInfo> parameter_infos() const;

  /// Overwrites every parameter in place with a fresh initialisation for training from scratch,
  /// following transformers' `_init_weights` of the family (docs/models.md "Initialisation"):
  /// linear / conv1d / embedding weights ~ N(0, initializer_range), biases 0, norm weights 1, the
  /// embedding's padding row 0, Mamba2 A_log = log(1..H), D = 1, dt_bias per family.
  /// `initializer_range` < 0 takes the config's (config.json `initializer_range`, default 0.02).
  /// Deterministic: the same seed gives the same values on any thread count and device; a bf16
  /// model gets the fp32 values rounded.
  void init_weights(uint64_t seed, double initializer_range = -1.0);

  ForwardOutput forward(const at::Tensor& input_ids, const ForwardOptions& opts = {}) const;

  /// Installs (nullptr: removes) the hooks forward() calls around each decoder layer.
  void set_layer_hooks(std::shared_ptr<LayerHooks> hooks);
  /// With sharded parameters (layer hooks installed): every parameter readable (named_parameters,
  /// save_pretrained) while the handle lives; collective, see LayerHooks::gather_all. Null (and
  /// free) without hooks.
  std::shared_ptr<void> gather_parameters() const;
  /// Every parameter's full value, aligned with named_parameters(), for writing a checkpoint.
  /// With sharded parameters each decoder layer is gathered in turn and copied to the host, so the
  /// device never holds more than two gathered layers (gather_parameters() would hold the whole
  /// model on every rank: 48 GB for a bf16 24B model); collective over the shard group, and only
  /// callers passing `keep` get the copies (the others an empty vector). Without sharding: the
  /// live tensors (no copy) when `keep`.
  std::vector<at::Tensor> gather_to_host(bool keep) const;
  /// Whether layer hooks are installed (the parameters may then be sharded outside forward).
  bool has_layer_hooks() const;

  /// Writes config.json (the original one, with torch_dtype updated) and safetensors shards
  /// (+ index) into `dir`, atomically (temp dir, then rename). Other files of the source
  /// checkpoint (tokenizer, generation_config) are copied along.
  void save_pretrained(const std::string& dir, uint64_t max_shard_bytes = 5'000'000'000ULL) const;
  /// The same, with the weights' data taken from `values` (aligned with named_parameters(), e.g.
  /// gather_to_host()) instead of the live parameters.
  void save_pretrained(const std::string& dir, const std::vector<at::Tensor>& values,
                       uint64_t max_shard_bytes = 5'000'000'000ULL) const;

  c10::ScalarType dtype() const;
  at::Device device() const;
  /// The lm_head weight [V, D] (the embedding when tie_word_embeddings): logits =
  /// last_hidden @ lm_head_weight()^T / config().logits_scaling.
  const at::Tensor& lm_head_weight() const;

 private:
  struct Impl;
  explicit CausalLM(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace prism::models
