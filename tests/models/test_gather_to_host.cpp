// CausalLM::gather_to_host and save_pretrained(dir, values): how a checkpoint of a model with
// sharded parameters is written. The layer hooks below stand in for train::DistributedAdamW's
// sharding: a layer's parameters hold NaN except between before_layer and after_layer, so any read
// outside the bracket (or through gather_all, which would put the whole model on the device) shows.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "prism/core/fs.h"
#include "prism/models/causal_lm.h"
#include "util/test_util.h"

using prism::models::CausalLM;

namespace {

class FakeShardHooks final : public prism::models::LayerHooks {
 public:
  explicit FakeShardHooks(const CausalLM& m) : params_(m.named_parameters()) {
    std::map<std::string, int64_t> layer;
    for (const auto& info : m.parameter_infos()) layer[info.name] = info.layer;
    for (size_t k = 0; k < params_.size(); ++k) {
      const int64_t l = layer.at(params_[k].first);
      if (l < 0) continue;  // root unit: resident, as in DistributedAdamW
      units_[static_cast<size_t>(l)].push_back(k);
      saved_[k] = params_[k].second.detach().clone();
      params_[k].second.detach().fill_(NAN);  // "freed" until gathered
    }
  }
  void before_layer(size_t i) override {
    for (size_t k : units_.at(i)) params_[k].second.detach().copy_(saved_.at(k));
    ++gathered_now, ++calls;
    max_gathered = std::max(max_gathered, gathered_now);
  }
  at::Tensor after_layer(size_t i, const at::Tensor& out) override {
    for (size_t k : units_.at(i)) params_[k].second.detach().fill_(NAN);
    --gathered_now;
    return out;
  }
  std::shared_ptr<void> gather_all() override {
    ADD_FAILURE() << "gather_all: the whole model would be gathered on every rank";
    return nullptr;
  }
  const at::Tensor& saved(size_t k) const { return saved_.at(k); }
  bool sharded(size_t k) const { return saved_.count(k) > 0; }

  int gathered_now = 0, max_gathered = 0, calls = 0;

 private:
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::map<size_t, std::vector<size_t>> units_;
  std::map<size_t, at::Tensor> saved_;
};

std::unique_ptr<CausalLM> model(const std::string& fixture_name) {
  auto m = CausalLM::from_pretrained(prism::test::fixture(fixture_name));
  for (const auto& [n, t] : m->named_parameters()) t.detach().add_(0.25);  // not the file's values
  return m;
}

}  // namespace

TEST(GatherToHost, CopiesEachLayerWhileItIsGatheredOneAtATime) {
  auto m = model("llama");
  auto hooks = std::make_shared<FakeShardHooks>(*m);
  m->set_layer_hooks(hooks);
  const auto& ps = m->named_parameters();
  const auto values = m->gather_to_host(/*keep=*/true);
  ASSERT_EQ(values.size(), ps.size());
  const auto layers = static_cast<int>(m->config().layers.size());
  EXPECT_EQ(hooks->calls, layers);
  EXPECT_EQ(hooks->max_gathered, 1);
  EXPECT_EQ(hooks->gathered_now, 0);
  int sharded = 0;
  for (size_t k = 0; k < ps.size(); ++k) {
    if (hooks->sharded(k)) {
      ++sharded;
      EXPECT_TRUE(at::equal(values[k], hooks->saved(k))) << ps[k].first;
      EXPECT_TRUE(at::isnan(ps[k].second).all().item<bool>()) << ps[k].first << " left gathered";
    } else {
      EXPECT_TRUE(at::equal(values[k], ps[k].second)) << ps[k].first;
    }
  }
  EXPECT_GT(sharded, 0);
  EXPECT_LT(sharded, static_cast<int>(ps.size()));  // the root unit (embeddings, final norm) stays resident

  // A rank that does not keep the copies still takes part in every layer's gather (a collective).
  hooks->calls = 0;
  EXPECT_TRUE(m->gather_to_host(/*keep=*/false).empty());
  EXPECT_EQ(hooks->calls, layers);
}

TEST(GatherToHost, SavePretrainedWritesTheGivenValues) {
  auto m = model("llama");
  auto hooks = std::make_shared<FakeShardHooks>(*m);
  m->set_layer_hooks(hooks);
  const auto values = m->gather_to_host(true);
  const std::string dir = prism::test::make_temp_dir("gather-save") + "/model";
  m->save_pretrained(dir, values);
  auto back = CausalLM::from_pretrained(dir);
  const auto& ps = m->named_parameters();
  for (size_t k = 0; k < ps.size(); ++k) {
    const auto& loaded = back->named_parameters()[k];
    ASSERT_EQ(loaded.first, ps[k].first);
    EXPECT_TRUE(at::equal(loaded.second, values[k])) << loaded.first;
  }
  // Without values the live (here NaN-filled) tensors are written: the overload is what the
  // checkpointer must use.
  m->save_pretrained(dir);
  auto live = CausalLM::from_pretrained(dir);
  bool any_nan = false;
  for (const auto& [n, t] : live->named_parameters()) any_nan |= at::isnan(t).any().item<bool>();
  EXPECT_TRUE(any_nan);
  std::vector<at::Tensor> wrong(values.begin(), values.end() - 1);
  EXPECT_THROW(m->save_pretrained(dir, wrong), std::exception);
  prism::fs::remove_all(prism::fs::parent(dir));
}
