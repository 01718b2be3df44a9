// RunContext (include/prism/train/run_context.h).
#include "prism/train/run_context.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "prism/core/error.h"
#include "prism/distributed/communicator.h"

namespace prism::train {

const char* dtype_name(Dtype d) { return d == Dtype::kBf16 ? "bf16" : "fp32"; }

const char* device_name(DeviceChoice d) {
  switch (d) {
    case DeviceChoice::kCpu: return "cpu";
    case DeviceChoice::kCuda: return "cuda";
    case DeviceChoice::kAuto: return "auto";
  }
  return "auto";
}

const char* backend_name(DistBackend b) {
  switch (b) {
    case DistBackend::kTcp: return "tcp";
    case DistBackend::kNccl: return "nccl";
    case DistBackend::kAuto: return "auto";
  }
  return "auto";
}

std::unique_ptr<RunContext> RunContext::create(const std::string& device, const DistSection& dist, int64_t threads,
                                               const std::string& device_key) {
  std::unique_ptr<RunContext> ctx(new RunContext());
  ctx->env_ = std::make_unique<distributed::DistEnv>(distributed::DistEnv::from_env());
  const auto& env = *ctx->env_;
  ctx->device_ = runtime::resolve_device(device, env.local_rank, device_key);
  if (ctx->device_.is_cpu()) {
    if (threads == 0)
      threads = std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()) / env.local_world_size);
    at::set_num_threads(static_cast<int>(threads));
  }
  distributed::CommOptions co;
  co.backend = env.world_size == 1 ? "local" : backend_name(dist.backend);
  co.device = ctx->device_.str();
  co.timeout = std::chrono::milliseconds(dist.timeout_s * 1000);
  const int64_t W = env.world_size, S = dist.shard_size;
  const int64_t R = dist.replicate_size > 0 ? dist.replicate_size : (W % S == 0 ? W / S : 0);
  PRISM_CHECK(S * R == W, "dist.shard_size (", S, ") x dist.replicate_size (",
              dist.replicate_size > 0 ? str(R) : str("auto"), ") must equal the world size (WORLD_SIZE=", W, ")");
  ctx->comm_ = distributed::make_communicator(env, co);
  ctx->shard_size_ = static_cast<int>(S);
  ctx->replicate_size_ = static_cast<int>(R);
  if (S > 1) {
    // Shard groups are consecutive ranks (one node's GPUs under torchrun), replicas the same
    // position in every group: the parameter traffic stays on the fast links (FSDP2's HSDP mesh).
    const int r = env.rank;
    ctx->shard_comm_ = ctx->comm_->split(r / static_cast<int>(S), r);
    ctx->gather_comm_ = ctx->comm_->split(r / static_cast<int>(S), r);
    if (R > 1) ctx->replicate_comm_ = ctx->comm_->split(r % static_cast<int>(S), r);
  }
  return ctx;
}

RunContext::~RunContext() {
  // Subgroups before their parent (the parent's server and handshake outlive them).
  replicate_comm_.reset();
  gather_comm_.reset();
  shard_comm_.reset();
}

int RunContext::rank() const { return env_->rank; }
int RunContext::world_size() const { return env_->world_size; }
int RunContext::local_rank() const { return env_->local_rank; }
int RunContext::local_world_size() const { return env_->local_world_size; }

std::vector<double> RunContext::all_reduce_sum(std::vector<double> values) {
  if (world_size() == 1 || values.empty()) return values;
  auto t = at::tensor(values, at::kDouble).to(device_);
  comm_->all_reduce_sum(t);
  t = t.to(at::kCPU).contiguous();
  const double* p = t.data_ptr<double>();
  return std::vector<double>(p, p + values.size());
}

std::string RunContext::broadcast_string(const std::string& s) {
  if (world_size() == 1) return s;
  // int64 cells: every backend reduces/broadcasts int64 (bytes are not universally supported).
  constexpr int64_t kMax = 4096;
  PRISM_CHECK(static_cast<int64_t>(s.size()) < kMax, "string too long to broadcast: ", s);
  auto t = at::zeros({kMax}, at::kLong);
  auto* p = t.data_ptr<int64_t>();
  for (size_t i = 0; i < s.size(); ++i) p[i] = static_cast<unsigned char>(s[i]);
  auto d = t.to(device_);
  comm_->broadcast(d, 0);
  t = d.to(at::kCPU);
  p = t.data_ptr<int64_t>();
  std::string out;
  for (int64_t i = 0; i < kMax && p[i] != 0; ++i) out += static_cast<char>(p[i]);
  return out;
}

void RunContext::barrier() { comm_->barrier(); }

int64_t RunContext::memory_bytes() const {
  return device_.is_cpu() ? runtime::cpu_rss_bytes() : runtime::peak_memory_bytes(device_);
}

}  // namespace prism::train
