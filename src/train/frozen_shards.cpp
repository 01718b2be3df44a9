// FrozenShards (include/prism/train/frozen_shards.h).
#include "prism/train/frozen_shards.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include "flat_storage.h"
#include "prism/core/error.h"
#include "prism/distributed/communicator.h"
#include "prism/models/causal_lm.h"

namespace prism::train {

struct FrozenShards::Impl {
  struct Member {
    size_t index = 0;    // in named_parameters()
    int64_t offset = 0;  // in the unit's flat buffer
    int64_t numel = 0;
  };
  struct Unit {
    std::vector<Member> members;
    int64_t piece = 0;
    at::Tensor flat;   // [piece * S]; storage released between uses
    at::Tensor shard;  // [piece] this rank's piece, the all-gather input
    bool gathered = true;
    std::shared_ptr<distributed::Work> work;  // in-flight (prefetched) all-gather
  };

  distributed::Communicator& group;
  const models::CausalLM& model;
  std::vector<Unit> units;       // one per decoder layer
  std::vector<size_t> resident;  // parameters outside the layers
  int pinned = 0;
  std::mutex mu;

  Impl(distributed::Communicator& g, const models::CausalLM& m) : group(g), model(m) {}

  void issue(Unit& u) { detail::issue_gather(group, u.shard, u.flat, u.gathered, u.work); }
  void ensure(Unit& u) {
    issue(u);
    detail::finish_gather(u.work, u.gathered);
  }
  void release(Unit& u) {
    if (pinned > 0) return;
    detail::release_gathered(u.flat, u.gathered, u.work);
  }

  void before_layer(size_t i) {
    std::lock_guard<std::mutex> lock(mu);
    at::NoGradGuard no_grad;
    ensure(units[i]);
    if (i + 1 < units.size()) issue(units[i + 1]);
  }
  void after_layer(size_t i) {
    std::lock_guard<std::mutex> lock(mu);
    release(units[i]);
  }
  void pin() {
    std::lock_guard<std::mutex> lock(mu);
    at::NoGradGuard no_grad;
    if (pinned++ > 0) return;
    for (auto& u : units) issue(u);
    for (auto& u : units) ensure(u);
  }
  void unpin() {
    std::lock_guard<std::mutex> lock(mu);
    if (--pinned > 0) return;
    for (auto& u : units) release(u);
  }
};

namespace {

class FrozenHooks final : public models::LayerHooks {
 public:
  explicit FrozenHooks(std::shared_ptr<FrozenShards::Impl> impl) : impl_(std::move(impl)) {}
  void before_layer(size_t i) override { impl_->before_layer(i); }
  at::Tensor after_layer(size_t i, const at::Tensor& out) override {
    // Frozen: no backward ever re-reads the layer, so it is freed at once.
    impl_->after_layer(i);
    return out;
  }
  std::shared_ptr<void> gather_all() override { return detail::pin_handle(impl_); }

 private:
  std::shared_ptr<FrozenShards::Impl> impl_;
};

}  // namespace

FrozenShards::FrozenShards(models::CausalLM& model, distributed::Communicator& group)
    : impl_(std::make_shared<Impl>(group, model)) {
  auto& I = *impl_;
  const int64_t S = group.world_size(), rank = group.rank();
  const auto& params = model.named_parameters();
  std::vector<int> layer_of(params.size(), -1);
  {
    std::vector<std::string> names;
    for (const auto& [n, t] : params) names.push_back(n);
    for (const auto& info : model.parameter_infos()) {
      auto it = std::find(names.begin(), names.end(), info.name);
      PRISM_CHECK(it != names.end(), "FrozenShards: parameter '", info.name, "' is not a model parameter");
      layer_of[static_cast<size_t>(it - names.begin())] = static_cast<int>(info.layer);
    }
  }
  I.units.resize(model.config().layers.size());
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    params[i].second.requires_grad_(false);
    if (layer_of[i] < 0) {
      I.resident.push_back(i);
      continue;
    }
    auto& u = I.units[static_cast<size_t>(layer_of[i])];
    const int64_t used = u.members.empty() ? 0 : u.members.back().offset + u.members.back().numel;
    u.members.push_back({i, used, params[i].second.numel()});
  }
  for (size_t l = 0; l < I.units.size(); ++l) {
    auto& u = I.units[l];
    PRISM_CHECK(!u.members.empty(), "FrozenShards: decoder layer ", l, " has no parameters");
    const int64_t used = u.members.back().offset + u.members.back().numel;
    u.piece = (used + S * detail::kAlign - 1) / (S * detail::kAlign) * detail::kAlign;
    const auto& first = params[u.members.front().index].second;
    u.flat = at::zeros({u.piece * S}, first.options());
    for (const auto& m : u.members) {
      const auto& t = params[m.index].second;
      auto view = u.flat.narrow(0, m.offset, m.numel);
      view.copy_(t.reshape({-1}));
      t.set_data(view.view(t.sizes()));  // same values, now inside the unit's buffer
    }
    u.shard = u.flat.narrow(0, rank * u.piece, u.piece).clone();
    detail::free_storage(u.flat);
    u.gathered = false;
  }
  model.set_layer_hooks(std::make_shared<FrozenHooks>(impl_));
}

FrozenShards::~FrozenShards() = default;

void FrozenShards::blend_from(const models::CausalLM& source, double alpha) {
  auto& I = *impl_;
  std::lock_guard<std::mutex> lock(I.mu);
  PRISM_CHECK(I.pinned == 0, "FrozenShards::blend_from: the parameters are gathered");
  at::NoGradGuard no_grad;
  const auto& mine = I.model.named_parameters();
  const auto& src = source.named_parameters();
  PRISM_CHECK(src.size() == mine.size(), "FrozenShards::blend_from: ", src.size(), " source parameters for ",
              mine.size());
  auto blend = [&](at::Tensor dst, const at::Tensor& from) {
    dst.mul_(1.0 - alpha).add_(from.to(dst.scalar_type()), alpha);
  };
  for (size_t i : I.resident) blend(mine[i].second, src[i].second);
  const int64_t own = static_cast<int64_t>(I.group.rank());
  for (auto& u : I.units) {
    const int64_t lo_own = own * u.piece, hi_own = lo_own + u.piece;
    for (const auto& m : u.members) {
      const int64_t lo = std::max(lo_own, m.offset), hi = std::min(hi_own, m.offset + m.numel);
      if (hi <= lo) continue;
      const auto& s = src[m.index].second;
      PRISM_CHECK(s.numel() == m.numel, "FrozenShards::blend_from: '", src[m.index].first, "' has ", s.numel(),
                  " elements, expected ", m.numel);
      blend(u.shard.narrow(0, lo - lo_own, hi - lo), s.reshape({-1}).narrow(0, lo - m.offset, hi - lo));
    }
  }
}

int64_t FrozenShards::resident_bytes() const {
  int64_t n = 0;
  for (const auto& u : impl_->units) n += u.shard.numel() * u.shard.element_size();
  for (size_t i : impl_->resident) {
    const auto& t = impl_->model.named_parameters()[i].second;
    n += t.numel() * t.element_size();
  }
  return n;
}

}  // namespace prism::train
