// MidTrainConfig: everything `prism-train mid` reads from YAML (configs/mid/*.yaml), declared once.
// The sections every job shares (model, checkpoint, dist, log) come from job_config.h.
//
// Key names that users' scripts rely on are stable: output_dir, model.path, data.mixture,
// train.steps, optimizer.lr, checkpoint.every. `prism-train mid --help-config` lists every field
// with its default and doc (from these visit() declarations).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "prism/core/config.h"
#include "prism/train/job_config.h"
#include "prism/train/optimizer.h"
#include "prism/train/schedule.h"

namespace prism::train {

struct MidDataSection {
  std::string mixture;           ///< mixture YAML (prism::data::MixtureConfig), relative to the working directory
  int64_t seq_len = 0;           ///< overrides the mixture's seq_len when > 0
  int64_t micro_batch_size = 0;  ///< rows per rank per micro-batch; overrides the mixture's batch_size when > 0
  int64_t eos_id = -1;           ///< overrides the mixture's eos_id when >= 0 (it depends on the tokenizer)

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("mixture", mixture, required() & non_empty(), "mixture YAML (sources, weights, seq_len, packing, eos_id)");
    v.field("seq_len", seq_len, non_negative(), "tokens per packed row (0: the mixture's seq_len)");
    v.field("micro_batch_size", micro_batch_size, non_negative(),
            "rows per rank per micro-batch (0: the mixture's batch_size)");
    v.field("eos_id", eos_id, at_least(-1), "document separator token id (-1: the mixture's eos_id)");
  }
  bool operator==(const MidDataSection&) const = default;
};

struct MidTrainSection {
  int64_t steps = 0;                      ///< optimizer steps of the whole run
  int64_t grad_accum = 1;                 ///< micro-batches per optimizer step on each rank
  double z_loss = 0.0;                    ///< weight of the z-loss (PaLM): z * mean(logsumexp^2)
  int64_t max_consecutive_nonfinite = 10; ///< skipped steps in a row before the run stops
  int64_t log_every = 1;
  int64_t threads = 0;                    ///< CPU intra-op threads per rank (0: cores / local ranks)
  double max_update_ratio = 1.0;          ///< skip a step whose update norm exceeds this x the weight norm (0: off)
  std::vector<std::string> trainable{"all"};  ///< parameters trained (model_setup.h trainable_mask); others frozen

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("steps", steps, required() & positive(), "optimizer steps of the whole run");
    v.field("grad_accum", grad_accum, positive(), "micro-batches per optimizer step on each rank");
    v.field("z_loss", z_loss, non_negative(), "z-loss weight (0: off), normalised like the loss");
    v.field("max_consecutive_nonfinite", max_consecutive_nonfinite, positive(),
            "steps with non-finite loss/gradients skipped in a row before the run stops (with a checkpoint)");
    v.field("log_every", log_every, positive(), "steps between metric lines");
    v.field("threads", threads, non_negative(), "CPU threads per rank (0: cores / ranks on this node)");
    v.field("max_update_ratio", max_update_ratio, non_negative(),
            "skip a step whose AdamW update would move the weights by more than this fraction of their norm "
            "(||delta w|| / ||w||, all parameters; 0: off); such steps count as non-finite ones");
    v.field("trainable", trainable, non_empty(),
            "parameters to train, the rest frozen (no gradient, no optimizer state): all, a kind (attention, mlp, "
            "mamba2, embedding, norm, lm_head) or a regex searched in parameter names; a list selects the union");
  }
  bool operator==(const MidTrainSection&) const = default;
};

struct EvalSourceConfig {
  std::string name;
  std::string path;  ///< glob of held-out token shards
  void visit(config::Visitor& v) {
    using namespace config;
    v.field("name", name, required() & non_empty(), "label in the metrics (eval/<name>/loss)");
    v.field("path", path, required() & non_empty(), "glob(3) of held-out token shard files");
  }
  bool operator==(const EvalSourceConfig&) const = default;
};

struct MidEvalSection {
  int64_t every = 0;     ///< steps between held-out evaluations (0: never)
  int64_t batches = 4;   ///< micro-batches per source (same rows every time)
  std::vector<EvalSourceConfig> sources;
  SuiteEvalSection benchmarks;  ///< pass@k on a suite (needs RunOptions::periodic_eval: the CLI fills it)

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("every", every, non_negative(), "steps between held-out loss evaluations (0: off)");
    v.field("batches", batches, positive(), "micro-batches evaluated per source");
    v.field("sources", sources, "held-out sets, e.g. one per mixture source plus general text (retention)");
    v.field("benchmarks", benchmarks, "in-loop pass@k on an evaluation suite (a subset: limit)");
  }
  bool operator==(const MidEvalSection&) const = default;
};

struct MidTrainConfig {
  std::string output_dir;
  ModelSection model;
  MidDataSection data;
  MidTrainSection train;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  CheckpointSection checkpoint;
  MidEvalSection eval;
  DistSection dist;
  LogSection log;

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("output_dir", output_dir, required() & non_empty(), "run directory: checkpoints, metrics, final export");
    v.field("model", model, "model to train");
    v.field("data", data, "training data");
    v.field("train", train, "loop settings");
    v.field("optimizer", optimizer, "AdamW settings");
    v.field("schedule", schedule, "learning-rate schedule");
    v.field("checkpoint", checkpoint, "checkpointing");
    v.field("eval", eval, "held-out losses and benchmark pass@k");
    v.field("dist", dist, "data-parallel transport");
    v.field("log", log, "metrics output");
  }
  /// Cross-section rules: the schedule must fit train.steps (named `schedule.warmup_steps` ...).
  void validate() const;
  bool operator==(const MidTrainConfig&) const = default;
};

}  // namespace prism::train
