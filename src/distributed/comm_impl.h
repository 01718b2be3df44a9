// Private to src/distributed: the backend factories, the argument checks every backend shares (so the
// same mistake gives the same message on a laptop and on a GPU cluster), and the c10d::TCPStore
// rendezvous that both the tcp and the nccl backends start from.
#pragma once

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <memory>
#include <string>

#include "prism/distributed/communicator.h"

namespace prism::distributed::detail {

std::unique_ptr<Communicator> make_local(const DistEnv& env, const CommOptions& opts);
std::unique_ptr<Communicator> make_tcp(const DistEnv& env, const CommOptions& opts);
#if PRISM_HAS_CUDA_KERNELS
/// Defined in nccl_communicator_cuda.cpp (compiled only with CUDA kernels enabled).
std::unique_ptr<Communicator> make_nccl(const DistEnv& env, const CommOptions& opts);
#endif

/// A Work that is already complete (local backend, empty world).
class DoneWork final : public Work {
 public:
  void wait() override {}
};

/// "30 s", "2.5 s": timeouts in messages.
std::string format_seconds(std::chrono::milliseconds ms);

// Argument checks: throw prism::Error naming the backend, the operation and the tensor.
// `backend` prefixes the message ("dist(tcp)").
void check_dtype(const std::string& backend, const char* op, const char* name, const at::Tensor& t);
void check_all_reduce(const std::string& backend, const at::Tensor& tensor);
void check_reduce_scatter(const std::string& backend, int world_size, const at::Tensor& input,
                          const at::Tensor& output);
void check_all_gather(const std::string& backend, int world_size, const at::Tensor& input, const at::Tensor& output);
void check_broadcast(const std::string& backend, int world_size, const at::Tensor& tensor, int root);

/// Rendezvous: rank 0 serves a c10d::TCPStore at MASTER_ADDR:MASTER_PORT, the others connect;
/// returns once all `world_size` ranks have joined. Throws prism::Error (naming address, rank and
/// timeout) when the port is taken or peers do not show up within `timeout`.
c10::intrusive_ptr<c10d::Store> connect_store(const std::string& backend, const DistEnv& env,
                                              std::chrono::milliseconds timeout);

/// Exit handshake: every rank checks in; rank 0 — whose process hosts the store server — waits
/// (at most `timeout`) until all have, so that it never tears the server down while a peer still
/// reads the last collective's data. `clean` = false (a collective failed) waits at most 5 s.
/// Never throws (it runs in destructors); problems are logged.
void store_goodbye(c10d::Store& store, const std::string& backend, const DistEnv& env,
                   std::chrono::milliseconds timeout, bool clean) noexcept;

}  // namespace prism::distributed::detail
