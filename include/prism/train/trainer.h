// run_mid_training: the mid-training loop behind `prism-train mid` (docs/training.md), built from
// the training components: RunContext (run_context.h), load_model / make_optimizer
// (model_setup.h), Checkpointer (checkpointer.h), StepRunner (step.h), StepLogger
// (step_logger.h) and RunLock (run_lock.h).
//
// Data-parallel over the ranks of the torchrun-style environment (prism::distributed), bf16 compute with
// fp32 master weights and gradients, loss normalised by the step's label tokens over all
// micro-batches and ranks, NaN/inf steps skipped, atomic checkpoints with exact resume.
//
// **Example**:
//
//     auto cfg = prism::config::load_config<prism::train::MidTrainConfig>("configs/mid/tiny-cpu.yaml");
//     prism::train::RunOptions opts;
//     opts.resume = "auto";
//     auto result = prism::train::run_mid_training(cfg, opts);
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "prism/train/train_config.h"

namespace prism::models {
class CausalLM;
}  // namespace prism::models

namespace prism::train {

/// Faults the crash tests inject (docs/training.md "Fault injection"); the CLI fills them from
/// hidden `--debug-*` flags. All off by default.
struct FaultInjection {
  int64_t sigkill_after_step = -1;      ///< raise(SIGKILL) right after this step (and its checkpoint)
  std::vector<int64_t> nonfinite_steps; ///< these steps (1-based) get a NaN loss
  int64_t checkpoint_pause_ms = 0;      ///< sleep before every checkpoint commit (kill/signal mid-write)
};

/// `prism-train mid` exit status of a run stopped by SIGTERM/SIGINT before train.steps (a
/// checkpoint was written; continue with --resume auto). 0 means the run completed.
inline constexpr int kExitStopped = 3;

struct RunOptions {
  /// "" : start fresh (refused when output_dir already has checkpoints); "auto": newest complete
  /// checkpoint of output_dir if any, else fresh; otherwise a checkpoint directory.
  std::string resume;
  /// Polled once per step (on every rank; any rank saying yes stops all of them after a
  /// checkpoint). The CLI wires SIGTERM/SIGINT to it.
  std::function<bool()> should_stop;
  /// The YAML the config came from, named in start-up errors (eval sources, ...); may be empty.
  std::string config_file;
  /// Where the config's keys were written (config::load_config), so that those errors name the line.
  config::Origins config_origins;
  FaultInjection faults;
  /// The benchmark evaluation of `eval.benchmarks` (required when eval.benchmarks.every > 0): called
  /// on rank 0 with the live model after step `step` (the others wait), returns metrics logged with
  /// that step. A hook because the eval module sits above train; `prism-train mid` fills it with
  /// prism::eval::evaluate_in_loop.
  std::function<std::vector<std::pair<std::string, double>>(const models::CausalLM& model, int64_t step)>
      periodic_eval;
};

struct RunResult {
  int64_t step = 0;                ///< optimizer steps completed (including skipped ones)
  double last_loss = 0;            ///< loss of the last completed step
  bool stopped = false;            ///< stopped early by should_stop (a checkpoint was written): exit kExitStopped
  std::string last_checkpoint;     ///< directory of the newest checkpoint written
  std::string final_export;        ///< HF directory of the final model ("" if not exported)
};

RunResult run_mid_training(const MidTrainConfig& cfg, const RunOptions& opts = {});

class RunContext;
class StepLogger;

/// How every training loop ends (mid-training, GRPO). A run stopped by a signal (res.stopped)
/// only logs where to resume. Otherwise the weights must be finite — "done" and the export are
/// what pipelines trust, so non-finite weights throw and nothing is exported — and rank 0 writes
/// <output_dir>/final in HF format when `export_final` (res.final_export). Collective.
void finish_run(RunResult& res, const models::CausalLM& model, RunContext& ctx, StepLogger& logger,
                const std::string& output_dir, bool export_final);

/// Held-out loss (mean token cross-entropy) of `model` on each of cfg.eval.sources, computed as the
/// mid-training loop's evaluation computes eval/<name>/loss: the same eval.batches micro-batches of
/// each source, packed with cfg.data.mixture after cfg.data's overrides. In this process only (no
/// ranks); `config_file` is named in errors. Returns (source name, loss) in cfg.eval.sources order.
std::vector<std::pair<std::string, double>> heldout_loss(const MidTrainConfig& cfg, const models::CausalLM& model,
                                                         const std::string& config_file = "");

/// Writes the model of checkpoint `checkpoint_dir` (or of the newest complete checkpoint when it
/// is a run's output_dir) to `out_dir` in HF format (config.json, safetensors, tokenizer files).
void export_checkpoint(const std::string& checkpoint_dir, const std::string& out_dir, const std::string& dtype = "");

}  // namespace prism::train
