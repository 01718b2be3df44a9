// DistributedAdamW (include/prism/train/optimizer.h): flat buckets, overlapped reduction, ZeRO-1,
// and with ParamSharding ZeRO-3/FSDP (one bucket per decoder layer whose gathered parameters come
// and go; docs/distributed.md "Parameter sharding"). The logical index space of the saved state is
// the same in both modes, which is what makes checkpoints layout-independent.
#include "prism/train/optimizer.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <mutex>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/core/log.h"
#include "prism/distributed/communicator.h"
#include "prism/io/safetensors.h"
#include "prism/models/causal_lm.h"
#include "flat_storage.h"

namespace prism::train {

using detail::free_storage;
using detail::kAlign;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string rank_file_name(int rank, int world) {
  char buf[96];
  std::snprintf(buf, sizeof(buf), "optimizer-rank%05d-of-%05d.safetensors", rank, world);
  return buf;
}

}  // namespace

struct DistributedAdamW::Impl {
  struct Param {
    std::string name;
    at::Tensor tensor;     // the live parameter (a view into its bucket's flat buffer after setup)
    int64_t numel = 0;
    int64_t logical = 0;   // offset in the world-independent index space (reverse model order)
    int bucket = 0;
    int64_t offset = 0;    // offset inside the bucket
    bool decay = true;
    bool ready = false;    // gradient of the current sync backward accumulated
    bool has_grad = false; // its bucket slice holds a gradient written since zero_grad
  };
  struct Bucket {
    std::vector<int> params;  // indices into `params`
    int64_t used = 0;         // elements holding parameters
    int64_t size = 0;         // padded: shard_world * piece
    int64_t piece = 0;        // elements owned per rank
    at::Tensor param_flat;    // [size] model dtype; parameters are views into it
    at::Tensor grad_flat;     // [size] fp32 accumulator
    at::Tensor grad_shard;    // [piece] fp32 reduced gradient of the owned piece (view when not sharded)
    at::Tensor master;        // [piece] fp32
    at::Tensor exp_avg, exp_avg_sq;  // [piece] fp32
    int ready = 0;
    std::shared_ptr<distributed::Work> work;
    bool launched = false;
    // Parameter sharding only:
    int unit = -1;               // decoder layer, -1: the root unit (always gathered)
    at::Tensor param_shard;      // [piece] model dtype: this rank's piece, all-gather input
    bool gathered = true;        // param_flat's storage holds the full parameters
    std::shared_ptr<distributed::Work> gather_work;  // in-flight (prefetched) all-gather
    at::Tensor rs_out;           // [piece] fp32 reduce-scatter result of the current micro-batch
  };
  // A contiguous owned range of one parameter inside one bucket's owned piece.
  struct Segment {
    int param = 0;
    int bucket = 0;
    int64_t local = 0;    // offset in the owned piece
    int64_t length = 0;
    int64_t logical = 0;  // offset in the logical index space
  };

  distributed::Communicator& comm;
  OptimizerConfig cfg;
  ParamSharding sharding;
  bool zero3 = false;              // parameters sharded (sharding.shard set)
  std::vector<int> unit_bucket;    // decoder layer -> bucket
  int pinned = 0;                  // live gather_all() handles
  std::vector<Param> params;
  std::vector<Bucket> buckets;
  std::vector<Segment> segments;  // sorted by logical offset
  int shard_world = 1, shard_rank = 0;
  bool sync = true;
  int next_launch = 0;
  int64_t step_count = 0;
  int64_t logical_total = 0;
  std::string layout;  // names and sizes in logical order, checked on load
  // Per decay group (0: no decay, 1: decay): segment views handed to the fused kernel.
  std::array<std::vector<at::Tensor>, 2> g_master, g_grad, g_m, g_v, g_steps;
  std::mutex mu;  // hooks may run on an autograd device thread

  Impl(distributed::Communicator& c, const OptimizerConfig& o, ParamSharding sh)
      : comm(c), cfg(o), sharding(std::move(sh)), zero3(sharding.shard != nullptr) {}

  /// The group gradients are reduce-scattered and norms summed over.
  distributed::Communicator& scomm() { return zero3 ? *sharding.shard : comm; }

  at::Tensor grad_view(const Param& p) const {
    return buckets[p.bucket].grad_flat.narrow(0, p.offset, p.numel).view(p.tensor.sizes());
  }

  void launch(int b) {
    auto& bk = buckets[b];
    bk.launched = true;
    if (zero3) return launch_sharded(b);
    if (comm.world_size() == 1) return;
    bk.work = shard_world > 1 ? comm.reduce_scatter_sum_async(bk.grad_flat, bk.grad_shard)
                              : comm.all_reduce_sum_async(bk.grad_flat);
  }
  // Buckets go out strictly in index order, so all ranks issue identical collective sequences.
  void launch_ready() {
    while (next_launch < static_cast<int>(buckets.size()) &&
           buckets[next_launch].ready == static_cast<int>(buckets[next_launch].params.size())) {
      launch(next_launch++);
    }
  }

  void on_grad(int idx, const at::Tensor& t) {
    auto& g = const_cast<at::Tensor&>(t).mutable_grad();
    if (!g.defined()) return;
    std::lock_guard<std::mutex> lock(mu);
    auto& p = params[idx];
    if (zero3) ensure_grad_buffer(buckets[p.bucket]);
    // The first gradient since zero_grad is copied, later ones added: zero_grad then need not
    // clear the buckets (one write and one read of every gradient fewer per step).
    if (p.has_grad) {
      grad_view(p).add_(g.view(p.tensor.sizes()));
    } else {
      grad_view(p).copy_(g.view(p.tensor.sizes()));
      p.has_grad = true;
    }
    g.reset();  // the fp32 bucket is the accumulator; no per-parameter .grad is kept alive
    if ((sync || zero3) && !p.ready) {
      p.ready = true;
      ++buckets[p.bucket].ready;
      launch_ready();
    }
  }

  struct Hook : torch::autograd::PostAccumulateGradHook {
    Impl* impl;
    int idx;
    Hook(Impl* i, int k) : impl(i), idx(k) {}
    void operator()(const torch::autograd::Variable& t) override { impl->on_grad(idx, t); }
  };

  void setup(const std::vector<std::pair<std::string, at::Tensor>>& named, const std::vector<bool>& decay) {
    PRISM_CHECK(named.size() == decay.size(), "DistributedAdamW: ", named.size(), " parameters but ", decay.size(),
                " decay flags");
    PRISM_CHECK(!named.empty(), "DistributedAdamW: no parameters");
    const int W = comm.world_size();
    shard_world = (cfg.zero1 && W > 1) ? W : 1;
    shard_rank = shard_world > 1 ? comm.rank() : 0;
    std::vector<int> unit_of(named.size(), -1);
    if (zero3) {
      PRISM_CHECK(sharding.gather && sharding.gather->world_size() == sharding.shard->world_size(),
                  "DistributedAdamW: parameter sharding needs a gather communicator over the shard group");
      shard_world = sharding.shard->world_size();
      shard_rank = sharding.shard->rank();
      for (size_t u = 0; u < sharding.units.size(); ++u)
        for (size_t i : sharding.units[u]) {
          PRISM_CHECK(i < named.size() && unit_of[i] < 0, "DistributedAdamW: parameter index ", i,
                      " is out of range or in two units");
          unit_of[i] = static_cast<int>(u);
        }
    }
    const auto dtype = named.front().second.scalar_type();
    const auto device = named.front().second.device();
    // Backward produces gradients roughly from the last layer to the first, so buckets are filled
    // in reverse model order; the logical index space uses the same order.
    for (size_t k = named.size(); k-- > 0;) {
      const auto& [name, t] = named[k];
      PRISM_CHECK(t.defined() && t.is_leaf(), "DistributedAdamW: parameter '", name, "' is not a leaf tensor");
      PRISM_CHECK(t.scalar_type() == dtype && t.device() == device, "DistributedAdamW: parameter '", name,
                  "' has dtype/device ", t.scalar_type(), "/", t.device(), ", expected ", dtype, "/", device,
                  " like the others");
      Param p;
      p.name = name;
      p.tensor = t;
      p.numel = t.numel();
      p.logical = logical_total;
      p.decay = decay[k];
      p.bucket = unit_of[k];  // unit until the buckets are laid out
      logical_total += p.numel;
      layout += name + ":" + std::to_string(p.numel) + ";";
      params.push_back(std::move(p));
    }
    if (zero3) {
      // One bucket per unit, in backward order: the last layer first, the root unit (whose
      // embedding gets its gradient last) at the end.
      const int units = static_cast<int>(sharding.units.size());
      buckets.resize(units + 1);
      unit_bucket.resize(units);
      for (int u = 0; u < units; ++u) {
        unit_bucket[u] = units - 1 - u;
        buckets[units - 1 - u].unit = u;
      }
      for (int i = 0; i < static_cast<int>(params.size()); ++i) {
        const int u = params[i].bucket;
        auto& b = buckets[u < 0 ? units : unit_bucket[u]];
        params[i].bucket = u < 0 ? units : unit_bucket[u];
        params[i].offset = b.used;
        b.params.push_back(i);
        b.used += params[i].numel;
      }
      for (const auto& b : buckets)
        PRISM_CHECK(!b.params.empty() || &b == &buckets.back(), "DistributedAdamW: a sharded unit has no parameters");
    } else {
      const int64_t cap = std::max<int64_t>(1, static_cast<int64_t>(cfg.bucket_mb * 1024 * 1024 / 4));
      for (int i = 0; i < static_cast<int>(params.size()); ++i) {
        if (buckets.empty() || (buckets.back().used > 0 && buckets.back().used + params[i].numel > cap))
          buckets.emplace_back();
        auto& b = buckets.back();
        params[i].bucket = static_cast<int>(buckets.size()) - 1;
        params[i].offset = b.used;
        b.params.push_back(i);
        b.used += params[i].numel;
      }
    }
    auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
    at::NoGradGuard no_grad;
    for (int bi = 0; bi < static_cast<int>(buckets.size()); ++bi) {
      auto& b = buckets[bi];
      b.piece = (b.used + shard_world * kAlign - 1) / (shard_world * kAlign) * kAlign;
      b.size = b.piece * shard_world;
      b.param_flat = at::zeros({b.size}, at::TensorOptions().dtype(dtype).device(device));
      // Sharded: the fp32 gradient buffer exists only between a unit's backward and its reduce-scatter.
      if (!zero3) b.grad_flat = at::zeros({b.size}, f32);
      for (int i : b.params) {
        auto& p = params[i];
        auto view = b.param_flat.narrow(0, p.offset, p.numel);
        view.copy_(p.tensor.reshape({-1}));
        p.tensor.set_data(view.view(p.tensor.sizes()));  // same values, now inside the bucket
      }
      const int64_t own = static_cast<int64_t>(shard_rank) * b.piece;
      b.grad_shard = shard_world > 1 || zero3 ? at::zeros({b.piece}, f32) : b.grad_flat.narrow(0, own, b.piece);
      // fp32 parameters on one shard: the parameters are their own master copy (no second copy
      // to keep, no copy back after every step).
      b.master = dtype == at::kFloat && shard_world == 1 ? b.param_flat.narrow(0, own, b.piece)
                                                          : b.param_flat.narrow(0, own, b.piece).to(at::kFloat).clone();
      b.exp_avg = at::zeros({b.piece}, f32);
      b.exp_avg_sq = at::zeros({b.piece}, f32);
      if (zero3 && b.unit >= 0) {
        b.param_shard = dtype == at::kFloat ? b.master : b.param_flat.narrow(0, own, b.piece).clone();
        free_storage(b.param_flat);
        b.gathered = false;
      }
      for (int i : b.params) {
        const auto& p = params[i];
        const int64_t lo = std::max(own, p.offset), hi = std::min(own + b.piece, p.offset + p.numel);
        if (hi > lo) segments.push_back({i, bi, lo - own, hi - lo, p.logical + (lo - p.offset)});
      }
    }
    std::sort(segments.begin(), segments.end(), [](const Segment& a, const Segment& b) { return a.logical < b.logical; });
    for (const auto& s : segments) {
      const auto& b = buckets[s.bucket];
      const int g = params[s.param].decay ? 1 : 0;
      g_master[g].push_back(b.master.narrow(0, s.local, s.length));
      g_grad[g].push_back(b.grad_shard.narrow(0, s.local, s.length));
      g_m[g].push_back(b.exp_avg.narrow(0, s.local, s.length));
      g_v[g].push_back(b.exp_avg_sq.narrow(0, s.local, s.length));
      g_steps[g].push_back(at::zeros({}, f32));
    }
    for (int i = 0; i < static_cast<int>(params.size()); ++i) {
      params[i].tensor.requires_grad_(true);
      torch::autograd::impl::set_post_acc_grad_hooks(params[i].tensor, std::make_unique<Hook>(this, i));
    }
  }

  // ---- parameter sharding (zero3) ----

  void ensure_grad_buffer(Bucket& b) {
    if (b.grad_flat.defined()) return;
    b.grad_flat = at::empty({b.size}, b.grad_shard.options());
    // Padding is reduced and normed with the rest: it must hold zeros.
    if (b.size > b.used) b.grad_flat.narrow(0, b.used, b.size - b.used).zero_();
  }

  /// Reduce-scatter of one unit's micro-batch gradient (parameters without one count as zero);
  /// its gathered parameters are no longer needed: the unit's backward is done.
  void launch_sharded(int bi) {
    auto& b = buckets[bi];
    at::NoGradGuard no_grad;
    ensure_grad_buffer(b);
    for (int i : b.params)
      if (!params[i].has_grad) {
        grad_view(params[i]).zero_();
        params[i].has_grad = true;
      }
    b.rs_out = at::empty({b.piece}, b.grad_shard.options());
    b.work = sharding.shard->reduce_scatter_sum_async(b.grad_flat, b.rs_out);
    release(b);
    // At most two reductions in flight: bounds the fp32 gradient buffers alive in backward.
    for (int k = 0; k + 1 < bi; ++k) retire(buckets[k]);
  }

  /// Waits for a unit's reduce-scatter and adds it to the accumulated gradient shard.
  void retire(Bucket& b) {
    if (!b.work) return;
    b.work->wait();
    b.work.reset();
    b.grad_shard.add_(b.rs_out);
    b.rs_out = at::Tensor();
    b.grad_flat = at::Tensor();
  }

  void issue_gather(Bucket& b) {
    detail::issue_gather(*sharding.gather, b.param_shard, b.param_flat, b.gathered, b.gather_work);
  }
  void ensure_gathered(Bucket& b) {
    issue_gather(b);
    detail::finish_gather(b.gather_work, b.gathered);
  }
  /// Frees a sharded unit's gathered parameters (not the root unit's, not while gather_all() holds them).
  void release(Bucket& b) {
    if (b.unit < 0 || pinned > 0) return;
    detail::release_gathered(b.param_flat, b.gathered, b.gather_work);
  }

  void before_layer(size_t i) {
    std::lock_guard<std::mutex> lock(mu);
    at::NoGradGuard no_grad;
    ensure_gathered(buckets[unit_bucket[i]]);
    // Prefetch: the next layer's all-gather runs (tcp: on the gather communicator's worker thread;
    // nccl: on its stream) while this layer computes.
    if (i + 1 < unit_bucket.size()) issue_gather(buckets[unit_bucket[i + 1]]);
  }
  void before_layer_backward(size_t i) {
    std::lock_guard<std::mutex> lock(mu);
    at::NoGradGuard no_grad;
    ensure_gathered(buckets[unit_bucket[i]]);
    if (i > 0) issue_gather(buckets[unit_bucket[i - 1]]);
  }
  void after_layer(size_t i) {
    std::lock_guard<std::mutex> lock(mu);
    release(buckets[unit_bucket[i]]);
  }

  void pin() {
    std::lock_guard<std::mutex> lock(mu);
    at::NoGradGuard no_grad;
    if (pinned++ > 0) return;
    for (auto& b : buckets)
      if (b.unit >= 0) issue_gather(b);
    for (auto& b : buckets)
      if (b.unit >= 0) ensure_gathered(b);
  }
  void unpin() {
    std::lock_guard<std::mutex> lock(mu);
    if (--pinned > 0) return;
    for (auto& b : buckets) release(b);
  }

  void end_backward_sharded() {
    std::lock_guard<std::mutex> lock(mu);
    at::NoGradGuard no_grad;
    while (next_launch < static_cast<int>(buckets.size())) launch(next_launch++);
    for (auto& b : buckets) {
      retire(b);
      release(b);
      b.ready = 0;
      b.launched = false;
    }
    for (auto& p : params) p.ready = p.has_grad = false;
    next_launch = 0;
  }

  void remove_hooks() {
    for (auto& p : params) torch::autograd::impl::set_post_acc_grad_hooks(p.tensor, nullptr);
  }

  void write_back_params() {
    at::NoGradGuard no_grad;
    std::vector<std::shared_ptr<distributed::Work>> works;
    if (zero3) {
      std::lock_guard<std::mutex> lock(mu);
      for (auto& b : buckets) {
        if (b.unit < 0) {  // the root unit: gathered, like ZeRO-1
          auto own = b.param_flat.narrow(0, static_cast<int64_t>(shard_rank) * b.piece, b.piece);
          own.copy_(b.master);
          works.push_back(sharding.gather->all_gather_async(own, b.param_flat));
          continue;
        }
        if (b.param_shard.data_ptr() != b.master.data_ptr()) b.param_shard.copy_(b.master);
        if (b.gathered || b.gather_work) {  // held by gather_all() or prefetched: refresh
          if (b.gather_work) b.gather_work->wait();
          b.gather_work.reset();
          works.push_back(sharding.gather->all_gather_async(b.param_shard, b.param_flat));
        }
      }
      for (auto& w : works) w->wait();
      return;
    }
    for (auto& b : buckets) {
      auto own = b.param_flat.narrow(0, static_cast<int64_t>(shard_rank) * b.piece, b.piece);
      if (own.data_ptr() != b.master.data_ptr()) own.copy_(b.master);
      if (shard_world > 1) works.push_back(comm.all_gather_async(own, b.param_flat));
    }
    for (auto& w : works) w->wait();
  }

  void adamw_reference(int g, double lr) {
    const double b1 = cfg.betas[0], b2 = cfg.betas[1];
    const double wd = g == 1 ? cfg.weight_decay : 0.0;
    const double bc1 = 1.0 - std::pow(b1, static_cast<double>(step_count));
    const double bc2 = 1.0 - std::pow(b2, static_cast<double>(step_count));
    for (size_t k = 0; k < g_master[g].size(); ++k) {
      auto& p = g_master[g][k];
      auto& grad = g_grad[g][k];
      p.mul_(1.0 - lr * wd);
      g_m[g][k].lerp_(grad, 1.0 - b1);
      g_v[g][k].mul_(b2).addcmul_(grad, grad, 1.0 - b2);
      auto denom = (g_v[g][k].sqrt() / std::sqrt(bc2)).add_(cfg.eps);
      p.addcdiv_(g_m[g][k], denom, -lr / bc1);
    }
  }
};

namespace {

/// models::LayerHooks over a sharded DistributedAdamW: gather before each layer (forward and
/// backward), free after, prefetching the neighbour in the direction of travel.
class ShardHooks final : public models::LayerHooks {
 public:
  explicit ShardHooks(std::shared_ptr<DistributedAdamW::Impl> impl) : impl_(std::move(impl)) {}
  void before_layer(size_t i) override { impl_->before_layer(i); }
  at::Tensor after_layer(size_t i, const at::Tensor& out) override {
    impl_->after_layer(i);
    if (out.requires_grad()) {
      // Runs when the gradient of the layer's output is complete, i.e. just before the layer's
      // backward (or, with activation checkpointing, its recompute) reads the parameters.
      std::weak_ptr<DistributedAdamW::Impl> weak = impl_;
      out.register_hook([weak, i](const at::Tensor& grad) {
        if (auto impl = weak.lock()) impl->before_layer_backward(i);
        return grad;
      });
    }
    return out;
  }
  std::shared_ptr<void> gather_all() override { return detail::pin_handle(impl_); }

 private:
  std::shared_ptr<DistributedAdamW::Impl> impl_;
};

}  // namespace

DistributedAdamW::DistributedAdamW(const std::vector<std::pair<std::string, at::Tensor>>& params,
                                   const std::vector<bool>& decay, distributed::Communicator& comm,
                                   const OptimizerConfig& cfg, ParamSharding sharding)
    : impl_(std::make_shared<Impl>(comm, cfg, std::move(sharding))) {
  impl_->setup(params, decay);
}

std::shared_ptr<models::LayerHooks> DistributedAdamW::layer_hooks() const {
  return impl_->zero3 ? std::make_shared<ShardHooks>(impl_) : nullptr;
}

void DistributedAdamW::end_backward() {
  if (impl_->zero3) impl_->end_backward_sharded();
}

DistributedAdamW::~DistributedAdamW() {
  if (impl_) impl_->remove_hooks();
}

void DistributedAdamW::zero_grad() {
  auto& I = *impl_;
  for (auto& b : I.buckets) {
    PRISM_CHECK(!b.work, "DistributedAdamW: zero_grad while a reduction is in flight (call finish_grad_sync)");
    b.ready = 0;
    b.launched = false;
  }
  for (auto& p : I.params) p.ready = p.has_grad = false;
  I.next_launch = 0;
  if (I.zero3)
    for (auto& b : I.buckets) b.grad_shard.zero_();  // accumulated over the step's micro-batches
}

void DistributedAdamW::set_sync(bool sync) { impl_->sync = sync; }

void DistributedAdamW::finish_grad_sync() {
  auto& I = *impl_;
  if (I.zero3) {
    I.end_backward_sharded();  // a no-op after StepRunner's per-micro-batch end_backward()
    if (I.sharding.replicate) {  // HSDP: sum the shard group's results over the replicas
      std::vector<std::shared_ptr<distributed::Work>> works;
      for (auto& b : I.buckets) works.push_back(I.sharding.replicate->all_reduce_sum_async(b.grad_shard));
      for (auto& w : works) w->wait();
    }
    return;
  }
  {
    std::lock_guard<std::mutex> lock(I.mu);
    // Parameters that got no gradient in this step (unused in the graph) count as zero; their
    // slices still hold an older step's values, as zero_grad leaves the buckets alone.
    at::NoGradGuard no_grad;
    for (auto& p : I.params)
      if (!p.has_grad) {
        I.grad_view(p).zero_();
        p.has_grad = true;
      }
    while (I.next_launch < static_cast<int>(I.buckets.size())) I.launch(I.next_launch++);
  }
  for (auto& b : I.buckets) {
    if (b.work) b.work->wait();
    b.work.reset();
  }
}

double DistributedAdamW::grad_norm() {
  auto& I = *impl_;
  // Each bucket's norm in fp32 (ATen reduces with a cascade/tree sum, so it stays accurate at
  // 1e8 elements); only the per-bucket results are squared and summed in double. Asking ATen
  // for a double norm instead converts the whole fp32 gradient first: 4x slower on CPU.
  std::vector<at::Tensor> norms;
  norms.reserve(I.buckets.size());
  for (auto& b : I.buckets) norms.push_back(at::linalg_vector_norm(b.grad_shard, 2));
  double total = at::stack(norms).to(at::kDouble).square().sum().item<double>();
  if (I.shard_world > 1) total = I.scomm().all_reduce_sum(total);
  return std::sqrt(total);
}

double DistributedAdamW::clip_grads(double norm, double max_norm) {
  if (max_norm <= 0 || !std::isfinite(norm)) return 1.0;
  const double coef = std::min(1.0, max_norm / (norm + 1e-6));
  if (coef < 1.0)
    for (auto& b : impl_->buckets) b.grad_shard.mul_(coef);
  return coef;
}

double DistributedAdamW::update_ratio(double lr) {
  auto& I = *impl_;
  at::NoGradGuard no_grad;
  const double b1 = I.cfg.betas[0], b2 = I.cfg.betas[1];
  const double t = static_cast<double>(I.step_count + 1);
  const double step_size = lr / (1.0 - std::pow(b1, t)), sqrt_bc2 = std::sqrt(1.0 - std::pow(b2, t));
  // Chunks bound the temporaries (a few fp32 copies of one chunk) whatever the segment size.
  constexpr int64_t kChunk = int64_t{1} << 22;
  std::vector<at::Tensor> upd, wgt;
  for (int g = 0; g < 2; ++g) {
    const double wd = g == 1 ? I.cfg.weight_decay : 0.0;
    for (size_t k = 0; k < I.g_master[g].size(); ++k) {
      const int64_t n = I.g_master[g][k].numel();
      for (int64_t lo = 0; lo < n; lo += kChunk) {
        const int64_t len = std::min(kChunk, n - lo);
        auto p = I.g_master[g][k].narrow(0, lo, len);
        auto grad = I.g_grad[g][k].narrow(0, lo, len);
        auto m = I.g_m[g][k].narrow(0, lo, len).lerp(grad, 1.0 - b1);
        auto v = I.g_v[g][k].narrow(0, lo, len).mul(b2).addcmul_(grad, grad, 1.0 - b2);
        auto u = m.div_(v.sqrt_().div_(sqrt_bc2).add_(I.cfg.eps)).mul_(step_size);
        if (wd != 0) u.add_(p, lr * wd);
        upd.push_back(at::linalg_vector_norm(u, 2));
        wgt.push_back(at::linalg_vector_norm(p, 2));
      }
    }
  }
  auto sq = [](const std::vector<at::Tensor>& xs) {
    return xs.empty() ? 0.0 : at::stack(xs).to(at::kDouble).square().sum().item<double>();
  };
  double u2 = sq(upd), w2 = sq(wgt);
  if (I.shard_world > 1) {
    auto both = at::tensor({u2, w2}, at::kDouble).to(I.buckets.front().master.device());
    I.scomm().all_reduce_sum(both);
    both = both.to(at::kCPU);
    u2 = both[0].item<double>();
    w2 = both[1].item<double>();
  }
  if (w2 == 0) return u2 == 0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(u2) / std::sqrt(w2);
}

void DistributedAdamW::step(double lr) {
  auto& I = *impl_;
  at::NoGradGuard no_grad;
  ++I.step_count;
  for (int g = 0; g < 2; ++g) {
    if (I.g_master[g].empty()) continue;
    for (auto& s : I.g_steps[g]) s.fill_(static_cast<double>(I.step_count));
    if (I.cfg.fused) {
      at::_fused_adamw_(I.g_master[g], I.g_grad[g], I.g_m[g], I.g_v[g], {}, I.g_steps[g], lr, I.cfg.betas[0],
                        I.cfg.betas[1], g == 1 ? I.cfg.weight_decay : 0.0, I.cfg.eps, false, false);
    } else {
      I.adamw_reference(g, lr);
    }
  }
  I.write_back_params();
}

int64_t DistributedAdamW::steps() const { return impl_->step_count; }

int64_t DistributedAdamW::state_bytes() const {
  int64_t n = 0;
  for (const auto& b : impl_->buckets) {
    if (impl_->zero3) {  // persistent per-rank buffers; gathered parameters and fp32 gradients come and go
      n += b.master.numel() * 16;
      if (b.param_shard.defined() && b.param_shard.data_ptr() != b.master.data_ptr())
        n += b.param_shard.numel() * b.param_shard.element_size();
      continue;
    }
    const bool aliased = b.master.data_ptr() == b.param_flat.data_ptr();  // fp32 params, one shard
    n += b.grad_flat.numel() * 4 + b.master.numel() * (aliased ? 8 : 12);
    if (impl_->shard_world > 1) n += b.grad_shard.numel() * 4;
  }
  return n;
}

void DistributedAdamW::save(const std::string& dir) const {
  const auto& I = *impl_;
  std::vector<at::Tensor> m, a, v;
  nlohmann::json ranges = nlohmann::json::array();
  for (const auto& s : I.segments) {
    const auto& b = I.buckets[s.bucket];
    m.push_back(b.master.narrow(0, s.local, s.length));
    a.push_back(b.exp_avg.narrow(0, s.local, s.length));
    v.push_back(b.exp_avg_sq.narrow(0, s.local, s.length));
    ranges.push_back({s.logical, s.length});
  }
  auto cat = [](const std::vector<at::Tensor>& xs) {
    return xs.empty() ? at::zeros({0}, at::kFloat) : at::cat(xs).to(at::kCPU);
  };
  std::map<std::string, std::string> meta;
  meta["format"] = "prism-zero1";
  meta["ranges"] = ranges.dump();
  meta["step"] = std::to_string(I.step_count);
  meta["logical_total"] = std::to_string(I.logical_total);
  meta["layout"] = I.layout;
  // Only the sharding world matters for reading; non-sharded runs write one file from rank 0.
  if (I.shard_world == 1 && I.comm.rank() != 0) return;
  if (I.sharding.replicate && I.sharding.replicate->rank() != 0) return;  // HSDP: replica 0 writes
  io::save_safetensors(fs::join(dir, rank_file_name(I.shard_rank, I.shard_world)),
                       {{"master", cat(m)}, {"exp_avg", cat(a)}, {"exp_avg_sq", cat(v)}}, meta);
}

void DistributedAdamW::load(const std::string& dir) {
  auto& I = *impl_;
  std::vector<std::string> files;
  for (const auto& f : fs::list_dir(dir))
    if (f.rfind("optimizer-rank", 0) == 0 && ends_with(f, ".safetensors")) files.push_back(fs::join(dir, f));
  std::sort(files.begin(), files.end());
  PRISM_CHECK(!files.empty(), dir, ": no optimizer-rank*.safetensors files (optimizer state of a checkpoint)");
  struct Range {
    int64_t start, length, file_offset;
    size_t file;
  };
  std::vector<Range> all;
  std::vector<std::array<at::Tensor, 3>> data;
  int64_t step = -1;
  for (size_t fi = 0; fi < files.size(); ++fi) {
    auto f = io::SafetensorsFile::open(files[fi]);
    const auto& md = f->header().metadata;
    auto get = [&](const std::string& k) -> const std::string& {
      auto it = md.find(k);
      if (it == md.end())
        throw Error("optimizer state is missing metadata key '" + k + "'", key_context(files[fi], "__metadata__." + k));
      return it->second;
    };
    if (get("layout") != I.layout)
      throw Error(
          "optimizer state was saved for a different model (parameter names or sizes differ; did train.trainable "
          "change?)",
          key_context(files[fi], "__metadata__.layout"));
    const int64_t s = std::stoll(get("step"));
    PRISM_CHECK(step < 0 || s == step, files[fi], ": step ", s, " differs from the other optimizer shards (", step, ")");
    step = s;
    data.push_back({f->get("master"), f->get("exp_avg"), f->get("exp_avg_sq")});
    int64_t off = 0;
    for (const auto& r : nlohmann::json::parse(get("ranges"))) {
      all.push_back({r.at(0).get<int64_t>(), r.at(1).get<int64_t>(), off, fi});
      off += r.at(1).get<int64_t>();
    }
    if (off != data.back()[0].numel())
      throw Error("optimizer state ranges cover " + std::to_string(off) + " elements but 'master' has " +
                      std::to_string(data.back()[0].numel()),
                  key_context(files[fi], "__metadata__.ranges"));
  }
  std::sort(all.begin(), all.end(), [](const Range& a, const Range& b) { return a.start < b.start; });
  at::NoGradGuard no_grad;
  for (const auto& s : I.segments) {
    const auto& b = I.buckets[s.bucket];
    int64_t covered = 0;
    auto it = std::upper_bound(all.begin(), all.end(), s.logical, [](int64_t x, const Range& r) { return x < r.start; });
    if (it != all.begin()) --it;
    for (; it != all.end() && it->start < s.logical + s.length; ++it) {
      const int64_t lo = std::max(s.logical, it->start), hi = std::min(s.logical + s.length, it->start + it->length);
      if (hi <= lo) continue;
      const int64_t src = it->file_offset + (lo - it->start), dst = s.local + (lo - s.logical);
      b.master.narrow(0, dst, hi - lo).copy_(data[it->file][0].narrow(0, src, hi - lo));
      b.exp_avg.narrow(0, dst, hi - lo).copy_(data[it->file][1].narrow(0, src, hi - lo));
      b.exp_avg_sq.narrow(0, dst, hi - lo).copy_(data[it->file][2].narrow(0, src, hi - lo));
      covered += hi - lo;
    }
    PRISM_CHECK(covered == s.length, dir, ": optimizer state does not cover parameter '", I.params[s.param].name,
                "' (", covered, " of ", s.length, " elements found; are shards missing?)");
  }
  I.step_count = step;
  I.write_back_params();
}

}  // namespace prism::train
