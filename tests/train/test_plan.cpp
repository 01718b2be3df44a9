// Memory planner (prism/train/plan.h). Oracles:
//  * measured: the peak of the bytes live in c10's CPU allocator (every CPU tensor's storage goes
//    through it) while the trainer's step runs for small random-init models: model, optimizer,
//    forward, fused linear + cross-entropy, backward, AdamW, twice. Not counted: oneDNN / BLAS
//    scratch, allocator fragmentation, code and the loader (the planner does not count them either).
//  * hand arithmetic written out in the test for Llama-3.1-8B (parameters, gradients, AdamW state).
//  * issue 19's "peak memory per rank falls with the shard count as planned": the same counter in
//    every rank of real 1-, 2- and 4-rank jobs over TCP (this binary re-run as the ranks), with the
//    parameter / gradient / optimizer terms also written out by hand; attention-only training
//    (train.trainable) measured the same way, sharded and not.
//  * GRPO: `prism-train rl` (rl::run_grpo, configs/rl/tiny-cpu.yaml) run in this process under
//    the counter, with and without a reference model.
#include <ATen/ATen.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <unordered_map>

#include "distributed/spawn_util.h"
#include "prism/core/config.h"
#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/io/tokenizer.h"
#include "prism/models/causal_lm.h"
#include "prism/models/decode_state.h"
#include "prism/ops/linear_cross_entropy.h"
#include "prism/rl/grpo.h"
#include "prism/rl/prompts.h"
#include "prism/train/model_setup.h"
#include "prism/train/plan.h"
#include "prism/train/run_context.h"
#include "prism/train/step.h"
#include "prism/train/train_config.h"
#include "util/test_util.h"

using prism::models::CausalLM;
using prism::models::ModelConfig;
using prism::train::MemoryPlanInput;

namespace {

// Counts the bytes held by CPU tensors (current and peak) around the default CPU allocator. Its
// DataPtrs keep context == data (some ATen paths require it: Allocator::raw_allocate), so sizes
// are looked up by address; the deleter reaches the counter through the one installed scope.
class CountingAllocator final : public c10::Allocator {
 public:
  explicit CountingAllocator(c10::Allocator* base) : base_(base), free_(base->raw_deleter()) {}
  c10::DataPtr allocate(size_t n) override {
    auto inner = base_->allocate(n);
    void* data = inner.get();
    if (data == nullptr) return inner;
    PRISM_CHECK(inner.get_context() == data && inner.get_deleter() == free_, "unexpected CPU allocator");
    inner.release_context();
    {
      std::lock_guard<std::mutex> lock(mu_);
      sizes_[data] = static_cast<int64_t>(n);
      current_ += static_cast<int64_t>(n);
      peak_ = std::max(peak_, current_);
    }
    return {data, data, &release, c10::Device(c10::kCPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }
  int64_t current() {
    std::lock_guard<std::mutex> lock(mu_);
    return current_;
  }
  int64_t peak() {
    std::lock_guard<std::mutex> lock(mu_);
    return peak_;
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    peak_ = current_;
  }
  static CountingAllocator*& active() {
    static CountingAllocator* a = nullptr;
    return a;
  }

 private:
  static void release(void* p) {
    auto* self = active();
    c10::DeleterFnPtr f = nullptr;
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      auto it = self->sizes_.find(p);
      if (it != self->sizes_.end()) {
        self->current_ -= it->second;
        self->sizes_.erase(it);
      }
      f = self->free_;
    }
    f(p);
  }
  c10::Allocator* base_;
  c10::DeleterFnPtr free_;
  std::mutex mu_;
  std::unordered_map<void*, int64_t> sizes_;
  int64_t current_ = 0, peak_ = 0;
};

// Installs the CountingAllocator as the CPU allocator for the scope (tests run one at a time). It
// lives as long as the process: tensors it allocated may outlive the scope (cached tables).
struct CountingScope {
  c10::Allocator* previous = c10::GetCPUAllocator();
  CountingAllocator& counter;
  CountingScope() : counter(instance(previous)) { c10::SetCPUAllocator(&counter, /*priority=*/100); }
  ~CountingScope() { c10::SetCPUAllocator(previous, /*priority=*/100); }
  static CountingAllocator& instance(c10::Allocator* base) {
    static auto* a = new CountingAllocator(base);
    CountingAllocator::active() = a;
    return *a;
  }
};

ModelConfig config_from_json(const std::string& json) {
  auto dir = prism::test::make_temp_dir("plan-cfg");
  prism::fs::write_file_atomic(dir + "/config.json", json);
  auto cfg = CausalLM::read_config(dir);
  prism::fs::remove_all(dir);
  return cfg;
}

// llama-tiny's config.json (configs/tiny/llama-tiny) scaled up so that weights, optimizer state and
// activations are all megabytes.
std::string llama_json(int64_t hidden, int64_t inter, int64_t layers, int64_t heads, int64_t kv, int64_t vocab) {
  return prism::str(R"({"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_act":"silu","hidden_size":)",
                    hidden, R"(,"intermediate_size":)", inter, R"(,"num_hidden_layers":)", layers,
                    R"(,"num_attention_heads":)", heads, R"(,"num_key_value_heads":)", kv, R"(,"vocab_size":)", vocab,
                    R"(,"max_position_embeddings":4096,"rms_norm_eps":1e-5,"tie_word_embeddings":false})");
}

// A Granite-4 hybrid (Mamba2 + attention layers, shared MLP) like the granite4_hybrid fixture, larger.
std::string hybrid_json() {
  return R"({"architectures":["GraniteMoeHybridForCausalLM"],"model_type":"granitemoehybrid","hidden_act":"silu",
    "hidden_size":256,"intermediate_size":512,"shared_intermediate_size":512,"num_local_experts":0,
    "layer_types":["mamba","attention","mamba","mamba"],"num_hidden_layers":4,"num_attention_heads":8,
    "num_key_value_heads":2,"vocab_size":2048,"max_position_embeddings":4096,"position_embedding_type":"nope",
    "mamba_n_heads":16,"mamba_d_head":32,"mamba_d_state":64,"mamba_n_groups":1,"mamba_chunk_size":64,
    "mamba_d_conv":4,"mamba_expand":2,"mamba_conv_bias":true,"mamba_proj_bias":false,"rms_norm_eps":1e-5,
    "embedding_multiplier":12.0,"residual_multiplier":0.22,"logits_scaling":8.0,"attention_multiplier":0.0625,
    "tie_word_embeddings":true})";
}

struct Measured {
  double peak = 0;  // bytes above what was live before the model was built
};

// One rank of `prism-train mid` (trainer.cpp MidLoop): the model, DistributedAdamW over its
// trainable parameters (in.trainable, as the trainer selects them), and one optimizer step of one
// packed micro-batch (several documents) through the fused loss. The ranks of the job are this
// process's torchrun environment (RANK / WORLD_SIZE / MASTER_*; none: one rank), with
// dist.shard_size = in.shard_size.
Measured measure_steps(const MemoryPlanInput& in, int64_t threads = 2) {
  CountingScope scope;
  auto& counter = scope.counter;
  prism::train::DistSection dist;
  dist.shard_size = in.shard_size;
  dist.timeout_s = 120;
  auto ctx = prism::train::RunContext::create("cpu", dist, threads);
  const int64_t base = counter.current();
  counter.reset_peak();
  {
    prism::models::LoadOptions lo;
    lo.dtype = in.dtype;
    auto model = CausalLM::from_config(in.model, lo);
    model->init_weights(1);
    prism::train::OptimizerConfig oc;
    auto opt = prism::train::make_optimizer(*model, *ctx, oc, prism::train::trainable_mask(*model, in.trainable));
    prism::train::StepRunner runner(*ctx, *opt, {1.0, in.optimizer_update_check ? 1.0 : 0.0});
    const int64_t T = in.micro_batch_rows * in.seq_len;
    for (int step = 0; step < 1; ++step) {
      auto ids = at::randint(in.model.vocab_size, {1, T}, at::kLong);
      auto labels = at::randint(in.model.vocab_size, {T}, at::kLong);
      // Four documents per row, as packed batches have.
      std::vector<int64_t> cu{0};
      for (int d = 1; d <= 4; ++d) cu.push_back(T * d / 4);
      std::vector<int64_t> pos;
      for (int d = 0; d < 4; ++d)
        for (int64_t t = cu[d]; t < cu[d + 1]; ++t) pos.push_back(t - cu[d]);
      prism::models::ForwardOptions fo;
      fo.cu_seqlens = at::tensor(cu, at::kInt);
      fo.position_ids = at::tensor(pos, at::kLong).reshape({1, -1});
      fo.activation_checkpointing = in.activation_checkpointing;
      fo.skip_lm_head = true;
      runner.begin(1, static_cast<double>(T));
      auto out = model->forward(ids, fo);
      prism::ops::LinearCrossEntropyOptions co;
      co.logits_scaling = model->config().logits_scaling;
      auto ce = prism::ops::linear_cross_entropy(out.last_hidden.reshape({-1, out.last_hidden.size(-1)}),
                                                 model->lm_head_weight(), labels, co);
      runner.backward(ce.loss, ce.loss_sum.item<double>());
      auto r = runner.finish(1e-3);
      EXPECT_TRUE(r.applied) << r.skip_reason;
    }
  }
  return {static_cast<double>(counter.peak() - base)};
}

MemoryPlanInput input(const ModelConfig& cfg, c10::ScalarType dtype, int64_t rows, int64_t seq, bool ckpt,
                      std::vector<std::string> trainable = {"all"}) {
  MemoryPlanInput in;
  in.trainable = std::move(trainable);
  in.model = cfg;
  in.dtype = dtype;
  in.micro_batch_rows = rows;
  in.seq_len = seq;
  in.activation_checkpointing = ckpt;
  return in;
}

struct Case {
  const char* name;
  std::string json;
  c10::ScalarType dtype;
  int64_t rows, seq;
  bool ckpt;
  double tolerance;  // the issue's 10 %; dense models are counted tensor by tensor and held to 3 %
  std::vector<std::string> trainable = {"all"};  // train.trainable
};

class PlanVsMeasured : public ::testing::TestWithParam<Case> {};

// The planner's per-rank total within 10 % of the measured peak of live CPU tensor bytes.
TEST_P(PlanVsMeasured, WithinTenPercent) {
  const auto& c = GetParam();
  const auto in = input(config_from_json(c.json), c.dtype, c.rows, c.seq, c.ckpt, c.trainable);
  const auto plan = prism::train::plan_memory(in);
  const auto m = measure_steps(in);
  const double planned = plan.total();
  std::printf("[plan] %-28s planned %10.2f MiB measured %10.2f MiB (%+.1f %%)\n", c.name, planned / 1048576.0,
              m.peak / 1048576.0, 100.0 * (planned - m.peak) / m.peak);
  EXPECT_NEAR(planned / m.peak, 1.0, c.tolerance) << prism::train::format_plan(plan, 0);
}

const std::string kLlama = llama_json(256, 768, 4, 8, 4, 4096);

INSTANTIATE_TEST_SUITE_P(
    Small, PlanVsMeasured,
    ::testing::Values(Case{"llama_fp32", kLlama, at::kFloat, 1, 512, false, 0.03},
                      Case{"llama_fp32_ckpt", kLlama, at::kFloat, 1, 512, true, 0.03},
                      Case{"llama_fp32_2x1024", kLlama, at::kFloat, 2, 1024, false, 0.03},
                      Case{"llama_bf16", kLlama, at::kBFloat16, 1, 512, false, 0.03},
                      Case{"llama_bf16_ckpt", kLlama, at::kBFloat16, 2, 512, true, 0.03},
                      Case{"llama_mha_fp32", llama_json(384, 1024, 3, 6, 6, 8192), at::kFloat, 1, 768, false, 0.03},
                      Case{"hybrid_fp32", hybrid_json(), at::kFloat, 1, 512, false, 0.10},
                      Case{"hybrid_fp32_ckpt", hybrid_json(), at::kFloat, 1, 512, true, 0.10},
                      Case{"hybrid_bf16", hybrid_json(), at::kBFloat16, 1, 512, false, 0.10},
                      // train.trainable: attention (the long-context stage's option).
                      Case{"llama_attn_only_fp32", kLlama, at::kFloat, 1, 512, false, 0.03, {"attention"}},
                      Case{"llama_attn_only_bf16_ckpt", kLlama, at::kBFloat16, 2, 512, true, 0.03, {"attention"}},
                      Case{"hybrid_attn_only_fp32", hybrid_json(), at::kFloat, 1, 512, false, 0.10, {"attention"}}),
    [](const ::testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });

}  // namespace

namespace {

const char* kLlama31_8B = R"({"model_type":"llama","architectures":["LlamaForCausalLM"],"vocab_size":128256,
  "hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,
  "num_key_value_heads":8,"rms_norm_eps":1e-5,"rope_theta":500000.0,"max_position_embeddings":131072,
  "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
  "original_max_position_embeddings":8192},"tie_word_embeddings":false,"hidden_act":"silu"})";

const char* kMistralSmall24B = R"({"model_type":"mistral","architectures":["MistralForCausalLM"],"vocab_size":131072,
  "hidden_size":5120,"intermediate_size":32768,"num_hidden_layers":40,"num_attention_heads":32,
  "num_key_value_heads":8,"head_dim":128,"rms_norm_eps":1e-5,"rope_theta":100000000.0,"sliding_window":null,
  "max_position_embeddings":32768,"tie_word_embeddings":false,"hidden_act":"silu"})";

double item(const prism::train::MemoryPlan& p, const std::string& name) {
  for (const auto& i : p.items)
    if (i.name == name) return i.bytes;
  ADD_FAILURE() << "no plan item " << name;
  return -1;
}

// A study config with model.path pointing at a directory holding only `config_json`.
template <class Config>
Config study_config(const std::string& yaml, const std::string& config_json, std::string& dir) {
  dir = prism::test::make_temp_dir("plan-study");
  prism::fs::write_file_atomic(dir + "/config.json", config_json);
  return prism::config::load_config<Config>(prism::fs::join(prism::test::source_dir(), yaml), {"model.path=" + dir});
}

// configs/mid/llama-3.1-8b.yaml on 128 H100s (its comment: 16 nodes x 8), bf16, ZeRO-1, against
// the arithmetic written out: P = 8,030,261,248 parameters.
TEST(PlanStudy, Llama31_8B_MidMatchesHandArithmetic) {
  std::string dir;
  auto cfg = study_config<prism::train::MidTrainConfig>("configs/mid/llama-3.1-8b.yaml", kLlama31_8B, dir);
  auto in = prism::train::plan_input(cfg, CausalLM::read_config(dir), 128, "cuda");
  prism::fs::remove_all(dir);
  EXPECT_TRUE(in.cuda);
  EXPECT_EQ(in.seq_len, 8192);
  EXPECT_EQ(in.micro_batch_rows, 1);
  EXPECT_TRUE(in.activation_checkpointing);
  auto p = prism::train::plan_memory(in);
  EXPECT_DOUBLE_EQ(item(p, "parameters"), 16060522496.0);               // P x 2 B (bf16)
  EXPECT_DOUBLE_EQ(item(p, "master weights"), 250945664.0);             // P x 4 B / 128
  EXPECT_DOUBLE_EQ(item(p, "gradients"), 32121044992.0 + 250945664.0);  // P x 4 B buckets + owned piece
  EXPECT_DOUBLE_EQ(item(p, "optimizer state"), 501891328.0);            // 2 x P x 4 B / 128
  EXPECT_DOUBLE_EQ(item(p, "communication buffers"), 0.0);              // reduced in place
  // Checkpointed: 32 layer inputs of 8192 x 4096 bf16 = 2,147,483,648, plus RoPE cos/sin
  // (2 x 128 x 2 B) and the final norm (input, output: 2 x 4096 x 2 B; rstd 4 B) per token:
  // 8192 x 16900 = 138,444,800.
  EXPECT_DOUBLE_EQ(p.activations_checkpointed, 2147483648.0 + 138444800.0);
  EXPECT_DOUBLE_EQ(item(p, "activations"), p.activations_checkpointed);
  EXPECT_GT(p.activations_full, 10 * p.activations_checkpointed);
  // ~54 GB: fits an 80 GB H100 as the study ran it (the gradient buckets are the biggest item).
  EXPECT_LT(p.total(), 80e9);
  EXPECT_GT(p.total(), 50e9);
  EXPECT_EQ(p.biggest().name, "gradients");

  // 8-way sharding x 16 replicas (the study's HSDP), as optimizer.cpp's ParamSharding lays it out:
  // the decoder layers (32 x 218,112,000 = 6,979,584,000 parameters) are sharded / 8 between
  // uses; the root unit (embedding + lm head 2 x 128256 x 4096 + final norm 4096 = 1,050,677,248)
  // stays gathered and its fp32 gradient buffer lives through backward.
  in.shard_size = 8;
  auto s = prism::train::plan_memory(in);
  EXPECT_DOUBLE_EQ(item(s, "parameters"), 1050677248.0 * 2 + 6979584000.0 * 2 / 8);
  EXPECT_DOUBLE_EQ(item(s, "gradients"), 32121044992.0 / 8 + 1050677248.0 * 4);
  EXPECT_DOUBLE_EQ(item(s, "master weights"), 32121044992.0 / 8);
  EXPECT_DOUBLE_EQ(item(s, "optimizer state"), 2 * 32121044992.0 / 8);
  // Two gathered layers (bf16) and two reduce-scatters in flight (the layer's fp32 gradient and
  // its fp32 piece / 8): 218,112,000 x (2 x 2 + 2 x (4 + 4 / 8)).
  EXPECT_DOUBLE_EQ(item(s, "communication buffers"), 218112000.0 * 13);
  EXPECT_LT(s.total(), p.total());
}

// The study's 24B model does not fit an 80 GB card with replicated parameters (issue 19's
// motivation); the suggested layout shards them and fits.
TEST(PlanStudy, MistralSmall24BNeedsParameterSharding) {
  std::string dir;
  auto cfg = study_config<prism::train::MidTrainConfig>("configs/mid/mistral-small-24b.yaml", kMistralSmall24B, dir);
  auto in = prism::train::plan_input(cfg, CausalLM::read_config(dir), 128, "cuda");
  prism::fs::remove_all(dir);
  auto p = prism::train::plan_memory(in);
  EXPECT_GT(p.total(), 80e9);
  EXPECT_DOUBLE_EQ(item(p, "parameters"), 23572403200.0 * 2);
  auto fix = prism::train::suggest_layout(in, 80e9);
  ASSERT_TRUE(fix.has_value());
  EXPECT_GT(fix->shard_size, 1);
  EXPECT_LE(prism::train::plan_memory(*fix).total(), 80e9);
  // The smallest: half the shard size does not fit with any checkpointing / micro-batch.
  auto smaller = *fix;
  smaller.shard_size /= 2;
  smaller.activation_checkpointing = true;
  smaller.micro_batch_rows = 1;
  EXPECT_GT(prism::train::plan_memory(smaller).total(), 80e9);
  EXPECT_NE(prism::train::layout_change(in, *fix).find("--set dist.shard_size="), std::string::npos);
}

// Per-rank bytes fall with the shard size for every study config (mid and rl) and every total
// stays within sane bounds (more than the bf16 weights / shard, less than 20 bytes per parameter
// plus the decode cache and activations).
TEST(PlanStudy, EveryStudyConfigPlansAndShardingShrinksIt) {
  const std::vector<std::pair<std::string, const char*>> models = {{"llama-3.1-8b", kLlama31_8B},
                                                                   {"mistral-small-24b", kMistralSmall24B}};
  for (const auto& [name, json] : models) {
    for (const std::string job : {"mid", "rl"}) {
      std::string dir;
      prism::train::MemoryPlanInput in;
      const std::string yaml = "configs/" + job + "/" + name + ".yaml";
      if (job == "mid") {
        auto cfg = study_config<prism::train::MidTrainConfig>(yaml, json, dir);
        in = prism::train::plan_input(cfg, CausalLM::read_config(dir), 8, "cuda");
      } else {
        auto cfg = study_config<prism::rl::RlConfig>(yaml, json, dir);
        in = prism::rl::plan_input(cfg, CausalLM::read_config(dir), 8, "cuda");
        EXPECT_TRUE(in.reference_model) << yaml;  // kl.beta 0.05
        EXPECT_EQ(in.decode_rows, cfg.rollout.slots + 1);
        EXPECT_EQ(in.seq_len, cfg.train.micro_batch_tokens);
      }
      prism::fs::remove_all(dir);
      // Shard size 1 is ZeRO-1 over all 8 ranks; from 2 on the optimizer state is split over the
      // shard group only (HSDP), so the totals fall from 2 to 8, and 8 is below ZeRO-1.
      const double zero1 = prism::train::plan_memory(in).total();
      double last = 1e300;
      for (int64_t s : {2, 4, 8}) {
        in.shard_size = s;
        const auto p = prism::train::plan_memory(in);
        const double P = CausalLM::parameter_count(in.model);
        EXPECT_LT(p.total(), last) << yaml << " shard " << s;
        EXPECT_GT(p.total(), 18 * P / s) << yaml;
        last = p.total();
      }
      EXPECT_LT(last, zero1) << yaml;
    }
  }
}

TEST(Plan, BadLayoutAndSizesAreRefusedNamingTheKey) {
  auto in = input(config_from_json(kLlama), at::kFloat, 1, 128, false);
  in.world_size = 6;
  in.shard_size = 4;
  try {
    prism::train::plan_memory(in);
    FAIL();
  } catch (const prism::Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "dist.shard_size: the shard size must divide the world size (6 ranks) (expected a "
              "divisor of 6, found 4)");
  }
  EXPECT_DOUBLE_EQ(prism::train::parse_byte_size("80GB", "k"), 80e9);
  EXPECT_DOUBLE_EQ(prism::train::parse_byte_size("24GiB", "k"), 24.0 * 1024 * 1024 * 1024);
  EXPECT_DOUBLE_EQ(prism::train::parse_byte_size("1000", "k"), 1000.0);
  EXPECT_THROW(prism::train::parse_byte_size("80 gigs", "--device-memory"), prism::Error);
}

}  // namespace

namespace {

// `prism-train plan` end to end: exit 4 and the study's 8 x 16 HSDP suggested for the 24B model on
// 128 ranks of 80 GB; exit 0 and "the configured layout" once that layout is set.
TEST(PlanCli, SuggestsTheStudyLayoutForThe24BModelAndExitsByFit) {
  auto dir = prism::test::make_temp_dir("plan-cli");
  prism::fs::write_file_atomic(dir + "/config.json", kMistralSmall24B);
  const std::string base = prism::fs::join(prism::test::bin_dir(), "prism-train") + " plan --config " +
                           prism::fs::join(prism::test::source_dir(), "configs/mid/mistral-small-24b.yaml") +
                           " --set model.path=" + dir + " --world-size 128";
  auto run = [](const std::string& cmd, std::string& out) {
    FILE* f = popen((cmd + " 2>&1").c_str(), "r");
    char buf[4096];
    out.clear();
    while (size_t n = fread(buf, 1, sizeof buf, f)) out.append(buf, n);
    const int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  };
  std::string out;
  EXPECT_EQ(run(base + " --device-memory 80GB", out), 4) << out;
  EXPECT_NE(out.find("does NOT fit in 74.51 GiB"), std::string::npos) << out;
  EXPECT_NE(out.find("smallest layout that fits: --set dist.shard_size=8 --set dist.replicate_size=16\n"),
            std::string::npos)
      << out;
  EXPECT_EQ(run(base + " --device-memory 80GB --set dist.shard_size=8 --set dist.replicate_size=16", out), 0) << out;
  EXPECT_NE(out.find("smallest layout that fits: the configured layout"), std::string::npos) << out;
  EXPECT_EQ(run(base + " --device-memory 80gigs", out), 1) << out;
  EXPECT_NE(out.find("prism-train: error: --device-memory: invalid size"), std::string::npos) << out;
  prism::fs::remove_all(dir);
}

}  // namespace

namespace {

// The decode-cache line against what a DecodeState of the same rows and length allocates (a
// hybrid: KV for the attention layer, conv inputs and fp32 SSM states for the Mamba2 layers), and
// against the arithmetic for the study's RL config of Llama-3.1-8B.
TEST(PlanDecodeCache, EqualsTheDecodeStateAndTheHandArithmetic) {
  auto in = input(config_from_json(hybrid_json()), at::kFloat, 1, 128, false);
  in.decode_rows = 3;
  in.decode_length = 100;
  prism::models::LoadOptions lo;
  lo.dtype = at::kFloat;
  auto model = CausalLM::from_config(in.model, lo);
  prism::models::DecodeState st(*model, 3, 100);
  EXPECT_DOUBLE_EQ(item(prism::train::plan_memory(in), "decode cache"), static_cast<double>(st.bytes()));
  // 1 attention layer: 2 x 2 KV heads x 32 x 100 x 4 B; 3 Mamba2 layers: conv 640 x 3 x 4 B + SSM
  // 16 x 32 x 64 x 4 B; per row, 3 rows.
  EXPECT_DOUBLE_EQ(static_cast<double>(st.bytes()),
                   3.0 * (2 * 2 * 32 * 100 * 4 + 3 * (640 * 3 * 4 + 16 * 32 * 64 * 4)));

  std::string dir;
  auto cfg = study_config<prism::rl::RlConfig>("configs/rl/llama-3.1-8b.yaml", kLlama31_8B, dir);
  auto rl = prism::rl::plan_input(cfg, CausalLM::read_config(dir), 8, "cuda");
  prism::fs::remove_all(dir);
  // 256 slots + the prefix row, 16,384 tokens (train.micro_batch_tokens), 32 layers x K and V x
  // 8 KV heads x 128 x 2 B: 514 GiB, the plan's biggest item by far.
  const auto p = prism::train::plan_memory(rl);
  EXPECT_DOUBLE_EQ(item(p, "decode cache"), 257.0 * 16384 * 32 * 2 * 8 * 128 * 2);
  EXPECT_DOUBLE_EQ(item(p, "reference model"), 16060522496.0);
  EXPECT_EQ(p.biggest().name, "decode cache");
}

}  // namespace

namespace {

// Issue 19: peak memory per rank falls with the shard count as the planner predicts. The same
// fp32 Llama (8 layers of 1,049,088 parameters: parameter state, ~16 B per parameter unsharded, is
// ~85 % of the peak) trained one step on 1, 2 and 4 real ranks over TCP with dist.shard_size =
// world size; each rank measures its own peak of live CPU tensor bytes (the CountingAllocator) and
// the test process compares every rank with plan_memory. Oracles: the measured peaks, and the
// parameter / gradient / optimizer terms written out by hand below.
const std::string kShardLlama = llama_json(256, 1024, 8, 8, 8, 1024);
constexpr int64_t kShardSeq = 128;

MemoryPlanInput shard_input(int64_t shards, const std::string& trainable = "all") {
  auto in = input(config_from_json(kShardLlama), at::kFloat, 1, kShardSeq, false, {trainable});
  in.world_size = shards;
  in.shard_size = shards;
  return in;
}

// One rank of the job the test below starts (this binary again, under a torchrun environment):
// writes its measured peak to $PRISM_PLAN_RANK_OUT/rank<RANK>. Skipped when run on its own.
TEST(PlanShardedRank, MeasureOneRank) {
  const char* out = std::getenv("PRISM_PLAN_RANK_OUT");
  if (out == nullptr) GTEST_SKIP() << "a rank of PlanSharded.PeakPerRankFallsWithTheShardCountAsPlanned";
  const int64_t world = std::atoll(std::getenv("WORLD_SIZE"));
  const char* trainable = std::getenv("PRISM_PLAN_TRAINABLE");
  const auto m = measure_steps(shard_input(world, trainable ? trainable : "all"), /*threads=*/1);
  prism::fs::write_file_atomic(prism::fs::join(out, prism::str("rank", std::getenv("RANK"))),
                               prism::str(static_cast<int64_t>(m.peak)));
}

std::string self_exe() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  PRISM_CHECK(n > 0, "readlink /proc/self/exe");
  return std::string(buf, static_cast<size_t>(n));
}

// The peak of every rank of a `shards`-rank job.
std::vector<double> measure_ranks(int shards, const std::string& trainable = "all") {
  namespace dist = prism::test::dist;
  const std::string dir = prism::test::make_temp_dir("plan-ranks");
  const int port = dist::free_port();
  std::vector<pid_t> pids;
  std::vector<std::string> logs;
  for (int r = 0; r < shards; ++r) {
    logs.push_back(prism::fs::join(dir, prism::str("rank", r, ".log")));
    pids.push_back(
        dist::spawn({self_exe(), "--gtest_filter=PlanShardedRank.MeasureOneRank"},
                    {prism::str("RANK=", r), prism::str("WORLD_SIZE=", shards), prism::str("LOCAL_RANK=", r),
                     prism::str("LOCAL_WORLD_SIZE=", shards), "MASTER_ADDR=127.0.0.1", prism::str("MASTER_PORT=", port),
                     "PRISM_PLAN_RANK_OUT=" + dir, "PRISM_PLAN_TRAINABLE=" + trainable},
                    logs.back()));
  }
  const auto res = dist::wait_all(pids, logs, 300);
  std::vector<double> peaks;
  for (int r = 0; r < shards; ++r) {
    const std::string f = prism::fs::join(dir, prism::str("rank", r));
    EXPECT_EQ(res.procs[static_cast<size_t>(r)].code, 0) << res.describe();
    peaks.push_back(prism::fs::exists(f) ? std::atof(prism::fs::read_file(f).c_str()) : 0.0);
  }
  if (!::testing::Test::HasFailure()) prism::fs::remove_all(dir);
  return peaks;
}

TEST(PlanSharded, PeakPerRankFallsWithTheShardCountAsPlanned) {
  // (b) The planned reduction, by hand. P = 8 x 1,049,088 (q k v o 4 x 256^2, gate up down
  // 3 x 256 x 1024, 2 norms x 256) + the root unit 524,544 (embedding and lm head 2 x 1024 x 256,
  // final norm 256) = 8,917,248 parameters, fp32.
  //   S = 1: parameters P x 4 (their own master), gradient buckets P x 4, AdamW 2 x P x 4.
  //   S > 1: the root unit gathered (524,544 x 4) and the layers' shards are the fp32 master
  //          (P x 4 / S); gradients P x 4 / S + the root unit's buffer 524,544 x 4; AdamW 2 x P x 4 / S.
  const std::map<int64_t, std::array<double, 4>> by_hand = {
      {1, {35668992.0, 0.0, 35668992.0, 71337984.0}},
      {2, {2098176.0, 17834496.0, 17834496.0 + 2098176.0, 35668992.0}},
      {4, {2098176.0, 8917248.0, 8917248.0 + 2098176.0, 17834496.0}}};
  std::map<int64_t, double> planned, measured;
  for (int64_t S : {1, 2, 4}) {
    const auto plan = prism::train::plan_memory(shard_input(S));
    const auto& h = by_hand.at(S);
    EXPECT_DOUBLE_EQ(item(plan, "parameters"), h[0]) << S;
    EXPECT_DOUBLE_EQ(item(plan, "master weights"), h[1]) << S;
    EXPECT_DOUBLE_EQ(item(plan, "gradients"), h[2]) << S;
    EXPECT_DOUBLE_EQ(item(plan, "optimizer state"), h[3]) << S;
    planned[S] = plan.total();
    // (a) Every rank's measured peak within 10 % of the plan.
    const auto peaks = measure_ranks(static_cast<int>(S));
    for (size_t r = 0; r < peaks.size(); ++r) {
      std::printf("[plan] shards %ld rank %zu: planned %8.2f MiB measured %8.2f MiB (%+.1f %%)\n", static_cast<long>(S),
                  r, planned[S] / 1048576.0, peaks[r] / 1048576.0, 100.0 * (planned[S] - peaks[r]) / peaks[r]);
      EXPECT_NEAR(planned[S] / peaks[r], 1.0, 0.10) << "shards " << S << " rank " << r << "\n"
                                                    << prism::train::format_plan(plan, 0);
    }
    measured[S] = *std::max_element(peaks.begin(), peaks.end());
  }
  // The measured peak falls with the shard count by the planned amount (within 10 % of it).
  for (auto [from, to] : {std::pair<int64_t, int64_t>{1, 2}, {2, 4}}) {
    const double planned_drop = planned[from] - planned[to], measured_drop = measured[from] - measured[to];
    std::printf("[plan] shards %ld -> %ld: planned drop %8.2f MiB measured %8.2f MiB\n", static_cast<long>(from),
                static_cast<long>(to), planned_drop / 1048576.0, measured_drop / 1048576.0);
    EXPECT_GT(measured_drop, 0) << from << " -> " << to;
    EXPECT_NEAR(measured_drop / planned_drop, 1.0, 0.10) << from << " -> " << to;
  }
}

// train.trainable: attention under 2-way sharding. Only the 8 x 262,144 attention weights are
// trained (and sharded); the other 6,820,096 parameters, the root unit's included, are frozen:
// resident at full size, no gradient, no master copy, no moments. Planned by hand, then measured
// on 2 ranks.
TEST(PlanSharded, FrozenParametersStayResidentAndGetNoState) {
  const auto plan = prism::train::plan_memory(shard_input(2, "attention"));
  EXPECT_DOUBLE_EQ(item(plan, "parameters"), 6820096.0 * 4);  // frozen, resident (trained fp32 shards = master)
  EXPECT_DOUBLE_EQ(item(plan, "master weights"), 2097152.0 * 4 / 2);
  EXPECT_DOUBLE_EQ(item(plan, "gradients"), 2097152.0 * 4 / 2);  // the root unit has no trained parameter
  EXPECT_DOUBLE_EQ(item(plan, "optimizer state"), 2 * 2097152.0 * 4 / 2);
  // 2 gathered layers of 262,144 trained parameters (fp32) + 2 reduce-scatters (fp32 + fp32 / 2).
  EXPECT_DOUBLE_EQ(item(plan, "communication buffers"), 262144.0 * (2 * 4 + 2 * (4 + 2)));
  const auto peaks = measure_ranks(2, "attention");
  for (size_t r = 0; r < peaks.size(); ++r) {
    std::printf("[plan] attention-only, shards 2, rank %zu: planned %8.2f MiB measured %8.2f MiB (%+.1f %%)\n", r,
                plan.total() / 1048576.0, peaks[r] / 1048576.0, 100.0 * (plan.total() - peaks[r]) / peaks[r]);
    EXPECT_NEAR(plan.total() / peaks[r], 1.0, 0.10) << prism::train::format_plan(plan, 0);
  }
}

// GRPO under parameter sharding (as the trainer is planned to run it: the reference sharded like
// the policy, the policy's layers gathered for the rollouts), against the arithmetic.
TEST(PlanSharded, GrpoReferenceAndRolloutGather) {
  auto in = shard_input(4);
  in.job = "rl";
  in.reference_model = true;
  in.activation_checkpointing = true;  // small update transients: the gathered policy is the larger phase
  const auto plan = prism::train::plan_memory(in);
  // The reference: the 524,544 parameters outside the layers gathered, 8,392,704 / 4 in layers.
  EXPECT_DOUBLE_EQ(item(plan, "reference model"), 524544.0 * 4 + 8392704.0 * 4 / 4);
  // Decoding gathers every layer (8,392,704 x 4 B); the update's activations, loss head and
  // gather buffers are not alive then, so only what exceeds them counts.
  const double update =
      item(plan, "activations") + item(plan, "loss head + backward") + item(plan, "communication buffers");
  EXPECT_DOUBLE_EQ(item(plan, "rollout: gathered policy"), std::max(0.0, 8392704.0 * 4 - update));
  EXPECT_GT(item(plan, "rollout: gathered policy"), 0.0);
}

}  // namespace

namespace {

// Issue 19: the GRPO terms of the plan against `prism-train rl` itself (rl::run_grpo in this
// process, 2 steps of configs/rl/tiny-cpu.yaml on the bundled tiny Llama, 1 rank) under the
// CountingAllocator: the peak of live CPU tensor bytes over the whole run (rollouts with the
// decode cache, reference and old-policy log-probs, the packed micro-batches, the update).
struct RlRun {
  prism::train::MemoryPlan plan;
  double peak = 0;
};

RlRun plan_and_measure_rl(const std::vector<std::string>& extra) {
  const std::string src = prism::test::source_dir();
  const std::string dir = prism::test::make_temp_dir("plan-rl");
  std::vector<std::string> sets = {"output_dir=" + prism::fs::join(dir, "out"),
                                   "model.path=" + prism::fs::join(src, "configs/tiny/llama-tiny"),
                                   "data.prompts=[" + prism::fs::join(src, "configs/rl/data/toy-sevens.jsonl") + "]",
                                   "train.steps=2",
                                   "train.log_every=1",
                                   "train.threads=2",
                                   "checkpoint.every=1000",
                                   "checkpoint.export_final=false"};
  sets.insert(sets.end(), extra.begin(), extra.end());
  const auto cfg =
      prism::config::load_config<prism::rl::RlConfig>(prism::fs::join(src, "configs/rl/tiny-cpu.yaml"), sets);
  auto in = prism::rl::plan_input(cfg, CausalLM::read_config(cfg.model.path), 1, "cpu");
  // The shortest and longest prompt as the engine sees them (rendered and tokenized; the set has no
  // domain weights, so one pass of draws holds every prompt).
  const auto tok = prism::io::Tokenizer::from_file(prism::fs::join(cfg.model.path, "tokenizer.json"));
  prism::rl::PromptSet prompts(cfg.data, *tok, 1 << 20);
  int64_t shortest = 1 << 20, longest = 0;
  for (const auto& p : prompts.take(prompts.size())) {
    shortest = std::min(shortest, static_cast<int64_t>(p.tokens.size()));
    longest = std::max(longest, static_cast<int64_t>(p.tokens.size()));
  }
  EXPECT_GT(shortest, 5);
  prism::train::set_rl_step(in, cfg.rollout.prompts_per_step, cfg.rollout.samples_per_prompt, cfg.train.mini_batches,
                            cfg.train.trainable, cfg.rollout.max_new_tokens, shortest, longest);
  RlRun r{prism::train::plan_memory(in), 0};
  {
    CountingScope scope;
    const int64_t base = scope.counter.current();
    scope.counter.reset_peak();
    prism::rl::run_grpo(cfg);
    r.peak = static_cast<double>(scope.counter.peak() - base);
  }
  if (!::testing::Test::HasFailure()) prism::fs::remove_all(dir);
  return r;
}

// Each run's total within 10 %, and the reference model's planned bytes (a frozen fp32 copy of
// the 106,816 parameters) within 10 % of what turning it on (kl.beta > 0) adds to the measured peak.
TEST(PlanRl, TinyCpuConfigPlannedVsMeasured) {
  const std::vector<std::pair<const char*, std::vector<std::string>>> cases = {
      {"as_configured", {}},
      {"reference_beta", {"kl.beta=0.05"}},
      {"two_updates_reference", {"kl.beta=0.05", "train.mini_batches=2"}}};
  std::map<std::string, RlRun> runs;
  for (const auto& [name, sets] : cases) {
    const auto r = plan_and_measure_rl(sets);
    std::printf("[plan] rl %-24s planned %8.3f MiB measured %8.3f MiB (%+.1f %%)\n", name, r.plan.total() / 1048576.0,
                r.peak / 1048576.0, 100.0 * (r.plan.total() - r.peak) / r.peak);
    EXPECT_NEAR(r.plan.total() / r.peak, 1.0, 0.10) << name << "\n" << prism::train::format_plan(r.plan, 0);
    runs[name] = r;
  }
  const double ref = item(runs["reference_beta"].plan, "reference model");
  EXPECT_DOUBLE_EQ(ref, 106816.0 * 4);
  const double added = runs["reference_beta"].peak - runs["as_configured"].peak;
  std::printf("[plan] rl reference model: planned %.0f B, measured increase %.0f B\n", ref, added);
  EXPECT_NEAR(added / ref, 1.0, 0.10);
}

}  // namespace
