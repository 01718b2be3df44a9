// RunContext: where a training job runs and with whom. One per process; every loop (mid-training,
// GRPO, benchmarks) starts by making one.
//
// It owns what every job sets up the same way: the torchrun-style environment (rank, world size,
// local rank), the device (cuda:LOCAL_RANK or cpu, via runtime::resolve_device), the CPU thread
// count, the communicator, and the small collectives loops need on host values (sums, a stop
// vote, a string from rank 0). RNG state save/restore goes through prism::runtime (CPU and the
// device's CUDA generator).
//
// **Example**:
//
//     auto ctx = RunContext::create(device_name(cfg.model.device), cfg.dist, cfg.train.threads);
//     if (ctx->is_main()) log::info(str("rank 0 of ", ctx->world_size()));
//     bool stop = ctx->any(signal_seen);   // every rank gets the same answer
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "prism/runtime/runtime.h"
#include "prism/train/job_config.h"

namespace prism::distributed {
class Communicator;
struct DistEnv;
}  // namespace prism::distributed

namespace prism::train {

class RunContext {
 public:
  /// Reads the environment (RANK, WORLD_SIZE, ... ; none: one process), resolves `device`
  /// ("auto" | "cpu" | "cuda" | "cuda:N", runtime::resolve_device; `device_key` names it in errors),
  /// sets the CPU intra-op threads (`threads` 0: cores / ranks on this node; CPU runs only) and
  /// connects the communicator (`dist`; "local" for one process).
  static std::unique_ptr<RunContext> create(const std::string& device, const DistSection& dist, int64_t threads = 0,
                                            const std::string& device_key = "model.device");
  ~RunContext();
  RunContext(const RunContext&) = delete;
  RunContext& operator=(const RunContext&) = delete;

  int rank() const;
  int world_size() const;
  int local_rank() const;
  int local_world_size() const;
  /// Rank 0: the process that writes shared files (checkpoints' model, metrics, exports).
  bool is_main() const { return rank() == 0; }
  const c10::Device& device() const { return device_; }
  bool on_cpu() const { return device_.is_cpu(); }
  distributed::Communicator& comm() { return *comm_; }

  /// Parameter sharding layout (dist.shard_size x dist.replicate_size == world size).
  int shard_size() const { return shard_size_; }
  int replicate_size() const { return replicate_size_; }
  /// With shard_size > 1: this rank's shard group (gradient reduce-scatters, norms), a second
  /// communicator over the same group for parameter all-gathers (its own queue / NCCL stream, so
  /// prefetched gathers overlap reduce-scatters), and (replicate_size > 1) the replica group
  /// across shard groups. Null otherwise.
  distributed::Communicator* shard_comm() { return shard_comm_.get(); }
  distributed::Communicator* gather_comm() { return gather_comm_.get(); }
  distributed::Communicator* replicate_comm() { return replicate_comm_.get(); }

  /// Elementwise sums over ranks of host values (one collective for all of them).
  std::vector<double> all_reduce_sum(std::vector<double> values);
  double all_reduce_sum(double value) { return all_reduce_sum(std::vector<double>{value})[0]; }
  /// True on every rank when it is true on any rank (a stop vote).
  bool any(bool flag) { return all_reduce_sum(flag ? 1.0 : 0.0) > 0; }
  /// `s` as rank 0 has it (e.g. a directory name that contains rank 0's pid).
  std::string broadcast_string(const std::string& s);
  void barrier();

  /// Generator state of the CPU and (CUDA runs) this device's default generator.
  runtime::RngState save_rng() const { return runtime::save_rng_state(device_); }
  void restore_rng(const runtime::RngState& state) const { runtime::restore_rng_state(state, device_); }
  /// Peak device memory (CUDA caching allocator) or the process RSS on CPU, in bytes.
  int64_t memory_bytes() const;

 private:
  RunContext() = default;
  std::unique_ptr<distributed::DistEnv> env_;
  c10::Device device_{c10::kCPU};
  std::unique_ptr<distributed::Communicator> comm_;
  int shard_size_ = 1, replicate_size_ = 1;
  std::unique_ptr<distributed::Communicator> shard_comm_, gather_comm_, replicate_comm_;
};

}  // namespace prism::train
