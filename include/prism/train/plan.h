// Memory planner: the bytes one rank holds during training, from the model's config.json and the
// job's layout alone, before anything is loaded (docs/training.md "Memory planning").
//
// Why: a layout that does not fit (a 24B model with replicated parameters on an 80 GB card, 8k
// tokens without activation checkpointing) otherwise fails minutes into a multi-node job with an
// allocator error; the plan names the biggest item and the smallest layout that fits instead.
//
// What is counted, per rank: parameters in the compute dtype, the fp32 master copy, the fp32
// gradient accumulators, the AdamW moments (2 x fp32), what autograd keeps for backward in one
// micro-batch (with or without activation checkpointing) plus the backward working set, the lm
// head's chunked loss (logits chunk, stashed dH / dW), communication buffers, and for GRPO the
// rollout engine's DecodeState, the frozen reference model, the log-prob head and policy loss on
// the completion rows, the step's packed rollouts and, under parameter sharding, the policy
// gathered for decoding. Frozen parameters (train.trainable) get no gradient or optimizer state
// and stay resident; autograd keeps less around them. Activations follow the ops prism runs: the
// ATen reference path (CPU) is measured against (tests/train/test_plan.cpp, within 10 %); the
// CUDA-kernel path counts the tensors the kernels save (flash attention keeps no scores).
//
// **Example**:
//
//     auto in = plan_input(mid_cfg, models::CausalLM::read_config(mid_cfg.model.path), 8, "cuda");
//     MemoryPlan p = plan_memory(in);
//     std::cout << format_plan(p, 80e9);
//     auto s = suggest_layout(in, 80e9);   // smallest shard size / checkpointing / micro-batch that fits
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "prism/models/model_config.h"
#include "prism/train/train_config.h"

namespace prism::train {

/// Everything the plan depends on (plain values: mid and GRPO configs both map onto it).
struct MemoryPlanInput {
  models::ModelConfig model;
  c10::ScalarType dtype = c10::ScalarType::BFloat16;  ///< parameter / activation dtype
  bool cuda = false;       ///< CUDA: prism's kernels' activations; else the ATen reference ops (CPU)
  int64_t world_size = 1;  ///< data-parallel ranks
  int64_t shard_size = 1;  ///< parameter-sharding group (FSDP / HSDP); 1: parameters replicated
  bool zero1 = true;       ///< shard_size 1: master weights and moments sharded over the world
  double bucket_mb = 25;   ///< gradient bucket size (fp32 MiB)
  bool activation_checkpointing = false;
  int64_t micro_batch_rows = 1;        ///< rows per micro-batch (mid: data.micro_batch_size; GRPO: 1 packed row)
  int64_t seq_len = 0;                 ///< tokens per row (a micro-batch is packed into one row of rows x seq_len)
  bool optimizer_update_check = true;  ///< train.max_update_ratio > 0: the update-size guard's temporaries
  /// train.trainable (model_setup.h trainable_mask): frozen parameters get no gradient, no master
  /// copy, no moments, and stay resident (unsharded) under parameter sharding.
  std::vector<std::string> trainable{"all"};
  // GRPO only.
  int64_t decode_rows = 0;        ///< DecodeState rows: rollout.slots + the engine's prefix row
  int64_t decode_length = 0;      ///< DecodeState max length (prompt + completion)
  bool reference_model = false;   ///< kl.beta > 0: a frozen copy of the policy
  int64_t rollouts_per_rank = 0;  ///< samples one rank packs per step (0: the rollout batch is not counted)
  int64_t mini_batches = 1;       ///< train.mini_batches (> 1: the pre-update policy's log-probs are kept)
  /// The longest rendered prompt (tokens) and rollout.max_new_tokens, both > 0 when known: the
  /// engine sizes its DecodeState for prompt + completion, so decode_length shrinks to their sum;
  /// with the shortest prompt they bound the completion rows of a packed micro-batch (the lm head's rows).
  int64_t prompt_tokens = 0;
  int64_t shortest_prompt_tokens = 0;
  int64_t max_new_tokens = 0;
  std::string job = "mid";  ///< "mid" | "rl", for the messages
};

/// One line of the plan: bytes per rank.
struct MemoryItem {
  std::string name;  ///< e.g. "parameters", "activations"
  double bytes = 0;
  std::string detail;  ///< the arithmetic, e.g. "8.03e9 x 2 B (bf16) / 1"
};

struct MemoryPlan {
  MemoryPlanInput input;
  std::vector<MemoryItem> items;        ///< all per rank; their sum is the planned peak
  double activations_full = 0;          ///< activation bytes of one micro-batch without checkpointing
  double activations_checkpointed = 0;  ///< ... with activation checkpointing
  double total() const;
  /// The largest item (the one to shrink first).
  const MemoryItem& biggest() const;
};

/// GRPO's per-step inputs of the plan from its config values (rl::plan_input and `prism-train plan`):
/// the rollouts one rank packs (prompts_per_step / world_size x samples_per_prompt), the
/// mini-batches, train.trainable, rollout.max_new_tokens and the shortest / longest rendered prompt
/// in tokens (0: unknown; then rollouts are bounded by decode_length alone).
void set_rl_step(MemoryPlanInput& in, int64_t prompts_per_step, int64_t samples_per_prompt, int64_t mini_batches,
                 const std::vector<std::string>& trainable, int64_t max_new_tokens, int64_t shortest_prompt,
                 int64_t longest_prompt);

/// The per-rank plan of `in`. Throws prism::Error for an impossible layout (shard_size not
/// dividing world_size, seq_len 0).
MemoryPlan plan_memory(const MemoryPlanInput& in);

/// The table printed by `prism-train plan` and logged at the start of a run; `device_bytes` > 0
/// adds the fits / does-not-fit line.
std::string format_plan(const MemoryPlan& plan, double device_bytes);

/// A layout that fits: the first of, in order, shard sizes 1, 2, 4 ... (dividing world_size),
/// each without then with activation checkpointing, then micro-batch rows halved down to 1 (mid)
/// or decode slots halved (GRPO). nullopt when none fits on world_size ranks.
std::optional<MemoryPlanInput> suggest_layout(const MemoryPlanInput& in, double device_bytes);

/// One sentence describing how `to` differs from `from` ("dist.shard_size=8,
/// model.activation_checkpointing=true, ..."), as --set overrides.
std::string layout_change(const MemoryPlanInput& from, const MemoryPlanInput& to);

/// "80GB", "24GiB", "512MB", "1000000": bytes (decimal units as huggingface_hub, KiB/MiB/GiB
/// binary). Throws prism::Error naming `key` otherwise.
double parse_byte_size(const std::string& s, const std::string& key);

/// "12.3 GiB" (binary units: what allocators and nvidia-smi report).
std::string format_bytes(double bytes);

/// The plan input of a mid-training config on `world_size` ranks of `device` ("cpu" / "cuda");
/// seq_len / micro-batch come from the config or, when 0 there, from its data.mixture.
MemoryPlanInput plan_input(const MidTrainConfig& cfg, const models::ModelConfig& model, int64_t world_size,
                           const std::string& device);

/// The memory the run may use on `device`: `configured` when non-empty (model.device_memory,
/// parsed), else runtime::available_memory_bytes (0 when unknown).
double device_memory_budget(const std::string& configured, const c10::Device& device, const std::string& key);

/// What the trainers call before loading anything: logs the plan (rank 0) and throws prism::Error
/// when it exceeds `device_bytes` (> 0), naming the biggest item and the layout that would fit.
void check_plan_fits(const MemoryPlanInput& in, double device_bytes, const std::string& config_file, bool log_plan);

}  // namespace prism::train
