// prism::distributed: the data-parallel process group.
//
// Why an interface of our own: the PyPI torch wheel ships no gloo headers, so CPU multi-process
// runs (development, tests) need a transport of prism's own (over c10d::TCPStore, correct and
// slow, NOT for production), while GPUs use NCCL. The trainer only sees this interface.
//
// Semantics every implementation keeps:
// - Collectives are issued in the same order on every rank (like NCCL); async ones complete in
//   issue order.
// - Sums are deterministic and identical on every rank (the CPU transport adds in rank order), so
//   a run is bit-reproducible for a fixed world size.
// - A rank that died makes the others fail with prism::Error after `timeout` instead of hanging.
//
// **Example** (under torchrun or tools/launch.sh):
//
//     auto env = prism::distributed::DistEnv::from_env();           // RANK, WORLD_SIZE, MASTER_ADDR, ...
//     auto comm = prism::distributed::make_communicator(env, {});  // "auto": nccl on CUDA, else tcp
//     comm->all_reduce_sum(grads);                            // in place
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace prism::distributed {

/// torchrun-style environment: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
/// MASTER_PORT. Missing variables mean a single process (rank 0 of 1).
struct DistEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;

  /// Reads and validates the variables; throws prism::Error naming the variable and its value.
  /// WORLD_SIZE > 1 requires RANK, MASTER_ADDR and MASTER_PORT; LOCAL_WORLD_SIZE defaults to
  /// WORLD_SIZE and LOCAL_RANK to RANK % LOCAL_WORLD_SIZE.
  static DistEnv from_env();

  /// Variable name -> value (nullopt: unset).
  using Lookup = std::function<std::optional<std::string>(const std::string&)>;
  /// from_env() over any source of variables (tests, config files).
  static DistEnv parse(const Lookup& lookup);
};

struct CommOptions {
  /// auto | local | tcp | nccl (auto: local when world_size == 1, else nccl for CUDA runs, tcp otherwise)
  std::string backend = "auto";
  std::string device = "cpu";  ///< device of the tensors passed in ("cpu", "cuda", "cuda:N")
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};  ///< per collective and for rendezvous
};

/// Handle of an asynchronous collective.
class Work {
 public:
  virtual ~Work() = default;
  /// Blocks until done (for NCCL: until the current stream is ordered after it); rethrows errors.
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  /// "local", "tcp" or "nccl".
  virtual std::string backend() const = 0;

  /// In-place elementwise sum over ranks of a contiguous tensor.
  virtual std::shared_ptr<Work> all_reduce_sum_async(const at::Tensor& tensor) = 0;
  /// `input` is contiguous [world_size * n]; `output` [n] receives the sum over ranks of the
  /// rank-th chunk of every rank's input.
  virtual std::shared_ptr<Work> reduce_scatter_sum_async(const at::Tensor& input, const at::Tensor& output) = 0;
  /// `input` [n] on every rank; `output` [world_size * n] receives them in rank order.
  virtual std::shared_ptr<Work> all_gather_async(const at::Tensor& input, const at::Tensor& output) = 0;
  /// In-place broadcast of `tensor` from `root`.
  virtual void broadcast(const at::Tensor& tensor, int root) = 0;
  virtual void barrier() = 0;

  /// Collective over this communicator's ranks (like MPI_Comm_split / ncclCommSplit): ranks with
  /// the same `color` form one new communicator, ranked by (`key`, rank). The new communicator has
  /// its own sequence of collectives (its own worker thread on tcp, its own NCCL communicator and
  /// stream on nccl), so its collectives may interleave freely with the parent's. It must be
  /// destroyed before this one.
  std::unique_ptr<Communicator> split(int color, int key);

  void all_reduce_sum(const at::Tensor& tensor) { all_reduce_sum_async(tensor)->wait(); }
  /// Scalar helpers (host values; exact for integers up to 2^53).
  double all_reduce_sum(double value);
  double all_reduce_max(double value);

 protected:
  /// Backend part of split(): `members` are the parent ranks of the new group in group-rank order
  /// (this rank is members[group_rank]); `tag` is the same on every member and unique per group.
  virtual std::unique_ptr<Communicator> make_subgroup(const std::vector<int>& members, int group_rank,
                                                      const std::string& tag) = 0;

 private:
  int splits_ = 0;  ///< split() calls so far (the same on every rank: split is collective)
};

/// Builds the communicator for `env` (rendezvous through a c10d::TCPStore served by rank 0 at
/// MASTER_ADDR:MASTER_PORT). Throws prism::Error when the backend is unavailable or peers do not
/// show up within the timeout.
std::unique_ptr<Communicator> make_communicator(const DistEnv& env, const CommOptions& opts = {});

}  // namespace prism::distributed
