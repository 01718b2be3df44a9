// run_mid_training: the mid-training loop behind `prism-train mid` (docs/training.md).
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

#include "prism/train/train_config.h"

namespace prism::models {
class CausalLM;
}  // namespace prism::models

namespace prism::train {

struct RunOptions {
  /// "" : start fresh (refused when output_dir already has checkpoints); "auto": newest complete
  /// checkpoint of output_dir if any, else fresh; otherwise a checkpoint directory.
  std::string resume;
  /// Polled once per step (on every rank; any rank saying yes stops all of them after a
  /// checkpoint). The CLI wires SIGTERM/SIGINT to it.
  std::function<bool()> should_stop;
};

struct RunResult {
  int64_t step = 0;                ///< optimizer steps completed (including skipped ones)
  double last_loss = 0;            ///< loss of the last completed step
  bool stopped = false;            ///< stopped early by should_stop (a checkpoint was written)
  std::string last_checkpoint;     ///< directory of the newest checkpoint written
  std::string final_export;        ///< HF directory of the final model ("" if not exported)
};

RunResult run_mid_training(const MidTrainConfig& cfg, const RunOptions& opts = {});

/// Writes the model of checkpoint `checkpoint_dir` (or of the newest complete checkpoint when it
/// is a run's output_dir) to `out_dir` in HF format (config.json, safetensors, tokenizer files).
void export_checkpoint(const std::string& checkpoint_dir, const std::string& out_dir, const std::string& dtype = "");

/// Training FLOPs per token of `model` at sequence length `seq`, as the trainer's MFU counts them
/// (docs/training.md §MFU; metrics.h flops_per_token): parameters without the input embedding (a
/// lookup does no FLOPs) unless it is tied (then it stands for lm_head), plus the attention
/// blocks of the layout. `counted_params`, when given, receives that parameter count.
double training_flops_per_token(const models::CausalLM& model, int64_t seq, int64_t* counted_params = nullptr);

}  // namespace prism::train
