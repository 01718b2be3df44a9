// What training changed in the weights: the study's weight-divergence statistics (paper-setup.md
// §6) computed by streaming checkpoints tensor by tensor, never loading a whole model.
//
// For a base checkpoint W and compared checkpoints W'_k (k = 0..K-1), per parameter tensor:
//   normalised L2      δ = ‖W'_k − W‖_F / ‖W‖_F
//   changed fraction   #{ |w'_k − w| > t·|w| } / numel, for each threshold t (0.1 % … 10 %)
//   delta cosine       ⟨W'_i − W, W'_j − W⟩ / (‖W'_i − W‖‖W'_j − W‖) for requested pairs (i, j)
// The inequality form decides w = 0: an element whose base value is 0 counts as changed at every
// threshold iff it moved at all (relative change +∞), and as unchanged when it stayed 0 (0/0 := 0).
// All sums are fp64, from bf16 / fp16 / fp32 / fp64 tensors (each checkpoint may have its own dtype).
//
// Tensors are grouped by what the models module builds (CausalLM::parameter_infos): component
// attention | mlp | mamba2 | embeddings/head | norms, sub-component from the parameter's role
// (q k v o, gate up down gate_up, in_proj out_proj conv1d A/dt D gated_norm, norm, embed, lm_head);
// see docs/analysis.md.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace prism::analysis {

/// The study's relative-change thresholds as fractions: 0.1, 0.5, 1, 2, 5, 10 %.
std::vector<double> default_thresholds();

/// Sums over the elements of one tensor for one compared checkpoint.
struct DeltaSums {
  double sum_d2 = 0.0;           ///< Σ (w' − w)²
  std::vector<int64_t> changed;  ///< per threshold t: #{ |w' − w| > t·|w| }
};

struct TensorStats {
  std::string name;          ///< HF name as the model declares it
  std::string stored_name;   ///< its name in the base checkpoint (may use a family alias prefix)
  std::string component;     ///< attention | mlp | mamba2 | embeddings/head | norms
  std::string subcomponent;  ///< q, k, …, A/dt, norm, embed, lm_head
  int64_t layer = -1;        ///< decoder layer, -1 outside layers
  std::vector<int64_t> shape;
  int64_t numel = 0;
  int64_t zeros = 0;              ///< elements with w = 0 in the base
  double sum_w2 = 0.0;            ///< Σ w²
  std::vector<DeltaSums> deltas;  ///< one per compared checkpoint
  std::vector<double> dots;       ///< per requested pair (i, j): Σ (w'_i − w)(w'_j − w)
};

struct CompareOptions {
  std::vector<double> thresholds = default_thresholds();  ///< fractions, ascending
  /// Pairs of compared checkpoints whose deltas get a cosine (`analyze weights --vs`: {{0, 1}}).
  std::vector<std::pair<int, int>> cosine_pairs;
  /// Called after each tensor (done, total, name), e.g. for a progress line.
  std::function<void(size_t, size_t, const std::string&)> progress;
};

struct WeightComparison {
  std::string base;                   ///< resolved HF directory
  std::vector<std::string> compared;  ///< resolved HF directories
  std::vector<double> thresholds;
  std::vector<std::pair<int, int>> cosine_pairs;
  std::vector<TensorStats> tensors;  ///< in the model's parameter order
  /// Checkpoint tensors of the base that are not model parameters (a tied checkpoint's lm_head,
  /// rotary buffers, MTP heads): listed, not compared.
  std::vector<std::string> skipped;
  int64_t bytes_read = 0;  ///< tensor bytes read over all checkpoints
  double seconds = 0.0;
};

/// Streams `base` and every checkpoint of `compared` (HF directories, or prism checkpoint
/// directories holding model/) tensor by tensor. The base's config.json decides the parameter
/// list; every compared checkpoint must hold each parameter with the same shape (error naming
/// the file and tensor otherwise). Resident memory stays near one tensor per checkpoint: tensors
/// are read from the memory maps in file order in parallel chunks and their pages dropped after.
WeightComparison compare_weights(const std::string& base, const std::vector<std::string>& compared,
                                 const CompareOptions& opts = {});

/// One compared checkpoint's statistics over a group of tensors.
struct DeltaSummary {
  double l2 = 0.0;              ///< element-weighted: sqrt(Σ‖ΔW‖²) / sqrt(Σ‖W‖²) (NaN if Σ‖W‖² = 0)
  double l2_matrix_avg = 0.0;   ///< mean over tensors with ‖W‖ > 0 of ‖ΔW‖/‖W‖ (NaN if none)
  std::vector<double> changed;  ///< element-weighted fraction changed, per threshold
  std::vector<double> changed_matrix_avg;  ///< mean over tensors of their changed fraction
};

struct GroupSummary {
  std::string component;     ///< "all" for the total
  std::string subcomponent;  ///< empty for component rows and the total
  int64_t tensors = 0;
  int64_t numel = 0;
  int64_t zeros = 0;
  std::vector<DeltaSummary> deltas;  ///< per compared checkpoint
  std::vector<double> cosine;        ///< per cosine pair (NaN when a delta is zero)
};

struct WeightSummary {
  /// attention, mlp, mamba2, embeddings/head, norms (those present)
  std::vector<GroupSummary> components;
  /// (component, sub-component), by component, then q k v o, gate up down, in_proj … out_proj
  std::vector<GroupSummary> subcomponents;
  GroupSummary total;
  /// Per cosine pair: Σ_c numel_c · cos_c / Σ_c numel_c over components (the paper's "wtd avg";
  /// components whose cosine is undefined are left out).
  std::vector<double> cosine_weighted_avg;
};

WeightSummary summarize(const WeightComparison& cmp);

/// One checkpoint of a training run.
struct CheckpointRef {
  int64_t step = 0;
  std::string path;  ///< HF directory
};

/// Expands `paths` into checkpoints ordered by step: a run's output_dir (holding checkpoints/), a
/// checkpoints/ directory, or a step-XXXXXXXX directory contribute their complete checkpoints
/// (COMPLETE marker, HF model in model/); an HF directory contributes itself, its step being the
/// trailing number of its name (checkpoint-500, step-00000500) or else its position in `paths`.
std::vector<CheckpointRef> find_checkpoints(const std::vector<std::string>& paths);

/// The study's front-loading curves: every checkpoint compared with the run's start.
struct Trajectory {
  std::vector<CheckpointRef> checkpoints;  ///< ascending steps
  WeightComparison comparison;             ///< compared[k] = checkpoints[k].path
};

/// find_checkpoints(`paths`), then one streaming pass over `start` and all of them (the start is
/// read once, not once per checkpoint).
Trajectory trajectory(const std::string& start, const std::vector<std::string>& paths, const CompareOptions& opts = {});

/// The HF directory of `path`: `path` itself when it holds config.json, `path`/model when that
/// does (a prism training checkpoint); an error naming the path otherwise.
std::string resolve_hf_dir(const std::string& path);

}  // namespace prism::analysis
