// Several checkpoints of one architecture opened side by side, with every model parameter
// resolved to its stored name in each (name aliases such as Nemotron-H's "backbone." prefix are
// resolved per checkpoint) and its presence and shape checked before any tensor is read.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "prism/io/safetensors.h"
#include "prism/io/tokenizer.h"
#include "prism/models/causal_lm.h"

namespace prism::analysis {

struct ResolvedParameter {
  models::ParameterInfo info;
  std::vector<std::string> stored;  ///< stored name in each checkpoint
};

class CheckpointSet {
 public:
  /// `dirs` are HF directories (already resolved); dirs[0]'s config.json defines the parameters.
  explicit CheckpointSet(const std::vector<std::string>& dirs);

  const models::ModelConfig& config() const { return cfg_; }
  const std::vector<ResolvedParameter>& parameters() const { return params_; }
  const io::CheckpointReader& reader(size_t i) const { return *readers_[i]; }
  size_t size() const { return readers_.size(); }
  const std::string& dir(size_t i) const { return dirs_[i]; }
  /// Tensors of checkpoint 0 that are not parameters of the model.
  const std::vector<std::string>& unused() const { return unused_; }
  /// Parameter indices ordered by (shard, offset) in checkpoint 0, so reads are sequential.
  std::vector<size_t> file_order() const;

 private:
  std::vector<std::string> dirs_;
  models::ModelConfig cfg_;
  std::vector<std::unique_ptr<io::CheckpointReader>> readers_;
  std::vector<ResolvedParameter> params_;
  std::vector<std::string> unused_;
};

/// The tokenizer at `override_path` when given, else `model_dir`/tokenizer.json; an error naming
/// the directory (and --tokenizer) when there is none.
std::unique_ptr<io::Tokenizer> load_tokenizer(const std::string& model_dir, const std::string& override_path = "");

/// dst = Σ_k coeffs[k] · srcs[k] (same numel, any floating dtypes, any shapes), accumulated in fp64
/// in chunks of 4M elements and rounded once to dst's dtype: memory beyond dst is one 32 MB chunk.
void accumulate_into(at::Tensor dst, const std::vector<at::Tensor>& srcs, const std::vector<double>& coeffs);

/// Reads one element range of a tensor in any floating dtype as fp64.
void load_as_double(const at::Tensor& t, int64_t begin, int64_t count, double* out);

}  // namespace prism::analysis
