// DistributedAdamW: AdamW with fp32 master weights, fp32 gradient accumulation, gradients reduced
// in buckets while backward is still running, and (ZeRO-1) optimizer state sharded over ranks.
//
// Why one class for all of it: the flat buffers that make bucketed communication cheap are the
// same buffers the sharded optimizer state is laid out over (Megatron's "distributed optimizer"
// design). Parameters become views into per-bucket flat buffers; each bucket is split into
// world_size equal pieces and rank r owns piece r of every bucket: it keeps the fp32 master copy
// and the Adam moments of that piece only, receives that piece of the summed gradient by
// reduce-scatter, updates it, and all-gathers the new parameters. Communication per step equals
// plain data parallelism (reduce-scatter + all-gather = one all-reduce); state per rank is
// 12 bytes/param / world_size (docs/training.md has the memory arithmetic).
//
// Determinism: buckets are launched strictly in bucket order (like DDP), so every rank issues the
// same collectives in the same order whatever order autograd finishes the gradients in.
//
// **Example**:
//
//     DistributedAdamW opt(model.named_parameters(), decay_flags, comm, cfg.optimizer);
//     opt.zero_grad();
//     for (int i = 0; i < accum; ++i) {
//       opt.set_sync(i + 1 == accum);     // reduce while the last micro-batch's backward runs
//       loss(i).backward();
//     }
//     opt.finish_grad_sync();
//     double norm = opt.grad_norm();       // global, after reduction
//     opt.clip_grads(norm, 1.0);
//     opt.step(lr);
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "prism/core/config.h"

namespace prism::distributed {
class Communicator;
}
namespace prism::models {
class LayerHooks;
}

namespace prism::train {

struct OptimizerConfig {
  double lr = 5e-5;                       ///< peak learning rate
  std::array<double, 2> betas{0.9, 0.95};
  double eps = 1e-8;
  double weight_decay = 0.1;
  /// Parameter kinds (models::ParameterKind names) excluded from weight decay: norm, bias,
  /// embedding, lm_head, ssm (Mamba2 A_log, D, dt_bias; mamba_ssm excludes them too).
  std::vector<std::string> no_decay{"norm", "bias", "ssm"};
  double max_grad_norm = 1.0;             ///< global-norm clipping; 0 disables
  bool fused = true;                      ///< at::_fused_adamw_ (else an at:: op-by-op AdamW)
  bool zero1 = true;                      ///< shard master weights and moments over ranks
  double bucket_mb = 25;                  ///< gradient bucket size (fp32 MiB)

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("lr", lr, positive(), "peak learning rate");
    v.field("betas", betas, range(0, 1), "AdamW betas (beta1, beta2)");
    v.field("eps", eps, positive(), "AdamW epsilon");
    v.field("weight_decay", weight_decay, non_negative(), "decoupled weight decay");
    v.field("no_decay", no_decay, one_of({"norm", "bias", "embedding", "lm_head", "ssm"}),
            "parameter kinds without weight decay");
    v.field("max_grad_norm", max_grad_norm, non_negative(), "global gradient-norm clipping threshold (0: off)");
    v.field("fused", fused, "use the fused AdamW kernel (at::_fused_adamw_)");
    v.field("zero1", zero1, "shard fp32 master weights and Adam moments over data-parallel ranks (ZeRO-1)");
    v.field("bucket_mb", bucket_mb, positive(), "gradient bucket size in MiB (fp32) for overlapped reduction");
  }
  bool operator==(const OptimizerConfig&) const = default;
};

/// Parameter sharding (ZeRO-3 / FSDP2 semantics, docs/distributed.md "FSDP and HSDP"). Each unit
/// (one decoder layer) is one flat buffer whose compute-dtype parameters exist only as a 1/S shard
/// between uses: all-gathered before the layer runs (forward, and again before its backward or
/// recompute), freed after; its fp32 gradient is reduce-scattered per micro-batch and accumulated
/// in the shard, then all-reduced across replicas (HSDP); AdamW updates the local shard only.
/// Parameters in no unit (embeddings, final norm, lm_head) form the root unit, whose parameters
/// stay gathered (their gradients and optimizer state are sharded like the rest).
struct ParamSharding {
  distributed::Communicator* shard = nullptr;      ///< reduce-scatters, norms (null: no parameter sharding)
  distributed::Communicator* gather = nullptr;     ///< all-gathers, same ranks as `shard`, own queue/stream
  distributed::Communicator* replicate = nullptr;  ///< HSDP replica group (null: one replica)
  std::vector<std::vector<size_t>> units;          ///< units[i]: indices into params of decoder layer i
};

class DistributedAdamW {
 public:
  /// `params` are the live (leaf) model parameters; they are re-pointed into flat buffers (same
  /// values) and get gradient hooks. `decay[i]` says whether params[i] gets weight decay.
  /// `sharding.shard` set: parameters are sharded (ParamSharding); the model must then run with
  /// layer_hooks() installed (models::CausalLM::set_layer_hooks), else its layers read freed memory.
  DistributedAdamW(const std::vector<std::pair<std::string, at::Tensor>>& params, const std::vector<bool>& decay,
                   distributed::Communicator& comm, const OptimizerConfig& cfg, ParamSharding sharding = {});
  ~DistributedAdamW();
  DistributedAdamW(const DistributedAdamW&) = delete;
  DistributedAdamW& operator=(const DistributedAdamW&) = delete;

  /// Clears the fp32 gradient accumulators (start of an optimizer step).
  void zero_grad();
  /// Whether the coming backward is the step's last micro-batch: then buckets are reduced as soon
  /// as all their gradients have been accumulated.
  void set_sync(bool sync);
  /// After each micro-batch's backward: with parameter sharding, reduce-scatters what is left,
  /// adds the reduced shards to the accumulated gradient and frees the gathered layers (no-op
  /// otherwise).
  void end_backward();
  /// Launches buckets that got no gradient (unused parameters) and waits for every reduction.
  void finish_grad_sync();
  /// The hooks that gather and free sharded layers around the model's forward and backward
  /// (null without parameter sharding). They keep the optimizer's buffers alive.
  std::shared_ptr<models::LayerHooks> layer_hooks() const;
  /// Global L2 norm of the reduced gradient (one scalar all-reduce under ZeRO-1).
  double grad_norm();
  /// Multiplies the gradient by min(1, max_norm / (norm + 1e-6)); returns that factor.
  double clip_grads(double norm, double max_norm);
  /// ||delta w|| / ||w|| (L2 over all parameters, fp32 master weights) of the update that step(lr)
  /// would apply now, computed without applying it (the state is untouched); identical on every
  /// rank (one all-reduce under ZeRO-1). NaN/inf when the update would be non-finite. A divergence
  /// guard: a finite gradient with an absurd learning rate still wrecks the weights.
  double update_ratio(double lr);
  /// One AdamW update at learning rate `lr`; then the model parameters hold the new weights.
  void step(double lr);

  int64_t steps() const;
  struct Impl;  // opaque (public so that the layer hooks in optimizer.cpp can name it)
  /// Bytes of optimizer-owned memory on this rank: fp32 gradient buffers, master weights, moments.
  int64_t state_bytes() const;

  /// Writes this rank's state as `<dir>/optimizer-rankRRRRR-of-WWWWW.safetensors` (master weights
  /// and moments of the owned ranges, in a world-size-independent index space).
  void save(const std::string& dir) const;
  /// Loads state saved with any world size or bucket size from `dir`; throws prism::Error naming
  /// the file when the parameter layout differs or ranges are missing. Parameters are set from the
  /// loaded master weights.
  void load(const std::string& dir);

 private:
  std::shared_ptr<Impl> impl_;  // shared with layer_hooks()
};

}  // namespace prism::train
