// Weights as linear combinations of checkpoints, W = Σ_i c_i W_i, built tensor by tensor from the
// memory maps: in memory as a model (the loss-landscape grid W(α, β) = W_base + α(W_mid − W_base)
// + β(W_rl − W_mid) is combine({base, mid, rl}, {1 − α, α − β, β})), or written to disk as a new
// HF checkpoint (the study's 15 % base + 85 % mid-trained merge before long-context training).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "prism/core/config.h"
#include "prism/models/causal_lm.h"

namespace prism::analysis {

/// A model whose every parameter is Σ_i coeffs[i] · W_i (accumulated in fp64 in chunks, then cast
/// to `opts.dtype` on `opts.device`). The first checkpoint's config.json defines the model; every
/// checkpoint must hold each parameter with the same shape. Peak memory: the model plus one chunk.
std::unique_ptr<models::CausalLM> load_combination(const std::vector<std::string>& checkpoints,
                                                   const std::vector<double>& coeffs,
                                                   const models::LoadOptions& opts = {});

struct MergeInput {
  std::string path;
  double weight = 0;
  void visit(config::Visitor& v) {
    using namespace config;
    v.field("path", path, required() & non_empty(), "HF directory or training checkpoint (holding model/)");
    v.field("weight", weight, required(), "coefficient of this checkpoint in the sum");
  }
  bool operator==(const MergeInput&) const = default;
};

/// A merge recipe as YAML (configs/longctx/merge-*.yaml; `prism-train merge --config`).
struct MergeConfig {
  std::vector<MergeInput> checkpoints;
  std::string output;
  std::string shard_size;

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("checkpoints", checkpoints, required() & non_empty(),
            "checkpoints and weights; the first is the reference (tensor names, dtypes, shards, tokenizer and "
            "config files)");
    v.field("output", output, required() & non_empty(), "new HF directory (must not exist)");
    v.field("shard_size", shard_size, "max shard size (5GB, 500MB …); empty: the reference's shard layout");
  }
  bool operator==(const MergeConfig&) const = default;
};

struct MergeOptions {
  /// 0: the first checkpoint's shard layout (same tensors in the same files); else greedy shards
  /// of at most this many bytes, as save_pretrained writes them.
  uint64_t max_shard_bytes = 0;
  /// Called after each written tensor: (done, total, tensor name).
  std::function<void(size_t, size_t, const std::string&)> progress;
};

struct MergeResult {
  std::string output;  ///< the absolute output directory
  size_t tensors = 0;
  uint64_t bytes = 0;  ///< tensor bytes written
  uint64_t largest_tensor_bytes = 0;
  std::vector<std::string> files;  ///< written safetensors shards (and index), then copied files
  double seconds = 0;
};

/// Writes Σ_i weights[i] · W_i of same-architecture HF checkpoints (`checkpoints`: HF directories
/// or training checkpoints holding model/) as a new HF checkpoint in `output`, which must not exist.
///
/// The first checkpoint is the reference: its tensor names, dtypes, shard layout (unless
/// max_shard_bytes), config.json and every other non-weight file (tokenizer, generation_config,
/// chat template …) are the output's. Every floating tensor is accumulated in fp64 and rounded
/// once to the reference's dtype (so bf16 and fp32 checkpoints give the correctly rounded mix, not
/// one rounded per term); non-floating tensors must be equal in all checkpoints and are copied.
/// Streamed: one output tensor is in memory at a time (plus a 32 MB accumulator), and the input
/// pages are dropped after each tensor, so peak memory is about the largest tensor.
///
/// Refused with a prism::Error naming the checkpoint and tensor, before anything is written: another
/// model_type, a tensor missing or extra, a shape that differs, a weight count that differs from the
/// checkpoint count, a non-finite weight. The directory is built under `<output>.tmp.<pid>` and
/// renamed into place when complete.
MergeResult merge_checkpoints(const std::vector<std::string>& checkpoints, const std::vector<double>& weights,
                              const std::string& output, const MergeOptions& opts = {});

}  // namespace prism::analysis
