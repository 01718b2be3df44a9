// The "nccl" backend: GPU collectives through c10d::ProcessGroupNCCL (compiled only when CUDA
// kernels are enabled; *_cuda.cpp files are skipped otherwise, see src/CMakeLists.txt).
//
// Why ProcessGroupNCCL rather than raw ncclAllReduce on data_ptr()s: the process group already
// solves the parts that are easy to get subtly wrong — a dedicated NCCL stream per device with
// events so that Work::wait() orders the caller's current stream after the collective (no host
// sync), recordStream on the caching allocator so buffers are not reused while NCCL still reads
// them, the unique-id exchange over our store, and a watchdog that turns a hung or dead peer into
// an error after `timeout` instead of a silent hang. It is the code path torch's own DDP runs on
// the same wheel, and linking it costs nothing: it lives in libtorch_cuda, which prism links
// anyway. The price is that the c10d C++ API is not a stable surface (build-and-libtorch.md §2);
// the wheel is pinned, and everything version-specific is confined to this file.
//
// Failure behaviour: by default (TORCH_NCCL_ASYNC_ERROR_HANDLING unset = 3) the watchdog aborts
// the communicators and terminates the process when a collective exceeds the timeout; the
// launcher (tools/launch.sh, torchrun, Slurm) then tears the job down. Set TORCH_NCCL_BLOCKING_WAIT=1
// to get a prism::Error from Work::wait() instead.
//
// CPU tensors are accepted and staged through the GPU (copy in, collective, copy back in wait()),
// so host-side helpers such as all_reduce_sum(double) work unchanged; that is slow and meant for
// scalars and metrics, not for gradients.
#ifndef USE_C10D_NCCL
// ProcessGroupNCCL.hpp compiles to nothing without it; torch's own CMake config would define it
// for every TU, prism's TorchFromWheel import deliberately does not.
#define USE_C10D_NCCL
#endif

#include <ATen/Context.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm_impl.h"
#include "prism/core/error.h"
#include "prism/core/log.h"

namespace prism::distributed::detail {
namespace {

constexpr const char* kName = "dist(nccl)";

std::string describe(const std::exception& e) {
  if (auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

/// A c10d work plus what has to happen after it (copying a staged CPU tensor back).
class NcclWork final : public Work {
 public:
  NcclWork(c10::intrusive_ptr<c10d::Work> work, const char* op, std::function<void()> after,
           std::shared_ptr<std::atomic<bool>> failed)
      : work_(std::move(work)), op_(op), after_(std::move(after)), failed_(std::move(failed)) {}

  void wait() override {
    if (done_) return;
    try {
      work_->wait();  // non-blocking mode: makes the current stream wait for the NCCL stream
      if (after_) after_();
    } catch (const std::exception& e) {
      failed_->store(true);
      throw Error(prism::str(kName, ": ", op_, " failed: ", describe(e)));
    }
    done_ = true;
  }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
  const char* op_;
  std::function<void()> after_;
  std::shared_ptr<std::atomic<bool>> failed_;
  bool done_ = false;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const DistEnv& env, const CommOptions& opts, c10::Device device)
      : NcclCommunicator(env, opts.timeout, device, connect_store(kName, env, opts.timeout), "prism/nccl", false) {}

  /// `env` holds the group rank and size; a subgroup (split) shares the parent's store under its
  /// own prefix and gets its own NCCL communicator, hence its own stream: collectives of the
  /// parameter all-gather and the gradient reduce-scatter groups overlap on the GPU.
  NcclCommunicator(const DistEnv& env, std::chrono::milliseconds timeout, c10::Device device,
                   c10::intrusive_ptr<c10d::Store> store, const std::string& prefix, bool subgroup)
      : env_(env), timeout_(timeout), device_(device), store_(std::move(store)), prefix_(prefix), subgroup_(subgroup) {
    c10::cuda::set_device(device.index());
    try {
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = timeout;
      pg_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(c10::make_intrusive<c10d::PrefixStore>(prefix, store_),
                                                        env.rank, env.world_size, o);
      pg_->setBoundDeviceId(device);
      // Create the NCCL communicator now, so that a broken setup fails in make_communicator
      // instead of inside the first gradient all-reduce.
      pg_->eagerConnectSingleDevice(device);
    } catch (const std::exception& e) {
      throw Error(prism::str(kName, ": creating the NCCL communicator on ", device, " (rank ", env.rank, " of ",
                             env.world_size, ") failed: ", describe(e)));
    }
  }

  ~NcclCommunicator() override {
    // Without an explicit shutdown the process group's watchdog threads can make exit hang.
    try {
      pg_->shutdown();
    } catch (const std::exception& e) {
      log::warn(prism::str(kName, ": shutdown failed: ", describe(e)));
    }
    if (!subgroup_) store_goodbye(*store_, kName, env_, timeout_, /*clean=*/!failed_->load());
  }

  int rank() const override { return env_.rank; }
  int world_size() const override { return env_.world_size; }
  std::string backend() const override { return "nccl"; }

  std::shared_ptr<Work> all_reduce_sum_async(const at::Tensor& tensor) override {
    check_all_reduce(kName, tensor);
    std::vector<at::Tensor> v{stage("all_reduce", tensor)};
    return wrap(guarded("all_reduce", [&] { return pg_->allreduce(v); }), "all_reduce", tensor, v[0]);
  }

  std::shared_ptr<Work> reduce_scatter_sum_async(const at::Tensor& input, const at::Tensor& output) override {
    check_reduce_scatter(kName, env_.world_size, input, output);
    auto in = stage("reduce_scatter", input);
    auto out = stage("reduce_scatter", output, /*copy=*/false);
    return wrap(guarded("reduce_scatter", [&] { return pg_->_reduce_scatter_base(out, in); }), "reduce_scatter", output,
                out);
  }

  std::shared_ptr<Work> all_gather_async(const at::Tensor& input, const at::Tensor& output) override {
    check_all_gather(kName, env_.world_size, input, output);
    auto in = stage("all_gather", input);
    auto out = stage("all_gather", output, /*copy=*/false);
    return wrap(guarded("all_gather", [&] { return pg_->_allgather_base(out, in); }), "all_gather", output, out);
  }

  void broadcast(const at::Tensor& tensor, int root) override {
    check_broadcast(kName, env_.world_size, tensor, root);
    std::vector<at::Tensor> v{stage("broadcast", tensor)};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    wrap(guarded("broadcast", [&] { return pg_->broadcast(v, o); }), "broadcast", tensor, v[0])->wait();
  }

  void barrier() override {
    c10d::BarrierOptions o;
    o.device_ids = {device_.index()};
    o.device = device_;
    wrap(guarded("barrier", [&] { return pg_->barrier(o); }), "barrier", at::Tensor(), at::Tensor())->wait();
  }

 protected:
  std::unique_ptr<Communicator> make_subgroup(const std::vector<int>& members, int group_rank,
                                              const std::string& tag) override {
    DistEnv sub = env_;
    sub.rank = group_rank;
    sub.world_size = static_cast<int>(members.size());
    return std::make_unique<NcclCommunicator>(sub, timeout_, device_, store_, prefix_ + "/" + tag, /*subgroup=*/true);
  }

 private:
  /// The tensor the collective runs on: `t` itself on our GPU, a device copy of a CPU tensor.
  at::Tensor stage(const char* op, const at::Tensor& t, bool copy = true) const {
    if (t.device() == device_) return t;
    PRISM_CHECK(t.is_cpu(), kName, ": ", op, ": tensor is on ", t.device(), " but this rank's communicator uses ",
                device_, " (one rank per GPU)");
    return copy ? t.to(device_) : at::empty_like(t, t.options().device(device_));
  }

  template <typename F>
  c10::intrusive_ptr<c10d::Work> guarded(const char* op, F&& issue) {
    try {
      return issue();
    } catch (const std::exception& e) {
      failed_->store(true);
      throw Error(prism::str(kName, ": issuing ", op, " failed: ", describe(e)));
    }
  }

  std::shared_ptr<Work> wrap(c10::intrusive_ptr<c10d::Work> work, const char* op, const at::Tensor& user,
                             const at::Tensor& staged) {
    std::function<void()> after;
    if (user.defined() && !user.is_same(staged)) after = [user, staged] { user.copy_(staged); };
    return std::make_shared<NcclWork>(std::move(work), op, std::move(after), failed_);
  }

  DistEnv env_;
  std::chrono::milliseconds timeout_;
  c10::Device device_;
  c10::intrusive_ptr<c10d::Store> store_;
  std::string prefix_;
  bool subgroup_ = false;
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> pg_;
  std::shared_ptr<std::atomic<bool>> failed_ = std::make_shared<std::atomic<bool>>(false);
};

}  // namespace

std::unique_ptr<Communicator> make_nccl(const DistEnv& env, const CommOptions& opts) {
  const int64_t count = at::globalContext().hasCUDA() ? c10::cuda::device_count() : 0;
  if (count == 0) {
    throw Error(prism::str(kName,
                           ": CUDA is not available in this process (no GPU or no driver): backend 'nccl' needs one "
                           "GPU per rank — use backend 'tcp' (or 'auto' with device 'cpu') for CPU runs"));
  }
  c10::Device device(opts.device);
  const int index = device.is_cuda() && device.has_index() ? device.index() : env.local_rank;
  if (index >= count) {
    throw Error(prism::str(kName, ": rank ", env.rank, " (LOCAL_RANK ", env.local_rank, ", device '", opts.device,
                           "') needs cuda:", index, " but only ", count,
                           " GPU(s) are visible — run one rank per GPU (check --nproc and CUDA_VISIBLE_DEVICES)"));
  }
  return std::make_unique<NcclCommunicator>(env, opts, c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index)));
}

}  // namespace prism::distributed::detail
