// prism::analysis: CKA properties and hand-computed values, weight statistics on hand-made
// checkpoints (values written out below), checkpoint discovery, linear combinations of checkpoints.
// The torch / numpy oracle comparisons on random checkpoints are tests/analysis/oracle_analysis.py.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <tuple>

#include "prism/analysis/cka.h"
#include "prism/analysis/combine.h"
#include "prism/analysis/weights.h"
#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/io/safetensors.h"
#include "prism/models/causal_lm.h"
#include "util/test_util.h"

namespace prism::analysis {
namespace {

std::string tiny() { return fs::join(test::source_dir(), "configs/tiny/llama-tiny"); }

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, g, at::TensorOptions().dtype(at::kDouble));
}

// ---------------------------------------------------------------------------------------------
// CKA

TEST(Cka, OfAMatrixWithItselfIsOne) {
  auto x = randn({40, 16}, 1);
  EXPECT_NEAR(linear_cka(x, x), 1.0, 1e-12);
  EXPECT_NEAR(linear_cka(x.to(at::kFloat), x.to(at::kFloat)), 1.0, 1e-6);
}

TEST(Cka, OneDimensionalFeaturesGiveTheSquaredCorrelation) {
  // x = 1 2 3 4, y = 2 1 4 3: centred x = -1.5 -0.5 0.5 1.5, y = -0.5 -1.5 1.5 0.5;
  // x·y = 3, |x|² = |y|² = 5, so corr = 0.6 and CKA = corr² = 0.36.
  auto x = at::tensor({1.0, 2.0, 3.0, 4.0}, at::kDouble).view({4, 1});
  auto y = at::tensor({2.0, 1.0, 4.0, 3.0}, at::kDouble).view({4, 1});
  EXPECT_NEAR(linear_cka(x, y), 0.36, 1e-15);
}

TEST(Cka, InvariantToOrthogonalTransformsIsotropicScalingAndShifts) {
  auto x = randn({50, 12}, 2), y = at::tanh(x.matmul(randn({12, 20}, 3))) + 0.3 * randn({50, 20}, 4);
  const double base = linear_cka(x, y);
  ASSERT_GT(base, 0.05);
  ASSERT_LT(base, 0.99);
  auto q1 = std::get<0>(at::linalg_qr(randn({12, 12}, 5)));
  auto q2 = std::get<0>(at::linalg_qr(randn({20, 20}, 6)));
  EXPECT_NEAR(linear_cka(x.matmul(q1), y.matmul(q2)), base, 1e-12);
  EXPECT_NEAR(linear_cka(3.7 * x, 0.01 * y), base, 1e-12);
  EXPECT_NEAR(linear_cka(x + 5.0, y - 2.0), base, 1e-12);  // centring removes column offsets
  EXPECT_NEAR(linear_cka(y, x), base, 1e-12);
  // ... but not to anisotropic scaling: a test that could not tell would be worthless.
  auto d = at::linspace(0.1, 10.0, 12, at::kDouble);
  EXPECT_GT(std::fabs(linear_cka(x * d, y) - base), 1e-3);
}

TEST(Cka, GramFormEqualsFeatureForm) {
  auto x = randn({30, 8}, 7), y = randn({30, 5}, 8) + x.narrow(1, 0, 5);
  EXPECT_NEAR(linear_cka_gram(x.matmul(x.t()), y.matmul(y.t())), linear_cka(x, y), 1e-12);
}

TEST(Cka, RejectsMismatchedInputs) {
  EXPECT_THROW(linear_cka(randn({5, 3}, 1), randn({6, 3}, 2)), Error);
  EXPECT_THROW(linear_cka_gram(randn({5, 5}, 1), randn({4, 4}, 2)), Error);
  EXPECT_TRUE(std::isnan(linear_cka(at::ones({5, 3}, at::kDouble), randn({5, 3}, 2))));
}

// ---------------------------------------------------------------------------------------------
// Weight statistics on hand-made checkpoints (llama-tiny: 2 layers, hidden 64, untied)

struct Dirs {
  std::string root;
  Dirs() : root(test::make_temp_dir("analysis")) {}
  ~Dirs() { fs::remove_all(root); }
};

io::NamedTensors load_all(const std::string& dir) {
  io::CheckpointReader r(dir);
  io::NamedTensors out;
  for (const auto& n : r.names()) out.emplace_back(n, r.get(n).to(at::kFloat).clone());
  return out;
}

at::Tensor& find(io::NamedTensors& ts, const std::string& name) {
  for (auto& [n, t] : ts)
    if (n == name) return t;
  throw Error("test: no tensor " + name);
}

std::string write_ckpt(const std::string& dir, const io::NamedTensors& ts, uint64_t shard_bytes = 5'000'000'000ULL) {
  fs::create_directories(dir);
  fs::copy_file(fs::join(tiny(), "config.json"), fs::join(dir, "config.json"));
  io::ShardOptions so;
  so.max_shard_bytes = shard_bytes;
  io::save_sharded(dir, ts, so);
  return dir;
}

const char* kQ0 = "model.layers.0.self_attn.q_proj.weight";
const char* kDown1 = "model.layers.1.mlp.down_proj.weight";

struct HandMade {
  Dirs d;
  std::string base, fresh, other;
  at::Tensor q0;  // base values of kQ0
  HandMade() {
    auto ts = load_all(tiny());
    find(ts, kDown1)[0][0] = 0.0f;  // a base zero that moves
    find(ts, kDown1)[0][1] = 0.0f;  // a base zero that stays
    q0 = find(ts, kQ0).clone();
    base = write_ckpt(fs::join(d.root, "base"), ts);
    auto n = ts;
    for (auto& [name, t] : n) t = t.clone();
    find(n, kQ0).mul_(1.03);  // every nonzero element changes by 3 %
    find(n, kDown1)[0][0] = 0.5f;
    find(n, kDown1)[0][2] = find(ts, kDown1)[0][2] * 1.015f;  // changed at 0.1/0.5/1 %, not at 2 %
    fresh = write_ckpt(fs::join(d.root, "new"), n, 60'000);   // sharded
    auto o = ts;
    for (auto& [name, t] : o) t = t.clone();
    find(o, kQ0).mul_(0.97);  // the opposite direction in q, nothing elsewhere
    other = write_ckpt(fs::join(d.root, "other"), o);
  }
};

const GroupSummary& group(const std::vector<GroupSummary>& gs, const std::string& c, const std::string& s = "") {
  for (const auto& g : gs)
    if (g.component == c && g.subcomponent == s) return g;
  throw Error("test: no group " + c + "/" + s);
}

TEST(Weights, HandMadeCheckpoints) {
  HandMade h;
  CompareOptions o;
  o.cosine_pairs = {{0, 1}};
  auto cmp = compare_weights(h.base, {h.fresh, h.other}, o);
  ASSERT_EQ(cmp.tensors.size(), 2u * 9u + 3u);  // per layer 2 norms + q k v o + gate up down; embed, norm, lm_head
  const int64_t q_numel = h.q0.numel(), q_nonzero = h.q0.ne(0).sum().item<int64_t>();
  for (const auto& t : cmp.tensors) {
    if (t.name == kQ0) {
      EXPECT_EQ(t.component, "attention");
      EXPECT_EQ(t.subcomponent, "q");
      EXPECT_EQ(t.layer, 0);
      // thresholds 0.1 0.5 1 2 % see the 3 % change, 5 and 10 % do not
      EXPECT_EQ(t.deltas[0].changed, (std::vector<int64_t>{q_nonzero, q_nonzero, q_nonzero, q_nonzero, 0, 0}));
      EXPECT_NEAR(std::sqrt(t.deltas[0].sum_d2 / t.sum_w2), 0.03, 1e-6);
      EXPECT_NEAR(t.dots[0] / std::sqrt(t.deltas[0].sum_d2 * t.deltas[1].sum_d2), -1.0, 1e-6);
    } else if (t.name == kDown1) {
      EXPECT_EQ(t.component, "mlp");
      EXPECT_EQ(t.subcomponent, "down");
      EXPECT_GE(t.zeros, 2);
      // w = 0 -> 0.5 counts at every threshold; the 1.5 % change up to 1 %; w = 0 -> 0 never
      EXPECT_EQ(t.deltas[0].changed, (std::vector<int64_t>{2, 2, 2, 1, 1, 1}));
      EXPECT_EQ(t.deltas[1].changed, (std::vector<int64_t>{0, 0, 0, 0, 0, 0}));
    } else {
      EXPECT_EQ(t.deltas[0].sum_d2, 0.0) << t.name;
      EXPECT_EQ(t.deltas[0].changed[0], 0) << t.name;
    }
  }
  auto s = summarize(cmp);
  ASSERT_EQ(s.components.size(), 4u);
  EXPECT_EQ(s.components[0].component, "attention");
  EXPECT_EQ(s.components[1].component, "mlp");
  EXPECT_EQ(s.components[2].component, "embeddings/head");
  EXPECT_EQ(s.components[3].component, "norms");
  EXPECT_EQ(s.subcomponents[0].subcomponent, "q");
  EXPECT_EQ(s.subcomponents[6].subcomponent, "down");
  // sub-component q: two tensors, L2 0.03 and 0 -> matrix average 0.015; pooled = 0.03·‖q0‖/sqrt(‖q0‖² + ‖q1‖²)
  const auto& q = group(s.subcomponents, "attention", "q");
  EXPECT_EQ(q.tensors, 2);
  EXPECT_EQ(q.numel, 2 * q_numel);
  EXPECT_NEAR(q.deltas[0].l2_matrix_avg, 0.015, 1e-6);
  auto q1 = io::CheckpointReader(h.base).get("model.layers.1.self_attn.q_proj.weight").to(at::kDouble);
  const double n0 = h.q0.to(at::kDouble).pow(2).sum().item<double>(), n1 = q1.pow(2).sum().item<double>();
  EXPECT_NEAR(q.deltas[0].l2, 0.03 * std::sqrt(n0 / (n0 + n1)), 1e-6);
  EXPECT_NEAR(q.deltas[0].changed[2], static_cast<double>(q_nonzero) / (2.0 * q_numel), 1e-15);
  EXPECT_NEAR(q.deltas[0].changed_matrix_avg[2], 0.5 * q_nonzero / q_numel, 1e-15);
  // cosine: attention -1; mlp undefined (the second delta is zero there) and left out of the average
  EXPECT_NEAR(group(s.components, "attention").cosine[0], -1.0, 1e-6);
  EXPECT_TRUE(std::isnan(group(s.components, "mlp").cosine[0]));
  EXPECT_NEAR(s.cosine_weighted_avg[0], -1.0, 1e-6);
  EXPECT_NEAR(s.total.deltas[0].changed[5] * static_cast<double>(s.total.numel), 1.0, 1e-9);
}

TEST(Weights, ErrorsNameTheTensor) {
  Dirs d;
  auto ts = load_all(tiny());
  auto base = write_ckpt(fs::join(d.root, "base"), ts);
  auto wrong = ts;
  find(wrong, kQ0) = at::zeros({3, 3});
  auto bad_shape = write_ckpt(fs::join(d.root, "shape"), wrong);
  try {
    compare_weights(base, {bad_shape});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(kQ0), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[3, 3]"), std::string::npos) << e.what();
  }
  io::NamedTensors missing;
  for (auto& [n, t] : ts)
    if (n != kDown1) missing.emplace_back(n, t);
  auto bad_missing = write_ckpt(fs::join(d.root, "missing"), missing);
  try {
    compare_weights(base, {bad_missing});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(kDown1), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
  EXPECT_THROW(compare_weights(base, {fs::join(d.root, "nope")}), Error);
}

TEST(Weights, FindCheckpoints) {
  Dirs d;
  auto ck = fs::join(d.root, "run/checkpoints");
  auto make = [&](const std::string& name, bool complete) {
    auto m = fs::join(fs::join(ck, name), "model");
    fs::create_directories(m);
    fs::copy_file(fs::join(tiny(), "config.json"), fs::join(m, "config.json"));
    if (complete) fs::write_file_atomic(fs::join(fs::join(ck, name), "COMPLETE"), "{}");
  };
  make("step-00000200", true);
  make("step-00000020", true);
  make("step-00000040", false);        // incomplete: skipped
  make("step-00000060.tmp-77", true);  // a writer's temp directory: skipped
  auto refs = find_checkpoints({fs::join(d.root, "run")});
  ASSERT_EQ(refs.size(), 2u);
  EXPECT_EQ(refs[0].step, 20);
  EXPECT_EQ(refs[1].step, 200);
  EXPECT_EQ(refs[0].path, fs::join(ck, "step-00000020/model"));
  EXPECT_EQ(find_checkpoints({ck}).size(), 2u);
  // HF directories: the step is the trailing number of the name, else the position
  auto a = fs::join(d.root, "checkpoint-300"), b = fs::join(d.root, "checkpoint-100"), c = fs::join(d.root, "final");
  for (const auto& p : {a, b, c}) {
    fs::create_directories(p);
    fs::copy_file(fs::join(tiny(), "config.json"), fs::join(p, "config.json"));
  }
  refs = find_checkpoints({a, b});
  ASSERT_EQ(refs.size(), 2u);
  EXPECT_EQ(refs[0].step, 100);
  EXPECT_EQ(refs[1].path, a);
  EXPECT_EQ(find_checkpoints({c})[0].step, 1);
  EXPECT_THROW(find_checkpoints({a, a}), Error);  // two checkpoints of one step
  EXPECT_THROW(find_checkpoints({fs::join(d.root, "empty-nothing")}), Error);
}

// The grouping comes from CausalLM::parameter_infos: a Granite-4 hybrid (fused MLP, Mamba2 and
// attention layers) has the roles docs/analysis.md lists, without any checkpoint.
TEST(Weights, RolesOfAGranite4Hybrid) {
  Dirs d;
  fs::write_file_atomic(fs::join(d.root, "config.json"), R"({"model_type": "granitemoehybrid",
    "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48, "shared_intermediate_size": 48,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "layer_types": ["mamba", "attention"],
    "position_embedding_type": "nope", "num_local_experts": 0, "mamba_n_heads": 4, "mamba_n_groups": 2,
    "mamba_d_state": 8, "mamba_d_head": 16, "mamba_expand": 2, "mamba_d_conv": 4, "mamba_chunk_size": 8,
    "tie_word_embeddings": true, "rms_norm_eps": 1e-5})");
  models::LoadOptions meta;
  meta.device = "meta";
  auto infos = models::CausalLM::from_config(models::CausalLM::read_config(d.root), meta)->parameter_infos();
  std::map<std::string, std::tuple<std::string, std::string, int64_t>> got;
  for (const auto& p : infos) got[p.name] = {p.kind, p.role, p.layer};
  using T = std::tuple<std::string, std::string, int64_t>;
  EXPECT_EQ(got.at("model.embed_tokens.weight"), T("embedding", "embed", -1));
  EXPECT_EQ(got.at("model.layers.0.mamba.in_proj.weight"), T("mamba2", "in_proj", 0));
  EXPECT_EQ(got.at("model.layers.0.mamba.conv1d.bias"), T("mamba2", "conv1d", 0));
  EXPECT_EQ(got.at("model.layers.0.mamba.A_log"), T("mamba2", "A_log", 0));
  EXPECT_EQ(got.at("model.layers.0.mamba.dt_bias"), T("mamba2", "dt_bias", 0));
  EXPECT_EQ(got.at("model.layers.0.mamba.D"), T("mamba2", "D", 0));
  EXPECT_EQ(got.at("model.layers.0.mamba.norm.weight"), T("mamba2", "gated_norm", 0));
  EXPECT_EQ(got.at("model.layers.0.shared_mlp.input_linear.weight"), T("mlp", "gate_up", 0));
  EXPECT_EQ(got.at("model.layers.0.shared_mlp.output_linear.weight"), T("mlp", "down", 0));
  EXPECT_EQ(got.at("model.layers.1.self_attn.v_proj.weight"), T("attention", "v", 1));
  EXPECT_EQ(got.at("model.layers.1.post_attention_layernorm.weight"), T("norm", "norm", 1));
  EXPECT_EQ(got.at("model.norm.weight"), T("norm", "norm", -1));
  EXPECT_EQ(got.count("lm_head.weight"), 0u);  // tied
}

// ---------------------------------------------------------------------------------------------
// Linear combinations (the landscape's W(α, β))

TEST(Combine, MatchesTheCombinationComputedByHand) {
  HandMade h;
  auto m = load_combination({h.base, h.fresh, h.other}, {0.5, 1.0, -0.5});
  io::CheckpointReader rb(h.base), rn(h.fresh), ro(h.other);
  for (const auto& [name, t] : m->named_parameters()) {
    auto want = 0.5 * rb.get(name).to(at::kDouble) + rn.get(name).to(at::kDouble) - 0.5 * ro.get(name).to(at::kDouble);
    EXPECT_TRUE(test::close_rel(t, want.to(at::kFloat), 1e-7, 0.0, name));
  }
  // q of layer 0: 0.5 w + 1.03 w − 0.485 w = 1.045 w
  at::Tensor q;
  for (const auto& [name, t] : m->named_parameters())
    if (name == kQ0) q = t;
  EXPECT_TRUE(test::close_rel(q, h.q0 * 1.045, 1e-6));
  EXPECT_THROW(load_combination({h.base, h.fresh}, {1.0}), Error);
}

}  // namespace
}  // namespace prism::analysis
