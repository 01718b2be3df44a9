// Config sections every training job shares (mid-training today, GRPO next): the model to train,
// the data-parallel transport, metrics output and checkpointing. Declared once here so every job
// spells the keys, choices and defaults the same way; a job config composes them
// (train_config.h: MidTrainConfig).
//
// Choices are enums (config::Visitor::choice): a misspelt dtype, device or kernel choice is
// refused when the YAML is parsed, naming the key, not when the model is loaded.
#pragma once

#include <cstdint>
#include <string>

#include "prism/core/config.h"

namespace prism::train {

enum class Dtype { kFp32, kBf16 };
enum class DeviceChoice { kAuto, kCpu, kCuda };
enum class Kernels { kAuto, kReference };
enum class ModelInit { kPretrained, kScratch };
enum class DistBackend { kAuto, kTcp, kNccl };

/// "fp32" | "bf16": the spelling of the YAML and of runtime::parse_dtype.
const char* dtype_name(Dtype d);
/// "auto" | "cpu" | "cuda": the spelling runtime::resolve_device takes.
const char* device_name(DeviceChoice d);
/// "auto" | "tcp" | "nccl": the spelling distributed::CommOptions::backend takes.
const char* backend_name(DistBackend b);

struct ModelSection {
  std::string path;  ///< HF checkpoint directory (weights, or only config.json for init: scratch)
  ModelInit init = ModelInit::kPretrained;
  int64_t init_seed = 0;             ///< scratch: seed of CausalLM::init_weights
  Dtype dtype = Dtype::kBf16;        ///< compute/parameter dtype; master weights are always fp32
  DeviceChoice device = DeviceChoice::kAuto;
  bool activation_checkpointing = false;
  Kernels kernels = Kernels::kAuto;
  std::string device_memory;  ///< memory a rank may use ("80GB"); empty: what the device has free

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("path", path, required() & non_empty(), "HF checkpoint directory (config.json [+ safetensors, tokenizer])");
    v.choice("init", init, {{ModelInit::kPretrained, "pretrained"}, {ModelInit::kScratch, "scratch"}},
             "pretrained: load the weights; scratch: only config.json, weights from init_weights (docs/models.md)");
    v.field("init_seed", init_seed, non_negative(), "seed of the from-scratch initialisation");
    v.choice("dtype", dtype, {{Dtype::kFp32, "fp32"}, {Dtype::kBf16, "bf16"}},
             "parameter/activation dtype (master weights and grads are fp32)");
    v.choice("device", device,
             {{DeviceChoice::kCpu, "cpu"}, {DeviceChoice::kCuda, "cuda"}, {DeviceChoice::kAuto, "auto"}},
             "auto: cuda:LOCAL_RANK when available, else cpu");
    v.field("activation_checkpointing", activation_checkpointing,
            "recompute each decoder layer in backward instead of keeping its activations");
    v.choice("kernels", kernels, {{Kernels::kAuto, "auto"}, {Kernels::kReference, "reference"}},
             "auto: prism's CUDA kernels where they apply; reference: the plain ATen ops (debugging, parity)");
    v.field("device_memory", device_memory,
            "memory one rank may use, e.g. 80GB or 24GiB (empty: the device's free memory; CPU: available RAM); "
            "a run whose memory plan exceeds it is refused before loading");
  }
  bool operator==(const ModelSection&) const = default;
};

struct CheckpointSection {
  int64_t every = 1000;      ///< steps between checkpoints (a final one is always written)
  int64_t keep_last = 3;     ///< complete checkpoints kept (0: all); the newest healthy one is kept too
  bool export_final = true;  ///< write <output_dir>/final in HF format at the end

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("every", every, positive(), "steps between checkpoints; also written at the end and on SIGTERM/SIGINT");
    v.field("keep_last", keep_last, non_negative(),
            "complete checkpoints to keep (0: all); the newest healthy one is never pruned");
    v.field("export_final", export_final, "export the final model to <output_dir>/final in HF format");
  }
  bool operator==(const CheckpointSection&) const = default;
};

struct DistSection {
  DistBackend backend = DistBackend::kAuto;
  int64_t timeout_s = 600;  ///< a collective waiting longer means a rank died or hung
  /// Parameter sharding (ZeRO-3 / FSDP): parameters, gradients and optimizer state sharded over
  /// groups of this many consecutive ranks. 1: no parameter sharding (ZeRO-1 over all ranks).
  int64_t shard_size = 1;
  /// HSDP: number of shard groups holding replicas (gradients all-reduced across them);
  /// shard_size x replicate_size must equal the world size. 0: world size / shard_size.
  int64_t replicate_size = 0;

  void visit(config::Visitor& v) {
    using namespace config;
    v.choice("backend", backend, {{DistBackend::kAuto, "auto"}, {DistBackend::kTcp, "tcp"}, {DistBackend::kNccl, "nccl"}},
             "auto: nccl on CUDA, else tcp (prism's CPU transport, for development only)");
    v.field("timeout_s", timeout_s, positive(), "seconds before a stuck collective fails the run");
    v.field("shard_size", shard_size, positive(),
            "ranks over which parameters, gradients and optimizer state are sharded (1: ZeRO-1 over all ranks)");
    v.field("replicate_size", replicate_size, non_negative(),
            "shard groups holding replicas (HSDP); world size = shard_size x replicate_size (0: derived)");
  }
  bool operator==(const DistSection&) const = default;
};

struct LogSection {
  bool tensorboard = true;
  double peak_tflops = 0;  ///< per device, for MFU (0: 989.4 on CUDA = H100 SXM bf16 dense, none on CPU)

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("tensorboard", tensorboard, "write TensorBoard event files under <output_dir>/tb");
    v.field("peak_tflops", peak_tflops, non_negative(),
            "peak dense TFLOP/s of one device for MFU (0: 989.4 on CUDA, MFU not shown on CPU)");
  }
  bool operator==(const LogSection&) const = default;
};

/// In-loop evaluation on a benchmark suite (pass@k by benchmark and domain, configs/eval/*.yaml):
/// `prism-train rl` declares it as `eval`, `prism-train mid` as `eval.benchmarks`. Run on rank 0
/// every `every` steps and at the last step; the other ranks wait.
struct SuiteEvalSection {
  int64_t every = 0;  ///< steps between evaluations (0: off)
  std::string suite;  ///< evaluation suite YAML
  int64_t limit = 0;  ///< > 0: the first N problems of each benchmark (an in-loop subset)

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("every", every, non_negative(), "steps between evaluations on the suite (0: off); also at the last step");
    v.field("suite", suite, "evaluation suite YAML (configs/eval/*.yaml)");
    v.field("limit", limit, non_negative(), "evaluate the first N problems of each benchmark (0: all)");
  }
  void validate() const {
    if (every > 0 && suite.empty())
      throw Error("required when every > 0", key_context("", "suite", "an evaluation suite YAML", "nothing"));
  }
  bool operator==(const SuiteEvalSection&) const = default;
};

}  // namespace prism::train
