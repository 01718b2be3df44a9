// `prism-train rl` end to end, as real processes on the bundled tiny Llama and the toy task of
// configs/rl/tiny-cpu.yaml (every prompt's answer is 7, scored by the math verifier's last-number
// fallback):
// - learning: the mean reward rises clearly over a short run;
// - on-policy: the first update's ratio is exactly 1 and, with the reference equal to the policy,
//   the KL is exactly 0 at step 1;
// - micro-batching: the same rollouts packed 1 row per sample or all in one row give the same
//   update (fp32, 1e-6);
// - 2 ranks == 1 rank (the same global prompts, each rank rolling out half);
// - kill -9 after a checkpoint, --resume auto: rewards, losses and weights identical bit for bit;
// - parameter sharding (FSDP, 2x2 HSDP) of the policy and the Polyak reference == 1 rank, its
//   checkpoints resumed on other layouts, and train.trainable subsets under sharding;
// - in-loop evaluation: the logged pass@k equals `prism-train eval` of the checkpoint of that step.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <map>
#include <sstream>
#include <tuple>

#include "distributed/spawn_util.h"
#include "prism/core/fs.h"
#include "prism/io/safetensors.h"
#include "util/test_util.h"

namespace {

namespace fs = prism::fs;
using prism::test::dist::free_port;
using prism::test::dist::spawn;
using prism::test::dist::wait_all;

std::string g_root;

struct Run {
  std::string name;
  std::vector<std::string> sets;
  int nproc = 1;
  std::string resume;
  std::vector<std::string> extra;
};

std::string out_dir(const std::string& name) { return fs::join(g_root, "runs/" + name); }

prism::test::dist::RunResult run(const Run& r, double deadline_s = 600) {
  std::vector<std::string> cmd;
  if (r.nproc > 1)
    cmd = {"/bin/bash", fs::join(prism::test::source_dir(), "tools/launch.sh"), "--nproc", std::to_string(r.nproc),
           "--master-port", std::to_string(free_port()), "--"};
  const auto src = prism::test::source_dir();
  for (const std::string& a : std::vector<std::string>{
           fs::join(prism::test::bin_dir(), "prism-train"), "rl", "--config", fs::join(src, "configs/rl/tiny-cpu.yaml"),
           "--set", "output_dir=" + out_dir(r.name), "--set", "model.path=" + fs::join(src, "configs/tiny/llama-tiny"),
           "--set", "data.prompts=[" + fs::join(src, "configs/rl/data/toy-sevens.jsonl") + "]", "--set",
           "checkpoint.export_final=true", "--set", "train.log_every=1", "--set", "train.threads=1"})
    cmd.push_back(a);
  for (const auto& s : r.sets) {
    cmd.push_back("--set");
    cmd.push_back(s);
  }
  if (!r.resume.empty()) {
    cmd.push_back("--resume");
    cmd.push_back(r.resume);
  }
  cmd.insert(cmd.end(), r.extra.begin(), r.extra.end());
  fs::create_directories(fs::join(g_root, "logs"));
  const std::string log = fs::join(g_root, "logs/" + r.name + (r.resume.empty() ? "" : ".resume") + ".log");
  auto pid = spawn(cmd, {"OMP_NUM_THREADS=1"}, log);
  return wait_all({pid}, {log}, deadline_s);
}

// step -> value of `key` in metrics.jsonl (one row per step; later rows of a step win).
std::map<int64_t, double> metric(const std::string& name, const std::string& key) {
  std::map<int64_t, double> m;
  std::istringstream is(fs::read_file(fs::join(out_dir(name), "metrics.jsonl")));
  for (std::string line; std::getline(is, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains(key) && !j[key].is_null()) m[j["step"].get<int64_t>()] = j[key].get<double>();
  }
  return m;
}

using prism::test::checkpoint_weights;
using prism::test::expect_same_weights;

void expect_ok(const prism::test::dist::RunResult& r) {
  ASSERT_FALSE(r.timed_out) << r.describe();
  for (const auto& p : r.procs) ASSERT_EQ(p.code, 0) << r.describe();
}

class GrpoE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { g_root = prism::test::make_temp_dir("prism-grpo-e2e"); }
  static void TearDownTestSuite() { fs::remove_all(g_root); }
};

// The toy task: reward 1 when the completion's last number is 7. The untrained byte-level model
// emits a 7 as the last number of a 6-byte completion about 2% of the time (the reward of the
// first steps); 60 steps of 4 prompts x 8 samples at lr 1e-2 must bring the mean reward of the
// last 10 steps to at least 0.8, from at most 0.2 over the first 3 (a run on 2026-12-07: 0.03,
// 0.0, 0.06 -> 1.0 from step 11 on).
TEST_F(GrpoE2E, MeanRewardRisesOnTheToyTask) {
  expect_ok(run({"learn", {}}));
  auto r = metric("learn", "reward/mean");
  ASSERT_EQ(r.size(), 60u);
  double first = 0, last = 0;
  for (int64_t s = 1; s <= 3; ++s) first += r.at(s) / 3;
  for (int64_t s = 51; s <= 60; ++s) last += r.at(s) / 10;
  std::cerr << "mean reward: steps 1-3 " << first << ", steps 51-60 " << last << "\n";
  EXPECT_LE(first, 0.2);
  EXPECT_GE(last, 0.8);
  EXPECT_TRUE(fs::exists(fs::join(out_dir("learn"), "final/config.json")));
}

TEST_F(GrpoE2E, FirstUpdateIsOnPolicyAndKlZeroAgainstAnEqualReference) {
  expect_ok(run({"onpolicy", {"train.steps=2", "kl.beta=0.05", "train.log_every=1"}}));
  auto ratio = metric("onpolicy", "ratio/mean");
  auto rmax = metric("onpolicy", "ratio/max");
  auto kl = metric("onpolicy", "kl");
  ASSERT_TRUE(ratio.count(1) && kl.count(1) && rmax.count(1));
  EXPECT_EQ(ratio.at(1), 1.0);
  EXPECT_EQ(rmax.at(1), 1.0);
  EXPECT_EQ(kl.at(1), 0.0);
  EXPECT_GT(kl.at(2), 0.0);  // after one update the policy has moved away from the reference
}

// The comparisons of gradients go through AdamW with eps = 1: its first steps then scale each
// gradient instead of taking its sign, which for near-zero gradients would turn summation-order
// noise (1e-7 relative) into full lr-sized differences and hide what is being compared.
const std::vector<std::string> kSgdLikeAdam = {"optimizer.eps=1.0", "optimizer.lr=1e-1"};

std::vector<std::string> with(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

void expect_close_metric(const std::string& a, const std::string& b, const std::string& key, double rel) {
  auto ma = metric(a, key), mb = metric(b, key);
  ASSERT_EQ(ma.size(), mb.size()) << key;
  for (const auto& [s, v] : ma) EXPECT_NEAR(v, mb.at(s), rel * std::max(1.0, std::abs(v))) << key << " step " << s;
}

TEST_F(GrpoE2E, MicroBatchSplitDoesNotChangeTheUpdate) {
  // 32 rollouts of at most ~30 tokens: 40 tokens per row puts one rollout in most rows; 4096 all in one.
  expect_ok(run({"micro_small", with({"train.steps=2", "train.micro_batch_tokens=40"}, kSgdLikeAdam)}));
  expect_ok(run({"micro_big", with({"train.steps=2", "train.micro_batch_tokens=4096"}, kSgdLikeAdam)}));
  EXPECT_EQ(metric("micro_small", "reward/mean"), metric("micro_big", "reward/mean"));
  expect_close_metric("micro_small", "micro_big", "loss", 1e-6);
  expect_close_metric("micro_small", "micro_big", "grad_norm", 1e-6);
  expect_same_weights(fs::join(out_dir("micro_big"), "final"), fs::join(out_dir("micro_small"), "final"), 1e-6);
}

TEST_F(GrpoE2E, TwoRanksEqualOneRank) {
  expect_ok(run({"one_rank", with({"train.steps=3"}, kSgdLikeAdam)}));
  expect_ok(run({"two_ranks", with({"train.steps=3", "dist.backend=tcp"}, kSgdLikeAdam), 2}));
  EXPECT_EQ(metric("one_rank", "reward/mean"), metric("two_ranks", "reward/mean"));
  expect_close_metric("one_rank", "two_ranks", "loss", 1e-6);
  expect_close_metric("one_rank", "two_ranks", "grad_norm", 1e-6);
  expect_same_weights(fs::join(out_dir("one_rank"), "final"), fs::join(out_dir("two_ranks"), "final"), 1e-6);
}

TEST_F(GrpoE2E, KillAndResumeIsBitExact) {
  expect_ok(run({"straight", {"train.steps=6", "checkpoint.every=3"}}));
  auto killed = run({"resumed", {"train.steps=6", "checkpoint.every=3"}, 1, "", {"--debug-sigkill-after-step", "3"}});
  ASSERT_EQ(killed.procs[0].code, 128 + SIGKILL) << killed.describe();
  expect_ok(run({"resumed", {"train.steps=6", "checkpoint.every=3"}, 1, "auto"}));
  EXPECT_EQ(metric("straight", "reward/mean"), metric("resumed", "reward/mean"));
  EXPECT_EQ(metric("straight", "loss"), metric("resumed", "loss"));
  expect_same_weights(fs::join(out_dir("straight"), "final"), fs::join(out_dir("resumed"), "final"), 0);
}

}  // namespace

namespace {

// Dynamic sampling refills groups without signal (the untrained model's groups mostly score all
// 0, so early steps need more than one round, never more than max_rounds), and the Polyak
// reference (alpha 0.5 every step) is saved in the checkpoint, strictly between the starting
// weights and the policy's.
TEST_F(GrpoE2E, DynamicSamplingRefillsAndThePolyakReferenceIsCheckpointed) {
  expect_ok(run({"polyak", {"train.steps=4", "checkpoint.every=4", "dynamic_sampling.enabled=true",
                            "dynamic_sampling.max_rounds=3", "kl.beta=0.05", "kl.ref_update_every=1", "kl.ref_alpha=0.5"}}));
  auto rounds = metric("polyak", "rounds");
  ASSERT_EQ(rounds.size(), 4u);
  double most = 0;
  for (const auto& [s, r] : rounds) {
    EXPECT_GE(r, 1);
    EXPECT_LE(r, 3);
    most = std::max(most, r);
  }
  EXPECT_GT(most, 1) << "the first steps' groups are mostly all-zero: a refill round was expected";
  const auto ckpt = fs::join(out_dir("polyak"), "checkpoints/step-00000004");
  ASSERT_TRUE(fs::exists(fs::join(ckpt, "ref/config.json")));
  auto start = checkpoint_weights(fs::join(prism::test::source_dir(), "configs/tiny/llama-tiny"));
  auto ref = checkpoint_weights(fs::join(ckpt, "ref")), policy = checkpoint_weights(fs::join(ckpt, "model"));
  const std::string n = "model.layers.0.self_attn.q_proj.weight";
  auto s = start.at(n).to(at::kFloat), r = ref.at(n), p = policy.at(n);
  EXPECT_GT((r - s).abs().max().item<double>(), 0.0);
  EXPECT_GT((r - p).abs().max().item<double>(), 0.0);
  // Polyak with alpha 0.5: every element of ref lies between the start and the policy's path; at
  // least its distance to the start is below the policy's.
  EXPECT_LT((r - s).norm().item<double>(), (p - s).norm().item<double>());
}

// The in-loop suite evaluation (eval.every / eval.suite / eval.limit): rows at every `every` steps
// and the last, each equal to a standalone `prism-train eval` of the checkpoint written at that
// step (the same samples, the same scores).
TEST_F(GrpoE2E, InLoopEvalEqualsEvalOfTheCheckpoint) {
  const auto src = prism::test::source_dir();
  const auto suite = fs::join(g_root, "suite.yaml");
  fs::write_file_atomic(suite, "benchmarks:\n  - {name: sevens, path: " + fs::join(src, "configs/rl/data/toy-sevens.jsonl") +
                                   ", n: 4, temperature: 1.0, max_new_tokens: 6, ks: [1, 4]}\n"
                                   "rewards:\n  math: {last_number_fallback: true, workers: 1}\n"
                                   "  domains:\n    - {domain: math, verifier: math}\nslots: 16\n");
  expect_ok(run({"inloop", {"train.steps=5", "checkpoint.every=2", "checkpoint.keep_last=0", "eval.every=2",
                            "eval.suite=" + suite, "eval.limit=6"}}));
  const auto pass1 = metric("inloop", "eval/sevens/pass@1"), macro = metric("inloop", "eval/macro_avg");
  std::vector<int64_t> steps;
  for (const auto& [st, v] : pass1) steps.push_back(st);
  EXPECT_EQ(steps, (std::vector<int64_t>{2, 4, 5}));
  EXPECT_GT(pass1.at(2) + pass1.at(4) + pass1.at(5), 0.0) << "all scores 0: the equalities below would be weak";
  for (int64_t st : {2, 4, 5}) {
    char ck[40];
    std::snprintf(ck, sizeof ck, "checkpoints/step-%08lld/model", static_cast<long long>(st));
    const auto ev = fs::join(g_root, "inloop_eval_" + std::to_string(st));
    const auto log = ev + ".log";
    auto pid = spawn({fs::join(prism::test::bin_dir(), "prism-train"), "eval", fs::join(out_dir("inloop"), ck), "--suite",
                      suite, "--set", "benchmarks[0].limit=6", "--threads", "1", "-o", ev},
                     {"OMP_NUM_THREADS=1"}, log);
    expect_ok(wait_all({pid}, {log}, 300));
    const auto in_loop = fs::join(out_dir("inloop"), "eval/step-" + std::to_string(st));
    EXPECT_EQ(fs::read_file(fs::join(in_loop, "samples.jsonl")), fs::read_file(fs::join(ev, "samples.jsonl"))) << st;
    auto rep = nlohmann::json::parse(fs::read_file(fs::join(ev, "report.json")));
    EXPECT_EQ(rep["benchmarks"][0]["problems"].get<int64_t>(), 6);
    EXPECT_EQ(pass1.at(st), rep["benchmarks"][0]["pass_at"]["1"].get<double>()) << st;
    EXPECT_EQ(macro.at(st), rep["macro_avg"].get<double>()) << st;
  }
}

}  // namespace

namespace {

// #19: the policy and the (Polyak-updated, k3) reference sharded over 2 ranks and as 2x2 HSDP
// against one unsharded rank: the same samples (rewards equal exactly), losses, gradient norms,
// KL and the final policy and reference weights within 1e-6 (fp32; only the summation order of
// the gradient reductions differs). 40-token rows put one or two rollouts in a row, so the ranks
// pack different numbers of micro-batches and the shard group pads (counted in the metrics). Stop
// strings end samples early at random lengths and 2 decode slots serialise a rank's 16 samples,
// so the ranks run different numbers of decode forwards (the rollout phase must not gather per
// layer). The entropy bonus moves the policy whatever the (mostly zero) rewards, so the KL and the
// Polyak reference are exercised from step 2 on.
const std::vector<std::string> kShardedRl = {"train.steps=3",
                                             "kl.beta=0.05",
                                             "kl.estimator=k3",
                                             "kl.ref_update_every=1",
                                             "kl.ref_alpha=0.5",
                                             "loss.entropy_coef=0.01",
                                             "train.micro_batch_tokens=40",
                                             "rollout.slots=2",
                                             "rollout.stop=[a,e,i,o,u,A,E,I,O,U,x,X]",
                                             "checkpoint.every=2",
                                             "dist.backend=tcp",
                                             "optimizer.eps=1.0",
                                             "optimizer.lr=1e-1"};

void expect_same_run(const std::string& a, const std::string& b, bool same_ref = true) {
  SCOPED_TRACE(a + " vs " + b);
  EXPECT_EQ(metric(a, "reward/mean"), metric(b, "reward/mean"));
  for (const char* k : {"loss", "grad_norm", "kl", "ratio/mean", "entropy"}) expect_close_metric(a, b, k, 1e-6);
  expect_same_weights(fs::join(out_dir(a), "final"), fs::join(out_dir(b), "final"), 1e-6);
  if (same_ref)
    expect_same_weights(fs::join(out_dir(a), "checkpoints/step-00000003/ref"),
                        fs::join(out_dir(b), "checkpoints/step-00000003/ref"), 1e-6);
}

double total(const std::map<int64_t, double>& m) {
  double s = 0;
  for (const auto& [k, v] : m) s += v;
  return s;
}

// A hang (a rank left out of a collective) ends the run here rather than at the suite's timeout.
constexpr double kShardedDeadline = 240;

TEST_F(GrpoE2E, ShardedPolicyAndReferenceEqualOneRank) {
  // The in-loop suite evaluation too: rank 0 generates from the gathered policy.
  const auto suite = fs::join(g_root, "fsdp_suite.yaml");
  fs::write_file_atomic(suite, "benchmarks:\n  - {name: sevens, path: " +
                                   fs::join(prism::test::source_dir(), "configs/rl/data/toy-sevens.jsonl") +
                                   ", n: 4, temperature: 1.0, max_new_tokens: 6, ks: [1, 4]}\n"
                                   "rewards:\n  math: {last_number_fallback: true, workers: 1}\n"
                                   "  domains:\n    - {domain: math, verifier: math}\nslots: 16\n");
  const std::vector<std::string> ev = {"eval.every=2", "eval.suite=" + suite, "eval.limit=4"};
  expect_ok(run({"fsdp_one", with(ev, kShardedRl)}, kShardedDeadline));
  expect_ok(run({"fsdp_s2", with(with({"dist.shard_size=2"}, ev), kShardedRl), 2}, kShardedDeadline));
  expect_ok(run({"fsdp_h22", with({"dist.shard_size=2", "dist.replicate_size=2", "model.activation_checkpointing=true"},
                                  kShardedRl),
                 4},
                kShardedDeadline));
  for (const char* st : {"eval/step-2/samples.jsonl", "eval/step-3/samples.jsonl"})
    EXPECT_EQ(fs::read_file(fs::join(out_dir("fsdp_one"), st)), fs::read_file(fs::join(out_dir("fsdp_s2"), st))) << st;
  EXPECT_EQ(metric("fsdp_one", "eval/macro_avg"), metric("fsdp_s2", "eval/macro_avg"));
  EXPECT_EQ(metric("fsdp_s2", "eval/macro_avg").size(), 2u);
  EXPECT_GT(metric("fsdp_one", "kl").at(3), 0.0) << "the reference never differed from the policy: a weak comparison";
  EXPECT_LT(metric("fsdp_one", "truncation_rate").at(1), 1.0) << "no sample stopped early: decode counts are equal";
  // The reference keeps the embedding and lm_head (2 x 256 x 64) and the final norm (64) whole and
  // half of each layer's 36,992 parameters: (32,832 + 2 x 18,496) x 4 B of 106,816 x 4 B.
  EXPECT_NE(fs::read_file(fs::join(g_root, "logs/fsdp_s2.log"))
                .find("reference sharded over 2 ranks: 279296 bytes per rank between uses (whole: 427264)"),
            std::string::npos);
  expect_same_run("fsdp_one", "fsdp_s2");
  expect_same_run("fsdp_one", "fsdp_h22");
  EXPECT_GT(total(metric("fsdp_s2", "padding_micro_batches")) + total(metric("fsdp_h22", "padding_micro_batches")), 0)
      << "every rank packed as many micro-batches: the padding path went untested";
  // The checkpoint is layout-independent: full HF weights for the policy and the reference.
  const auto ck = fs::join(out_dir("fsdp_s2"), "checkpoints/step-00000002");
  EXPECT_TRUE(fs::exists(fs::join(ck, "optimizer-rank00001-of-00002.safetensors")));
  EXPECT_TRUE(fs::exists(fs::join(ck, "ref/config.json")));

  // Resume the sharded run's step-2 checkpoint on 1 rank and as 2x2 HSDP: step 3 and the final
  // weights continue as the sharded run did.
  for (const auto& [name, sets, nproc] :
       std::vector<std::tuple<std::string, std::vector<std::string>, int>>{
           {"fsdp_r1", kShardedRl, 1},
           {"fsdp_rh22", with({"dist.shard_size=2", "dist.replicate_size=2"}, kShardedRl), 4}}) {
    expect_ok(run({name, sets, nproc, ck}, kShardedDeadline));
    auto r = metric(name, "reward/mean"), l = metric(name, "loss"), k = metric(name, "kl");
    ASSERT_EQ(l.size(), 1u) << name;
    EXPECT_EQ(r.at(3), metric("fsdp_s2", "reward/mean").at(3)) << name;
    EXPECT_NEAR(l.at(3), metric("fsdp_s2", "loss").at(3), 1e-6 * std::max(1.0, std::abs(l.at(3)))) << name;
    EXPECT_NEAR(k.at(3), metric("fsdp_s2", "kl").at(3), 1e-6) << name;
    expect_same_weights(fs::join(out_dir("fsdp_s2"), "final"), fs::join(out_dir(name), "final"), 1e-6);
    expect_same_weights(fs::join(out_dir("fsdp_s2"), "checkpoints/step-00000003/ref"),
                        fs::join(out_dir(name), "checkpoints/step-00000003/ref"), 1e-6);
  }
}

// Two mini-batches per step (the later ones off-policy, with the pre-update log-probs taken in
// extra forwards) and the KL in the reward (more forwards before the advantages): each rank splits
// its own rollouts into mini-batches, so the oracle is the 2-rank ZeRO-1 run.
TEST_F(GrpoE2E, ShardedOffPolicyMiniBatchesEqualZero1) {
  const auto sets = with({"train.mini_batches=2", "kl.where=reward"}, kShardedRl);
  expect_ok(run({"mini_z2", sets, 2}, kShardedDeadline));
  expect_ok(run({"mini_s2", with({"dist.shard_size=2"}, sets), 2}, kShardedDeadline));
  expect_same_run("mini_z2", "mini_s2");
  EXPECT_GT(metric("mini_z2", "ratio/max").at(1), 1.0) << "the second update was on-policy: a weak comparison";
}

// train.trainable under parameter sharding: the frozen parameters stay resident (unsharded) and
// bit-identical to the start, the trained ones equal the unsharded run's.
TEST_F(GrpoE2E, ShardedTrainableSubsetEqualsOneRank) {
  const auto sets = with({"train.trainable=[attention]"}, kShardedRl);
  expect_ok(run({"attn_one", sets}, kShardedDeadline));
  expect_ok(run({"attn_s2", with({"dist.shard_size=2"}, sets), 2}, kShardedDeadline));
  expect_same_run("attn_one", "attn_s2");
  auto start = checkpoint_weights(fs::join(prism::test::source_dir(), "configs/tiny/llama-tiny"));
  auto end = checkpoint_weights(fs::join(out_dir("attn_s2"), "final"));
  int frozen = 0, moved = 0;
  for (const auto& [n, t] : start) {
    const bool attn = n.find("self_attn.") != std::string::npos;
    const auto& e = end.at(n);
    if (attn) moved += !at::equal(t.to(at::kFloat), e.to(at::kFloat));
    else {
      ++frozen;
      EXPECT_TRUE(at::equal(t.to(at::kFloat), e.to(at::kFloat))) << n;
    }
  }
  EXPECT_GT(frozen, 0);
  EXPECT_GT(moved, 0);
}

}  // namespace
