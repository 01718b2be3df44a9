// run_grpo: the GRPO loop behind `prism-train rl` (docs/rl.md), built from the training
// components (RunContext, load_model / make_optimizer, Checkpointer, StepRunner, StepLogger,
// RunLock), the rollout engine (prism/generate/engine.h) on the live policy, the rewards module
// and the objective of prism/rl/grpo_loss.h.
//
// One step: draw the step's prompts (PromptSet, global order, this rank's slice) -> the engine
// samples G completions of each from the very parameters being trained (no copy, no weight sync)
// -> verifiers score them -> group advantages -> rollouts packed into micro-batches -> for each
// of train.mini_batches updates: per-token log-probs through the training forward and
// ops::linear_logprobs, the policy loss with step-global normalisers, StepRunner's guarded AdamW
// update -> metrics -> checkpoint (prompt cursor and, with Polyak updates, the reference).
//
// **Example**:
//
//     auto cfg = prism::config::load_config<prism::rl::RlConfig>("configs/rl/tiny-cpu.yaml");
//     prism::train::RunOptions opts;
//     opts.resume = "auto";
//     auto res = prism::rl::run_grpo(cfg, opts);
#pragma once

#include "prism/rl/rl_config.h"
#include "prism/train/plan.h"
#include "prism/train/trainer.h"

namespace prism::rl {

/// Runs GRPO; RunOptions/RunResult are the mid-training ones (resume, stop polling, faults).
train::RunResult run_grpo(const RlConfig& cfg, const train::RunOptions& opts = {});

/// The memory-plan input of a GRPO config on `world_size` ranks of `device` ("cpu" / "cuda"): one
/// packed row of train.micro_batch_tokens per micro-batch, the rollout engine's DecodeState
/// (rollout.slots + its prefix row, up to micro_batch_tokens or the model's context long) and the
/// frozen reference when kl.beta > 0 (train/plan.h).
train::MemoryPlanInput plan_input(const RlConfig& cfg, const models::ModelConfig& model, int64_t world_size,
                                  const std::string& device);

}  // namespace prism::rl
