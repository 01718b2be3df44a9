// Checkpointer: a training loop's whole state in one crash-safe checkpoint directory, and back.
//
// A checkpoint (CheckpointDir protocol: temp dir, COMPLETE marker, rename) holds the model in HF
// format (rank 0), each rank's DistributedAdamW shard, the resolved config, and
// trainer_state.json: step, tokens, skip streak, last loss, RNG state (CPU and CUDA), and the
// loop's `extra` state: named JSON documents in which each loop keeps its own cursors (the mixture
// loader position for mid-training; a prompt cursor and sampler seed for RL). The LR schedule is a
// pure function of the step, so the step is the scheduler state.
//
// Safety rules (docs/training.md "Failure modes"): a model with non-finite weights is never
// written (save() throws instead, leaving the previous checkpoints untouched); a checkpoint
// written during a streak of skipped steps is marked unhealthy so pruning keeps the newest
// healthy one; stale temp directories are removed before writing and, when the disk is short,
// older checkpoints are pruned first; the error says how much space a checkpoint needs.
//
// **Example**:
//
//     Checkpointer ckpt(*ctx, cfg.output_dir, cfg.checkpoint);
//     std::string dir = ckpt.resolve_resume(opts.resume);          // "" = fresh start
//     if (!dir.empty()) state = ckpt.load(dir, *opt);
//     ...
//     state.extra["loader"] = data::to_json(loader.state());
//     ckpt.save(*model, *opt, state, config::dump_config(cfg));
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "prism/train/job_config.h"

namespace prism::models {
class CausalLM;
}

namespace prism::train {

class RunContext;
class DistributedAdamW;

/// Loop state saved beside model and optimizer (trainer_state.json).
struct TrainerState {
  int64_t step = 0;                  ///< optimizer steps completed (skipped ones included)
  int64_t tokens = 0;                ///< tokens trained on, all ranks
  int64_t consecutive_skipped = 0;   ///< current streak of skipped (non-finite / absurd) steps
  double last_loss = 0;              ///< loss of the last applied step
  /// Each loop's own state: name -> JSON document (e.g. "loader" -> data::to_json(state)).
  std::map<std::string, std::string> extra;
};

/// Test-only faults for the crash tests (RunOptions::faults).
struct CheckpointFaults {
  int64_t pause_before_commit_ms = 0;  ///< sleep after every rank wrote, before COMPLETE + rename
};

class Checkpointer {
 public:
  Checkpointer(RunContext& ctx, std::string output_dir, const CheckpointSection& cfg, CheckpointFaults faults = {});

  /// "": fresh start (throws when output_dir already holds complete checkpoints); "auto": the
  /// newest complete checkpoint, or "" when there is none; else a checkpoint directory (must be
  /// complete). Same answer on every rank (directory listing of a shared file system).
  std::string resolve_resume(const std::string& resume) const;

  /// Rank 0, with the run's RunLock held: removes every checkpoint temp directory and
  /// `<output_dir>/*.tmp.<pid>` (an interrupted final export) left by earlier processes.
  void remove_stale_temps();

  /// Bytes one checkpoint of this model and optimizer takes: the newest complete checkpoint's size
  /// when there is one, else parameters x (dtype size + 12 B of fp32 optimizer state), plus slack.
  uint64_t estimate_bytes(const models::CausalLM& model) const;
  /// Throws (rank 0 decides, every rank throws) when the checkpoint file system has less free
  /// space than estimate_bytes() even after pruning what keep_last allows: a requeued job fails
  /// at start-up instead of after redoing its steps.
  void check_space(const models::CausalLM& model);

  /// Writes a checkpoint of `state.step` (collective: every rank calls it). Throws, writing
  /// nothing, when a weight is non-finite. healthy = state.consecutive_skipped == 0. Returns the
  /// final directory on every rank.
  /// `extra_models` are saved beside `model/` as `<name>/` in HF format by rank 0, in the same
  /// crash-safe checkpoint (GRPO's Polyak-updated reference: "ref").
  std::string save(const models::CausalLM& model, const DistributedAdamW& opt, const TrainerState& state,
                   const std::string& config_yaml,
                   const std::vector<std::pair<std::string, const models::CausalLM*>>& extra_models = {});

  /// Loads the optimizer shards into `opt` and returns trainer_state.json; restores the RNG state.
  /// (The model's weights are loaded by load_model(..., dir).) Errors name the file.
  TrainerState load(const std::string& dir, DistributedAdamW& opt);

  /// The resolved config saved in checkpoint `dir` (config.yaml text; "" if absent).
  static std::string saved_config(const std::string& dir);

  /// Directory of the newest checkpoint written or loaded by this object ("" before).
  const std::string& last() const { return last_; }
  const std::string& output_dir() const { return output_dir_; }

 private:
  RunContext& ctx_;
  std::string output_dir_;
  CheckpointSection cfg_;
  CheckpointFaults faults_;
  std::string last_;
};

}  // namespace prism::train
