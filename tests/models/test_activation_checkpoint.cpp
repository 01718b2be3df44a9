// Activation checkpointing (ForwardOptions::activation_checkpointing) against the plain forward on
// every fixture family in float64: loss, logits, hidden states and every parameter gradient agree
// to 1e-10 on a packed and a padded batch. The graph check proves the layers' internals are not
// recorded (each layer is one checkpoint node whose inputs are the previous layer and the
// parameters' AccumulateGrad nodes), which is what frees their activations.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/function.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "prism/core/error.h"
#include "prism/io/safetensors.h"
#include "prism/models/causal_lm.h"
#include "util/test_util.h"

using prism::models::CausalLM;
using prism::models::ForwardOptions;
using prism::test::close_rel;
using prism::test::fixture;

namespace {

std::unique_ptr<CausalLM> load64(const std::string& name) {
  prism::models::LoadOptions lo;
  lo.dtype = at::kDouble;
  auto m = CausalLM::from_pretrained(fixture(name), lo);
  for (auto& [n, p] : m->named_parameters()) p.requires_grad_(true);
  return m;
}

at::Tensor ref_tensor(const std::string& fixture_name, const std::string& key) {
  return prism::io::SafetensorsFile::open(fixture(fixture_name + ".ref.safetensors"))->get(key).clone();
}

struct Run {
  at::Tensor loss, logits;
  std::vector<at::Tensor> hidden, grads;  // grads[i] of named_parameters()[i], undefined if none
};

// Next-token CE (mean over labels != -100) and its gradients; the model's grads are reset first.
Run run(const CausalLM& m, const at::Tensor& ids, ForwardOptions fo, const at::Tensor& labels) {
  for (auto& [n, p] : m.named_parameters()) p.mutable_grad() = at::Tensor();
  fo.output_hidden_states = true;
  auto out = m.forward(ids, fo);
  Run r;
  r.loss = at::cross_entropy_loss(out.logits.reshape({-1, out.logits.size(-1)}), labels.reshape(-1), {},
                                  at::Reduction::Mean, -100);
  // A term on an intermediate hidden state too: gradient must also enter the middle of the stack.
  r.loss = r.loss + 1e-3 * out.hidden_states[1].square().mean();
  r.loss.backward();
  r.logits = out.logits.detach();
  for (auto& h : out.hidden_states) r.hidden.push_back(h.detach());
  for (auto& [n, p] : m.named_parameters()) r.grads.push_back(p.grad().defined() ? p.grad().clone() : at::Tensor());
  return r;
}

void expect_same(const CausalLM& m, const Run& ck, const Run& plain, const std::string& what) {
  EXPECT_TRUE(close_rel(ck.loss.detach(), plain.loss.detach(), 1e-12, 0, what + " loss"));
  EXPECT_TRUE(close_rel(ck.logits, plain.logits, 1e-12, 0, what + " logits"));
  ASSERT_EQ(ck.hidden.size(), plain.hidden.size());
  for (size_t i = 0; i < ck.hidden.size(); ++i)
    EXPECT_TRUE(close_rel(ck.hidden[i], plain.hidden[i], 1e-12, 0, what + " hidden_states." + std::to_string(i)));
  const auto& params = m.named_parameters();
  // Some gradients are rounding noise by construction (k_proj.bias: a per-query constant shift of
  // the scores that softmax removes); for those the relative test is meaningless, so an absolute
  // floor far below any real gradient is added.
  double scale = 0;
  for (const auto& g : plain.grads)
    if (g.defined()) scale = std::max(scale, prism::test::max_abs(g));
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& name = params[i].first;
    ASSERT_EQ(ck.grads[i].defined(), plain.grads[i].defined()) << what << ": gradient presence differs for " << name;
    if (!plain.grads[i].defined()) continue;
    EXPECT_GT(prism::test::max_abs(plain.grads[i]), 0.0) << what << ": zero gradient for " << name;
    EXPECT_TRUE(close_rel(ck.grads[i], plain.grads[i], 1e-10, 1e-13 * scale, what + " grad " + name));
  }
}

class Checkpointing : public ::testing::TestWithParam<std::string> {};

TEST_P(Checkpointing, PackedBatchLossAndEveryGradientEqualPlainForward) {
  auto m = load64(GetParam());
  auto ids = ref_tensor(GetParam(), "packed.input_ids");
  auto cu = ref_tensor(GetParam(), "packed.cu_seqlens");
  // labels: the next token inside each document, -100 on each document's last token
  auto labels = at::roll(ids, -1, 1);
  for (int64_t d = 1; d < cu.size(0); ++d) labels[0][cu[d].item<int64_t>() - 1].fill_(-100);
  ForwardOptions fo;
  fo.cu_seqlens = cu;
  auto plain = run(*m, ids, fo, labels);
  fo.activation_checkpointing = true;
  auto ck = run(*m, ids, fo, labels);
  expect_same(*m, ck, plain, GetParam() + " packed");
}

TEST_P(Checkpointing, PaddedBatchLossAndEveryGradientEqualPlainForward) {
  auto m = load64(GetParam());
  auto ids = ref_tensor(GetParam(), "batch.input_ids");
  auto mask = ref_tensor(GetParam(), "batch.attention_mask");
  ASSERT_TRUE(mask.eq(0).any().item<bool>()) << "the fixture's batch should contain padding";
  // no loss at padding positions, nor on a real token whose successor is padding
  auto labels = at::roll(ids, -1, 1).masked_fill(at::roll(mask, -1, 1).eq(0).logical_or(mask.eq(0)), -100);
  labels.select(1, -1).fill_(-100);
  ForwardOptions fo;
  fo.attention_mask = mask;
  auto plain = run(*m, ids, fo, labels);
  fo.activation_checkpointing = true;
  auto ck = run(*m, ids, fo, labels);
  expect_same(*m, ck, plain, GetParam() + " padded");
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Checkpointing, ::testing::ValuesIn(prism::test::model_fixtures()));

// Every node reachable from `root`.
std::vector<torch::autograd::Node*> graph_nodes(torch::autograd::Node* root) {
  std::vector<torch::autograd::Node*> order{root};
  std::set<torch::autograd::Node*> seen{root};
  for (size_t i = 0; i < order.size(); ++i)
    for (const auto& e : order[i]->next_edges())
      if (e.function && seen.insert(e.function.get()).second) order.push_back(e.function.get());
  return order;
}

bool is_checkpoint(const torch::autograd::Node* n) { return n->name().find("CheckpointedLayer") != std::string::npos; }

TEST(CheckpointingGraph, EachLayerIsOneNodeWithNoInternalsRecorded) {
  for (const std::string name : {"llama", "granite4_hybrid", "nemotron_h"}) {
    auto m = load64(name);
    auto ids = ref_tensor(name, "input_ids");
    ForwardOptions fo;
    // The roots stay alive while their graphs are walked (a graph dies with its last tensor).
    auto plain_root = m->forward(ids, fo).logits.sum();
    const size_t num_plain_nodes = graph_nodes(plain_root.grad_fn().get()).size();
    fo.activation_checkpointing = true;
    auto root = m->forward(ids, fo).logits.sum();
    auto nodes = graph_nodes(root.grad_fn().get());
    int64_t num_ckpt = 0;
    size_t num_param_inputs = 0;
    for (auto* n : nodes) {
      if (!is_checkpoint(n)) continue;
      ++num_ckpt;
      num_param_inputs += n->next_edges().size() - 1;
      // Inputs: the previous layer's output (checkpoint node, or the embedding chain for layer 0)
      // and one AccumulateGrad per parameter: nothing of the layer's own computation.
      const auto& edges = n->next_edges();
      ASSERT_GE(edges.size(), 2u);
      for (size_t k = 1; k < edges.size(); ++k) {
        ASSERT_TRUE(edges[k].function) << name << ": parameter input " << k << " not connected";
        EXPECT_NE(edges[k].function->name().find("AccumulateGrad"), std::string::npos)
            << name << ": checkpoint input " << k << " comes from " << edges[k].function->name();
      }
    }
    EXPECT_EQ(num_ckpt, m->config().num_layers()) << name;
    // Every layer parameter is an explicit input: all but the embedding, final norm and lm_head.
    EXPECT_EQ(num_param_inputs, m->named_parameters().size() - (m->config().tie_word_embeddings ? 2 : 3)) << name;
    // The plain graph records every op of every layer; the checkpointed one a handful per layer.
    EXPECT_LT(nodes.size() * 2, num_plain_nodes) << name << ": " << nodes.size() << " vs " << num_plain_nodes;
  }
}

TEST(CheckpointingGraph, NoGradModeRunsThePlainForward) {
  auto m = load64("granite4_hybrid");
  auto ids = ref_tensor("granite4_hybrid", "input_ids");
  at::NoGradGuard ng;
  ForwardOptions fo;
  auto plain = m->forward(ids, fo).logits;
  fo.activation_checkpointing = true;
  auto ck = m->forward(ids, fo).logits;
  EXPECT_FALSE(ck.requires_grad());
  EXPECT_TRUE(at::equal(ck, plain));
}

TEST(CheckpointingGraph, RejectsDecodeState) {
  auto m = load64("llama");
  prism::models::DecodeState state(*m, 1, 64);
  ForwardOptions fo;
  fo.state = &state;
  fo.activation_checkpointing = true;
  EXPECT_THROW(m->forward(ref_tensor("llama", "input_ids"), fo), prism::Error);
  at::NoGradGuard ng;  // refused even without grad: the combination is a caller error
  EXPECT_THROW(m->forward(ref_tensor("llama", "input_ids"), fo), prism::Error);
}

TEST(CheckpointingGraph, FrozenParametersAndTiedEmbeddings) {
  // llama_sharded: tied embeddings, attention and MLP biases.
  auto m = load64("llama_sharded");
  ASSERT_TRUE(m->config().tie_word_embeddings);
  auto ids = ref_tensor("llama_sharded", "input_ids");
  auto labels = at::roll(ids, -1, 1);
  labels.select(1, -1).fill_(-100);
  std::set<std::string> frozen;
  for (auto& [n, p] : m->named_parameters())
    if (n.find(".layers.0.") != std::string::npos || n.ends_with("_proj.bias") ||
        n.find("layernorm") != std::string::npos) {
      p.requires_grad_(false);
      frozen.insert(n);
    }
  ASSERT_GT(frozen.size(), 5u);
  ForwardOptions fo;
  auto plain = run(*m, ids, fo, labels);
  fo.activation_checkpointing = true;
  auto ck = run(*m, ids, fo, labels);
  expect_same(*m, ck, plain, "llama_sharded frozen");
  const auto& params = m->named_parameters();
  for (size_t i = 0; i < params.size(); ++i)
    EXPECT_EQ(ck.grads[i].defined(), !frozen.count(params[i].first)) << params[i].first;

  // Only the (tied) embedding trains: the gradient still has to pass through every checkpoint.
  for (auto& [n, p] : m->named_parameters()) p.requires_grad_(n == m->config().embed_name);
  fo.activation_checkpointing = false;
  plain = run(*m, ids, fo, labels);
  fo.activation_checkpointing = true;
  ck = run(*m, ids, fo, labels);
  expect_same(*m, ck, plain, "llama_sharded embedding only");
}

// The LibTorch rule the checkpoint relies on (build-and-libtorch.md §3): Function::apply makes an
// at::TensorList argument graph inputs, but silently skips a std::vector<at::Tensor>.
struct TakesList : torch::autograd::Function<TakesList> {
  static at::Tensor forward(torch::autograd::AutogradContext*, const at::Tensor& x, at::TensorList ps) {
    auto y = x.clone();
    for (const auto& p : ps) y = y + p;
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list) {
    return {};
  }
};
struct TakesVector : torch::autograd::Function<TakesVector> {
  static at::Tensor forward(torch::autograd::AutogradContext*, const at::Tensor& x, const std::vector<at::Tensor>& ps) {
    auto y = x.clone();
    for (const auto& p : ps) y = y + p;
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list) {
    return {};
  }
};

TEST(CheckpointingGraph, TensorListArgumentsAreGraphInputsVectorsAreNot) {
  auto x = at::randn({3}).requires_grad_(true);
  std::vector<at::Tensor> ps{at::randn({3}).requires_grad_(true), at::randn({3}).requires_grad_(true)};
  auto a = TakesList::apply(x, at::TensorList(ps));
  auto b = TakesVector::apply(x, ps);
  EXPECT_EQ(a.grad_fn()->next_edges().size(), 3u);
  EXPECT_EQ(b.grad_fn()->next_edges().size(), 1u);  // the parameters would get no gradient
}

}  // namespace
