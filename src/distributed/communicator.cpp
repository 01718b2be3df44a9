// Backend selection, the shared argument checks, the store rendezvous, and the "local" backend.
//
// Why the checks live here and not in each backend: the tcp backend is what developers and CI
// run, nccl is what clusters run; a wrong shape must fail with the same message on both, at issue
// time (in the caller's thread), not later inside a worker or an NCCL kernel.
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/tensor.h>
#include <c10/core/Device.h>
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "comm_impl.h"
#include "prism/core/error.h"
#include "prism/core/log.h"

namespace prism::distributed {

double Communicator::all_reduce_sum(double value) {
  // A CPU tensor on every backend: the nccl backend stages CPU tensors through the GPU.
  auto t = at::full({1}, value, at::TensorOptions().dtype(at::kDouble));
  all_reduce_sum(t);
  return t.item<double>();
}

double Communicator::all_reduce_max(double value) {
  // Max via all_gather: the interface has no max reduction, and W scalars are nothing to move.
  auto in = at::full({1}, value, at::TensorOptions().dtype(at::kDouble));
  auto out = at::empty({world_size()}, in.options());
  all_gather_async(in, out)->wait();
  return out.max().item<double>();
}

std::unique_ptr<Communicator> Communicator::split(int color, int key) {
  PRISM_CHECK(color >= 0, "dist: split: color must be >= 0, got ", color);
  // Every rank learns every rank's (color, key): W pairs of int64 are nothing to move.
  auto mine = at::tensor(std::vector<int64_t>{color, key}, at::kLong);
  auto all = at::empty({2 * world_size()}, mine.options());
  all_gather_async(mine, all)->wait();
  const auto* v = all.data_ptr<int64_t>();
  std::vector<std::pair<int64_t, int>> order;  // (key, parent rank) of my color
  for (int r = 0; r < world_size(); ++r)
    if (v[2 * r] == color) order.emplace_back(v[2 * r + 1], r);
  std::sort(order.begin(), order.end());
  std::vector<int> members;
  int group_rank = -1;
  for (const auto& [k, r] : order) {
    if (r == rank()) group_rank = static_cast<int>(members.size());
    members.push_back(r);
  }
  const std::string tag = prism::str("split", splits_++, "/c", color);
  if (members.size() == 1) return detail::make_local(DistEnv{}, CommOptions{});
  return make_subgroup(members, group_rank, tag);
}

namespace detail {

std::string format_seconds(std::chrono::milliseconds ms) {
  char buf[32];
  const double s = static_cast<double>(ms.count()) / 1000.0;
  std::snprintf(buf, sizeof buf, "%g s", s);
  return buf;
}

void check_dtype(const std::string& backend, const char* op, const char* name, const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat:
    case at::kDouble:
    case at::kBFloat16:
    case at::kHalf:
    case at::kLong:
    case at::kInt:
      return;
    default:
      throw Error(prism::str(backend, ": ", op, ": ", name, " has unsupported dtype ", t.scalar_type(),
                             " (supported: float32, float64, bfloat16, float16, int64, int32)"));
  }
}

namespace {

void check_tensor(const std::string& backend, const char* op, const char* name, const at::Tensor& t) {
  PRISM_CHECK(t.defined(), backend, ": ", op, ": ", name, " is an undefined tensor");
  PRISM_CHECK(t.is_contiguous(), backend, ": ", op, ": ", name, " must be contiguous (sizes ", t.sizes(), ", strides ",
              t.strides(), ")");
  check_dtype(backend, op, name, t);
}

void check_pair(const std::string& backend, const char* op, const at::Tensor& input, const at::Tensor& output) {
  check_tensor(backend, op, "input", input);
  check_tensor(backend, op, "output", output);
  PRISM_CHECK(input.scalar_type() == output.scalar_type(), backend, ": ", op, ": input dtype ", input.scalar_type(),
              " != output dtype ", output.scalar_type());
  PRISM_CHECK(input.device() == output.device(), backend, ": ", op, ": input on ", input.device(), " but output on ",
              output.device());
}

}  // namespace

void check_all_reduce(const std::string& backend, const at::Tensor& tensor) {
  check_tensor(backend, "all_reduce", "tensor", tensor);
}

void check_reduce_scatter(const std::string& backend, int world_size, const at::Tensor& input,
                          const at::Tensor& output) {
  check_pair(backend, "reduce_scatter", input, output);
  PRISM_CHECK(input.numel() == world_size * output.numel(), backend, ": reduce_scatter: input has ", input.numel(),
              " elements, expected world_size (", world_size, ") x output (", output.numel(),
              ") = ", world_size * output.numel());
}

void check_all_gather(const std::string& backend, int world_size, const at::Tensor& input, const at::Tensor& output) {
  check_pair(backend, "all_gather", input, output);
  PRISM_CHECK(output.numel() == world_size * input.numel(), backend, ": all_gather: output has ", output.numel(),
              " elements, expected world_size (", world_size, ") x input (", input.numel(),
              ") = ", world_size * input.numel());
}

void check_broadcast(const std::string& backend, int world_size, const at::Tensor& tensor, int root) {
  check_tensor(backend, "broadcast", "tensor", tensor);
  PRISM_CHECK(root >= 0 && root < world_size, backend, ": broadcast: root ", root, " is not a rank in [0, ", world_size,
              ")");
}

namespace {

std::string describe(const std::exception& e) {
  if (auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

}  // namespace

c10::intrusive_ptr<c10d::Store> connect_store(const std::string& backend, const DistEnv& env,
                                              std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<std::uint16_t>(env.master_port);
  o.isServer = env.rank == 0;
  o.numWorkers = static_cast<std::size_t>(env.world_size);
  o.waitWorkers = true;  // returns only once every rank has connected: a missing rank fails here
  o.timeout = timeout;
  // The classic (single-thread, poll-based) server instead of the libuv one: libuv's server rejects
  // values over 8 MiB and stalls on large multi-key requests (measured with torch 2.11), and the
  // tcp backend moves whole gradient buckets through the store.
  o.useLibUV = false;
  try {
    return c10::make_intrusive<c10d::TCPStore>(env.master_addr, o);
  } catch (const std::exception& e) {
    const std::string where = prism::str(env.master_addr, ":", env.master_port);
    const std::string hint =
        env.rank == 0
            ? prism::str("is port ", env.master_port, " already in use (another job?), or did some of the ",
                         env.world_size, " ranks not start?")
            : prism::str("did rank 0 start, and do all ranks use the same MASTER_ADDR:MASTER_PORT (", where, ")?");
    throw Error(prism::str(backend, ": rendezvous at ", where, " failed on rank ", env.rank, " of ", env.world_size,
                           " within ", format_seconds(timeout), ": ", describe(e), " — ", hint));
  }
}

void store_goodbye(c10d::Store& store, const std::string& backend, const DistEnv& env,
                   std::chrono::milliseconds timeout, bool clean) noexcept {
  if (env.world_size == 1) return;
  try {
    store.set("prism/goodbye/" + std::to_string(env.rank), std::vector<uint8_t>{});
    if (env.rank != 0) return;
    // After a failure, still give the survivors a few seconds: ranks that fail at about the same
    // time then each report their own cause (e.g. "rank 2 did not deliver ...") instead of
    // "lost the connection" because rank 0 tore the store down first.
    const auto limit = clean ? timeout : std::min(timeout, std::chrono::milliseconds(5000));
    std::vector<std::string> keys;
    for (int r = 1; r < env.world_size; ++r) keys.push_back("prism/goodbye/" + std::to_string(r));
    store.wait(keys, limit);
  } catch (const std::exception& e) {
    // After a failure this is expected (the peer or the server is gone) and already reported.
    const auto msg = prism::str(backend, ": rank ", env.rank,
                                ": shutdown handshake failed (a peer probably exited early): ", describe(e));
    clean ? log::warn(msg) : log::debug(msg);
  }
}

namespace {

/// world_size == 1: every collective is the identity (or a copy between input and output).
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string backend() const override { return "local"; }

  std::shared_ptr<Work> all_reduce_sum_async(const at::Tensor& tensor) override {
    check_all_reduce(kName, tensor);
    return std::make_shared<DoneWork>();
  }
  std::shared_ptr<Work> reduce_scatter_sum_async(const at::Tensor& input, const at::Tensor& output) override {
    check_reduce_scatter(kName, 1, input, output);
    copy(input, output);
    return std::make_shared<DoneWork>();
  }
  std::shared_ptr<Work> all_gather_async(const at::Tensor& input, const at::Tensor& output) override {
    check_all_gather(kName, 1, input, output);
    copy(input, output);
    return std::make_shared<DoneWork>();
  }
  void broadcast(const at::Tensor& tensor, int root) override { check_broadcast(kName, 1, tensor, root); }
  void barrier() override {}

 protected:
  std::unique_ptr<Communicator> make_subgroup(const std::vector<int>&, int, const std::string&) override {
    return std::make_unique<LocalCommunicator>();
  }

 private:
  static constexpr const char* kName = "dist(local)";
  static void copy(const at::Tensor& input, const at::Tensor& output) {
    if (input.data_ptr() != output.data_ptr()) output.view({-1}).copy_(input.view({-1}));
  }
};

}  // namespace

std::unique_ptr<Communicator> make_local(const DistEnv& env, const CommOptions& opts) {
  return std::make_unique<LocalCommunicator>();
}

}  // namespace detail

std::unique_ptr<Communicator> make_communicator(const DistEnv& env, const CommOptions& opts) {
  PRISM_CHECK(env.world_size >= 1 && env.rank >= 0 && env.rank < env.world_size, "dist: invalid DistEnv: rank ",
              env.rank, " of world_size ", env.world_size);
  PRISM_CHECK(env.master_port >= 1 && env.master_port <= 65535, "dist: invalid DistEnv: master_port ", env.master_port);
  PRISM_CHECK(opts.timeout.count() > 0, "dist: CommOptions.timeout must be > 0, got ", opts.timeout.count(), " ms");
  c10::Device device(c10::kCPU);
  try {
    device = c10::Device(opts.device);
  } catch (const std::exception&) {
    throw Error("dist: invalid device", key_context("", "device", "cpu, cuda or cuda:N", "'" + opts.device + "'"));
  }
  PRISM_CHECK(device.is_cpu() || device.is_cuda(), "dist: device '", opts.device, "' is neither cpu nor cuda");

  std::string backend = opts.backend;
  if (backend == "auto") backend = env.world_size == 1 ? "local" : device.is_cuda() ? "nccl" : "tcp";

  if (backend == "local") {
    PRISM_CHECK(env.world_size == 1, "dist: backend 'local' runs a single process, but WORLD_SIZE is ", env.world_size,
                " (use 'tcp' for CPU or 'nccl' for CUDA runs)");
    return detail::make_local(env, opts);
  }
  if (backend == "tcp") {
    PRISM_CHECK(device.is_cpu(), "dist: backend 'tcp' moves CPU tensors only, but device is '", opts.device,
                "' (use backend 'nccl' or 'auto' for CUDA tensors)");
    return detail::make_tcp(env, opts);
  }
  if (backend == "nccl") {
#if PRISM_HAS_CUDA_KERNELS
    return detail::make_nccl(env, opts);
#else
    throw Error(
        "dist: backend 'nccl' is not available: prism was built without CUDA (nvcc not found at configure time, or "
        "PRISM_WITH_CUDA=OFF); use backend 'tcp' for CPU runs");
#endif
  }
  throw Error("dist: unknown backend",
              key_context("", "backend", "auto, local, tcp or nccl", "'" + opts.backend + "'"));
}

}  // namespace prism::distributed
