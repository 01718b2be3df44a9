// MidTrainConfig: everything `prism-train mid` reads from YAML (configs/mid/*.yaml), declared once.
//
// Key names that users' scripts rely on are stable: output_dir, model.path, data.mixture,
// train.steps, optimizer.lr, checkpoint.every. `prism-train mid --help-config` lists every field
// with its default and doc (from these visit() declarations).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "prism/core/config.h"
#include "prism/train/optimizer.h"
#include "prism/train/schedule.h"

namespace prism::train {

struct MidModelSection {
  std::string path;                  ///< HF checkpoint directory (weights, or only config.json for init: scratch)
  std::string init = "pretrained";   ///< pretrained | scratch
  int64_t init_seed = 0;             ///< scratch: seed of CausalLM::init_weights
  std::string dtype = "bf16";        ///< compute/parameter dtype; master weights are always fp32
  std::string device = "auto";       ///< cpu | cuda | auto (cuda:LOCAL_RANK when a GPU is present)
  bool activation_checkpointing = false;
  std::string kernels = "auto";      ///< auto: CUDA kernels where they apply | reference: ATen reference ops

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("path", path, required() & non_empty(), "HF checkpoint directory (config.json [+ safetensors, tokenizer])");
    v.field("init", init, one_of({"pretrained", "scratch"}),
            "pretrained: load the weights; scratch: only config.json, weights from init_weights (docs/models.md)");
    v.field("init_seed", init_seed, non_negative(), "seed of the from-scratch initialisation");
    v.field("dtype", dtype, one_of({"fp32", "bf16"}), "parameter/activation dtype (master weights and grads are fp32)");
    v.field("device", device, one_of({"cpu", "cuda", "auto"}), "auto: cuda:LOCAL_RANK when available, else cpu");
    v.field("activation_checkpointing", activation_checkpointing,
            "recompute each decoder layer in backward instead of keeping its activations");
    v.field("kernels", kernels, one_of({"auto", "reference"}),
            "auto: prism's CUDA kernels where they apply; reference: the plain ATen ops (debugging, parity)");
  }
  bool operator==(const MidModelSection&) const = default;
};

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

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("steps", steps, required() & positive(), "optimizer steps of the whole run");
    v.field("grad_accum", grad_accum, positive(), "micro-batches per optimizer step on each rank");
    v.field("z_loss", z_loss, non_negative(), "z-loss weight (0: off), normalised like the loss");
    v.field("max_consecutive_nonfinite", max_consecutive_nonfinite, positive(),
            "steps with non-finite loss/gradients skipped in a row before the run stops (with a checkpoint)");
    v.field("log_every", log_every, positive(), "steps between metric lines");
    v.field("threads", threads, non_negative(), "CPU threads per rank (0: cores / ranks on this node)");
  }
  bool operator==(const MidTrainSection&) const = default;
};

struct MidCheckpointSection {
  int64_t every = 1000;     ///< steps between checkpoints (a final one is always written)
  int64_t keep_last = 3;    ///< complete checkpoints kept (0: all)
  bool export_final = true; ///< write <output_dir>/final in HF format at the end

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("every", every, positive(), "steps between checkpoints; also written at the end and on SIGTERM/SIGINT");
    v.field("keep_last", keep_last, non_negative(), "complete checkpoints to keep (0: all)");
    v.field("export_final", export_final, "export the final model to <output_dir>/final in HF format");
  }
  bool operator==(const MidCheckpointSection&) const = default;
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

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("every", every, non_negative(), "steps between held-out loss evaluations (0: off)");
    v.field("batches", batches, positive(), "micro-batches evaluated per source");
    v.field("sources", sources, "held-out sets, e.g. one per mixture source plus general text (retention)");
  }
  bool operator==(const MidEvalSection&) const = default;
};

struct MidDistSection {
  std::string backend = "auto";  ///< auto | tcp | nccl
  int64_t timeout_s = 600;       ///< a collective waiting longer means a rank died or hung

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("backend", backend, one_of({"auto", "tcp", "nccl"}),
            "auto: nccl on CUDA, else tcp (prism's CPU transport, for development only)");
    v.field("timeout_s", timeout_s, positive(), "seconds before a stuck collective fails the run");
  }
  bool operator==(const MidDistSection&) const = default;
};

struct MidLogSection {
  bool tensorboard = true;
  double peak_tflops = 0;  ///< per device, for MFU (0: 989.4 on CUDA = H100 SXM bf16 dense, none on CPU)

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("tensorboard", tensorboard, "write TensorBoard event files under <output_dir>/tb");
    v.field("peak_tflops", peak_tflops, non_negative(),
            "peak dense TFLOP/s of one device for MFU (0: 989.4 on CUDA, MFU not shown on CPU)");
  }
  bool operator==(const MidLogSection&) const = default;
};

struct MidTrainConfig {
  std::string output_dir;
  MidModelSection model;
  MidDataSection data;
  MidTrainSection train;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  MidCheckpointSection checkpoint;
  MidEvalSection eval;
  MidDistSection dist;
  MidLogSection log;

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("output_dir", output_dir, required() & non_empty(), "run directory: checkpoints, metrics, final export");
    v.field("model", model, "model to train");
    v.field("data", data, "training data");
    v.field("train", train, "loop settings");
    v.field("optimizer", optimizer, "AdamW settings");
    v.field("schedule", schedule, "learning-rate schedule");
    v.field("checkpoint", checkpoint, "checkpointing");
    v.field("eval", eval, "held-out losses");
    v.field("dist", dist, "data-parallel transport");
    v.field("log", log, "metrics output");
  }
  bool operator==(const MidTrainConfig&) const = default;
};

}  // namespace prism::train
