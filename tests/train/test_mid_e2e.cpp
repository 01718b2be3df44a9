// `prism-train mid` end to end, as real processes on the bundled tiny Llama and bundled text:
// - the loss falls and held-out losses are reported;
// - gradient accumulation == a larger micro-batch, and 2 ranks (ZeRO-1, prism's TCP transport)
//   == 1 rank with 2x accumulation (fp32, within 1e-6);
// - kill -9 after a checkpoint, then --resume auto: the losses and final weights are identical,
//   bit for bit, to an uninterrupted run; the same after resuming with a different world size
//   (within 1e-6);
// - kill -9 while a checkpoint is being written leaves the previous one loadable;
// - SIGTERM writes a checkpoint and exits with status 3; non-finite steps are skipped, too many
//   stop the run with a checkpoint.
// - parameter sharding (#19): 2 and 4 ranks sharded and 2x2 HSDP == 1 rank (within 1e-6, with
//   accumulation and activation checkpointing), a 4-way sharded checkpoint resumes on 2 ranks and
//   on 1; sharded runs skip non-finite steps, train in bf16 and evaluate without hanging.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <signal.h>
#include <fcntl.h>
#include <spawn.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <sstream>
#include <thread>

#include "prism/core/fs.h"
#include "prism/data/tokenize.h"
#include "prism/io/safetensors.h"
#include "prism/train/checkpoint_dir.h"
#include "util/test_util.h"

extern char** environ;

namespace {

namespace fs = prism::fs;

std::string g_root;  // per-suite temp dir with shards and the mixture YAML

struct Proc {
  pid_t pid = -1;
  std::string log;
};

Proc spawn(const std::vector<std::string>& args, const std::map<std::string, std::string>& env_extra,
           const std::string& log) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    auto k = kv.substr(0, kv.find('='));
    if (env_extra.count(k) || k == "RANK" || k == "WORLD_SIZE" || k == "LOCAL_RANK" || k == "LOCAL_WORLD_SIZE") continue;
    env.push_back(kv);
  }
  for (const auto& [k, v] : env_extra) env.push_back(k + "=" + v);
  std::vector<char*> argv, envp;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  Proc p;
  p.log = log;
  int rc = posix_spawn(&p.pid, argv[0], &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  EXPECT_EQ(rc, 0) << "cannot spawn " << args[0];
  return p;
}

// Exit status (128 + signal when killed); fails the test after `timeout_s`.
int wait_for(Proc& p, double timeout_s = 300) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  int status = 0;
  while (true) {
    pid_t r = waitpid(p.pid, &status, WNOHANG);
    if (r == p.pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      kill(p.pid, SIGKILL);
      waitpid(p.pid, &status, 0);
      ADD_FAILURE() << "process timed out; log " << p.log;
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string read_log(const Proc& p) { return fs::exists(p.log) ? fs::read_file(p.log) : ""; }

// A port nobody listens on now: ctest runs tests in parallel, so the default 29500 collides.
int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0) close(fd);
    return 29500;
  }
  close(fd);
  return ntohs(a.sin_port);
}

struct RunSpec {
  std::string name;
  std::vector<std::string> sets;
  std::vector<std::string> args;  // more prism-train arguments (the hidden --debug-* fault hooks)
  int nproc = 1;
  std::string resume;
};

std::string out_dir(const std::string& name) { return fs::join(g_root, "runs/" + name); }

Proc start(const RunSpec& r) {
  std::vector<std::string> cmd;
  if (r.nproc > 1) {
    cmd = {"/bin/bash", fs::join(prism::test::source_dir(), "tools/launch.sh"), "--nproc", std::to_string(r.nproc),
           "--master-port", std::to_string(free_port()), "--"};
  }
  cmd.push_back(fs::join(prism::test::bin_dir(), "prism-train"));
  for (const auto& a : {std::string("mid"), std::string("--config"), fs::join(g_root, "mid.yaml"), std::string("--set"),
                        "output_dir=" + out_dir(r.name)})
    cmd.push_back(a);
  for (const auto& s : r.sets) {
    cmd.push_back("--set");
    cmd.push_back(s);
  }
  if (!r.resume.empty()) {
    cmd.push_back("--resume");
    cmd.push_back(r.resume);
  }
  cmd.insert(cmd.end(), r.args.begin(), r.args.end());
  fs::create_directories(fs::join(g_root, "logs"));
  return spawn(cmd, {}, fs::join(g_root, "logs/" + r.name + ".log"));
}

int run(const RunSpec& r) {
  auto p = start(r);
  int rc = wait_for(p);
  if (rc != 0) std::cerr << "---- " << r.name << " log ----\n" << read_log(p) << "\n";
  return rc;
}

// step -> loss (the last line of each step wins: a resumed run re-logs the steps after its checkpoint)
std::map<int64_t, double> losses(const std::string& name, const std::string& key = "loss") {
  std::map<int64_t, double> m;
  std::istringstream is(fs::read_file(fs::join(out_dir(name), "metrics.jsonl")));
  std::string line;
  while (std::getline(is, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains(key) && !j[key].is_null()) m[j["step"].get<int64_t>()] = j[key].get<double>();
  }
  return m;
}

using prism::test::checkpoint_weights;
using prism::test::expect_same_weights;

class MidE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    g_root = prism::test::make_temp_dir("prism-mid-e2e");
    const auto src = prism::test::source_dir();
    // Train on the bundled text minus its last 10 records per source, held out for evaluation.
    for (const std::string s : {"general", "math", "code"}) {
      std::istringstream is(fs::read_file(fs::join(src, "configs/data/mini/" + s + ".jsonl")));
      std::vector<std::string> lines;
      for (std::string l; std::getline(is, l);) lines.push_back(l);
      std::string train, held;
      for (size_t i = 0; i < lines.size(); ++i) (i + 10 < lines.size() ? train : held) += lines[i] + "\n";
      fs::create_directories(fs::join(g_root, "text"));
      fs::write_file_atomic(fs::join(g_root, "text/" + s + ".jsonl"), train);
      fs::write_file_atomic(fs::join(g_root, "text/" + s + ".held.jsonl"), held);
      for (const std::string part : {"", ".held"}) {
        prism::data::TokenizeOptions o;
        o.tokenizer = fs::join(src, "configs/tiny/llama-tiny");
        o.inputs = {fs::join(g_root, "text/" + s + part + ".jsonl")};
        o.output_dir = fs::join(g_root, "shards/" + s + part);
        o.num_threads = 1;
        prism::data::tokenize_corpus(o, {});
      }
    }
    std::string mix = "sources:\n";
    for (const std::string s : {"general", "math", "code"})
      mix += "  - {name: " + s + ", path: " + g_root + "/shards/" + s + "/*.tok, weight: 1}\n";
    mix += "seq_len: 128\nbatch_size: 4\nseed: 0\npacking: concat\neos_id: 2\n";
    fs::write_file_atomic(fs::join(g_root, "mix.yaml"), mix);
    // fp32 and one thread per rank: runs are then deterministic, so equalities can be exact.
    fs::write_file_atomic(fs::join(g_root, "mid.yaml"),
                          "output_dir: unused\n"
                          "model: {path: " + fs::join(src, "configs/tiny/llama-tiny") + ", dtype: fp32, device: cpu}\n"
                          "data: {mixture: " + g_root + "/mix.yaml, micro_batch_size: 2}\n"
                          "train: {steps: 10, grad_accum: 2, log_every: 1, threads: 1}\n"
                          "optimizer: {lr: 3.0e-3, eps: 1.0e-8, weight_decay: 0.1, max_grad_norm: 1.0}\n"
                          "schedule: {kind: cosine, warmup_steps: 2, min_lr_ratio: 0.1}\n"
                          "checkpoint: {every: 5, keep_last: 0}\n"
                          "dist: {timeout_s: 60}\n");
  }
  static void TearDownTestSuite() {
    if (!::testing::Test::HasFailure() && std::getenv("PRISM_KEEP_TEST_DIRS") == nullptr) fs::remove_all(g_root);
  }
};

TEST_F(MidE2E, LossFallsAndHeldOutLossIsReported) {
  RunSpec r{"falls", {"train.steps=40", "eval.every=20", "eval.batches=2", "checkpoint.every=40",
                      "eval.sources=[{name: math, path: " + g_root + "/shards/math.held/*.tok}]"}};
  ASSERT_EQ(run(r), 0);
  auto l = losses("falls");
  ASSERT_EQ(l.size(), 40u);
  double first = 0, last = 0;
  for (int s = 1; s <= 5; ++s) first += l[s] / 5;
  for (int s = 36; s <= 40; ++s) last += l[s] / 5;
  EXPECT_GT(first, 5.0);          // ~ln(256) = 5.55 for the random byte-level model
  EXPECT_LT(last, first - 1.0) << "first " << first << " last " << last;
  auto ev = losses("falls", "eval/math/loss");
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_LT(ev[40], ev[20]);
  EXPECT_TRUE(fs::is_directory(fs::join(out_dir("falls"), "tb")));
  EXPECT_TRUE(fs::exists(fs::join(out_dir("falls"), "final/config.json")));
  EXPECT_TRUE(fs::exists(fs::join(out_dir("falls"), "final/tokenizer.json")));
  // The exported model is the trained one (== the last checkpoint's weights).
  expect_same_weights(fs::join(out_dir("falls"), "final"), fs::join(out_dir("falls"), "checkpoints/step-00000040/model"), 0);
}

TEST_F(MidE2E, AccumulationEqualsLargerBatchAndTwoRanksEqualOne) {
  ASSERT_EQ(run({"accum2", {"train.steps=6"}}), 0);
  ASSERT_EQ(run({"batch4", {"train.steps=6", "data.micro_batch_size=4", "train.grad_accum=1"}}), 0);
  ASSERT_EQ(run({"ranks2", {"train.steps=6", "train.grad_accum=1"}, {}, 2}), 0);
  ASSERT_EQ(run({"ranks2nozero", {"train.steps=6", "train.grad_accum=1", "optimizer.zero1=false"}, {}, 2}), 0);
  auto a = losses("accum2");
  ASSERT_EQ(a.size(), 6u);
  for (const std::string other : {"batch4", "ranks2", "ranks2nozero"}) {
    SCOPED_TRACE(other);
    auto b = losses(other);
    ASSERT_EQ(b.size(), 6u);
    for (const auto& [s, v] : a) EXPECT_NEAR(b[s], v, 1e-6 * std::abs(v)) << "step " << s;
    expect_same_weights(fs::join(out_dir("accum2"), "final"), fs::join(out_dir(other), "final"), 1e-6);
  }
  // ZeRO-1 wrote one optimizer shard per rank.
  const auto ck = fs::join(out_dir("ranks2"), "checkpoints/step-00000006");
  EXPECT_TRUE(fs::exists(fs::join(ck, "optimizer-rank00000-of-00002.safetensors")));
  EXPECT_TRUE(fs::exists(fs::join(ck, "optimizer-rank00001-of-00002.safetensors")));
}

TEST_F(MidE2E, Kill9ThenResumeIsBitExact) {
  ASSERT_EQ(run({"straight20", {"train.steps=20", "checkpoint.every=10"}}), 0);
  RunSpec killed{"killed20", {"train.steps=20", "checkpoint.every=10"}, {"--debug-sigkill-after-step", "12"}};
  {
    auto p = start(killed);
    EXPECT_EQ(wait_for(p), 128 + SIGKILL);
  }
  EXPECT_EQ(prism::train::CheckpointDir::latest_complete(out_dir("killed20")).value_or(""),
            fs::join(out_dir("killed20"), "checkpoints/step-00000010"));
  killed.args.clear();
  killed.resume = "auto";
  ASSERT_EQ(run(killed), 0);
  auto a = losses("straight20"), b = losses("killed20");
  ASSERT_EQ(b.size(), 20u);
  for (const auto& [s, v] : a) EXPECT_EQ(b[s], v) << "step " << s;  // bit for bit
  expect_same_weights(fs::join(out_dir("straight20"), "final"), fs::join(out_dir("killed20"), "final"), 0);
}

TEST_F(MidE2E, ResumeWithAnotherWorldSize) {
  // 2 ranks (ZeRO-1: optimizer state in two shards) for 5 steps, then 1 rank with 2x accumulation.
  ASSERT_EQ(run({"ws_straight", {"train.steps=10"}}), 0);
  RunSpec two{"ws_mixed", {"train.steps=10", "train.grad_accum=1"}, {"--debug-sigkill-after-step", "5"}, 2};
  EXPECT_NE(run(two), 0);
  const auto ck5 = fs::join(out_dir("ws_mixed"), "checkpoints/step-00000005");
  ASSERT_EQ(prism::train::CheckpointDir::latest_complete(out_dir("ws_mixed")).value_or(""), ck5);
  ASSERT_TRUE(fs::exists(fs::join(ck5, "optimizer-rank00001-of-00002.safetensors")));
  RunSpec one{"ws_mixed", {"train.steps=10"}, {}, 1, "auto"};
  ASSERT_EQ(run(one), 0);
  auto a = losses("ws_straight"), b = losses("ws_mixed");
  for (const auto& [s, v] : a) EXPECT_NEAR(b[s], v, 1e-6 * std::abs(v)) << "step " << s;
  expect_same_weights(fs::join(out_dir("ws_straight"), "final"), fs::join(out_dir("ws_mixed"), "final"), 1e-6);
}

// #19 parameter sharding (ZeRO-3 / FSDP, HSDP) == one unsharded rank: the same global batch of 4
// rows split over ranks and micro-batches, with accumulation and activation checkpointing.
TEST_F(MidE2E, ShardedParametersEqualOneRank) {
  const std::vector<std::string> common{"train.steps=6", "data.micro_batch_size=1"};
  auto with = [&](std::vector<std::string> extra) {
    auto v = common;
    v.insert(v.end(), extra.begin(), extra.end());
    return v;
  };
  ASSERT_EQ(run({"fsdp_base", with({"train.grad_accum=4"})}), 0);
  ASSERT_EQ(run({"fsdp_s2", with({"train.grad_accum=2", "dist.shard_size=2", "model.activation_checkpointing=true"}),
                 {}, 2}),
            0);
  ASSERT_EQ(run({"fsdp_s4", with({"train.grad_accum=1", "dist.shard_size=4"}), {}, 4}), 0);
  ASSERT_EQ(run({"fsdp_h22", with({"train.grad_accum=1", "dist.shard_size=2", "dist.replicate_size=2",
                                    "model.activation_checkpointing=true"}),
                 {}, 4}),
            0);
  auto a = losses("fsdp_base");
  ASSERT_EQ(a.size(), 6u);
  for (const std::string other : {"fsdp_s2", "fsdp_s4", "fsdp_h22"}) {
    SCOPED_TRACE(other);
    auto b = losses(other);
    ASSERT_EQ(b.size(), 6u);
    for (const auto& [s, v] : a) EXPECT_NEAR(b[s], v, 1e-6 * std::abs(v)) << "step " << s;
    expect_same_weights(fs::join(out_dir("fsdp_base"), "final"), fs::join(out_dir(other), "final"), 1e-6);
  }
  // Optimizer state is sharded over the shard group only; HSDP replicas do not write copies.
  const auto ck = fs::join(out_dir("fsdp_h22"), "checkpoints/step-00000006");
  EXPECT_TRUE(fs::exists(fs::join(ck, "optimizer-rank00001-of-00002.safetensors")));
  EXPECT_FALSE(fs::exists(fs::join(ck, "optimizer-rank00002-of-00004.safetensors")));
  EXPECT_TRUE(fs::exists(fs::join(out_dir("fsdp_s4"), "checkpoints/step-00000006/optimizer-rank00003-of-00004.safetensors")));

  // Resume the 4-way sharded run's step-5 checkpoint on 2 sharded ranks and on 1 rank.
  const auto ck5 = fs::join(out_dir("fsdp_s4"), "checkpoints/step-00000005");
  ASSERT_TRUE(fs::exists(fs::join(ck5, "COMPLETE")));
  ASSERT_EQ(run({"fsdp_r2", with({"train.grad_accum=2", "dist.shard_size=2"}), {}, 2, ck5}), 0);
  ASSERT_EQ(run({"fsdp_r1", with({"train.grad_accum=4"}), {}, 1, ck5}), 0);
  for (const std::string other : {"fsdp_r2", "fsdp_r1"}) {
    SCOPED_TRACE(other);
    auto b = losses(other);
    ASSERT_EQ(b.count(6), 1u);
    EXPECT_NEAR(b[6], a[6], 1e-6 * std::abs(a[6]));
    expect_same_weights(fs::join(out_dir("fsdp_base"), "final"), fs::join(out_dir(other), "final"), 1e-6);
  }
}

// Sharded: the non-finite guard skips steps without touching weights or state (the gradient
// norm is formed from the shards), bf16 compute with fp32 master pieces tracks the unsharded bf16
// run, and evaluation (ranks with fewer eval batches) does not hang the shard group's gathers.
TEST_F(MidE2E, ShardedNonFiniteGuardBf16AndEval) {
  const std::string ev = "eval.sources=[{name: math, path: " + g_root + "/shards/math.held/*.tok}]";
  ASSERT_EQ(run({"fsdp_nan", {"train.steps=6", "checkpoint.every=2", "train.grad_accum=1", "dist.shard_size=2",
                              "eval.every=3", "eval.batches=3", ev},
                 {"--debug-nonfinite-steps", "3,4"}, 2}),
            0);
  auto sk = losses("fsdp_nan", "skipped");
  EXPECT_EQ(sk[2], 0);
  EXPECT_EQ(sk[3], 1);
  EXPECT_EQ(sk[4], 1);
  EXPECT_EQ(sk[5], 0);
  const auto ck = fs::join(out_dir("fsdp_nan"), "checkpoints");
  expect_same_weights(fs::join(ck, "step-00000002/model"), fs::join(ck, "step-00000004/model"), 0);
  ASSERT_EQ(run({"fsdp_nan_ref", {"train.steps=6", "checkpoint.every=2", "eval.every=3", "eval.batches=3", ev},
                 {"--debug-nonfinite-steps", "3,4"}}),
            0);
  auto e1 = losses("fsdp_nan_ref", "eval/math/loss"), e2 = losses("fsdp_nan", "eval/math/loss");
  ASSERT_EQ(e2.size(), 2u);
  for (const auto& [s, v] : e1) EXPECT_NEAR(e2[s], v, 1e-6 * std::abs(v)) << "eval step " << s;

  ASSERT_EQ(run({"fsdp_bf16_ref", {"train.steps=6", "model.dtype=bf16"}}), 0);
  ASSERT_EQ(run({"fsdp_bf16", {"train.steps=6", "model.dtype=bf16", "train.grad_accum=1", "dist.shard_size=2",
                               "model.activation_checkpointing=true"},
                 {}, 2}),
            0);
  auto a = losses("fsdp_bf16_ref"), b = losses("fsdp_bf16");
  ASSERT_EQ(b.size(), 6u);
  // bf16 rounding differs with the split (two ranks' bf16 gradients vs one rank's accumulation).
  for (const auto& [s, v] : a) EXPECT_NEAR(b[s], v, 2e-2 * std::abs(v)) << "step " << s;
  EXPECT_EQ(checkpoint_weights(fs::join(out_dir("fsdp_bf16"), "final")).begin()->second.scalar_type(), at::kBFloat16);
}

TEST_F(MidE2E, ShardLayoutMustMatchTheWorldSize) {
  auto p = start({"fsdp_bad", {"train.steps=3", "dist.shard_size=3"}, {}, 2});
  EXPECT_NE(wait_for(p), 0);
  EXPECT_NE(read_log(p).find("dist.shard_size (3) x dist.replicate_size (auto) must equal the world size (WORLD_SIZE=2)"),
            std::string::npos)
      << read_log(p);
}

TEST_F(MidE2E, Kill9DuringCheckpointWriteKeepsThePreviousOne) {
  ASSERT_EQ(run({"straight10", {}}), 0);
  RunSpec r{"midwrite", {}, {"--debug-checkpoint-pause-ms", "3000"}};
  auto p = start(r);
  const auto ck = fs::join(out_dir("midwrite"), "checkpoints");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  bool killed = false;
  while (std::chrono::steady_clock::now() < deadline && !killed) {
    if (fs::exists(fs::join(ck, "step-00000005/COMPLETE")) && fs::is_directory(ck)) {
      for (const auto& f : fs::list_dir(ck)) {
        if (f.rfind("step-00000010.tmp", 0) == 0) {
          kill(p.pid, SIGKILL);  // the step-10 checkpoint is half written (paused before its commit)
          killed = true;
          break;
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(killed) << read_log(p);
  EXPECT_EQ(wait_for(p), 128 + SIGKILL);
  EXPECT_EQ(prism::train::CheckpointDir::latest_complete(out_dir("midwrite")).value_or(""),
            fs::join(ck, "step-00000005"));
  r.args.clear();
  r.resume = "auto";
  ASSERT_EQ(run(r), 0);
  expect_same_weights(fs::join(out_dir("straight10"), "final"), fs::join(out_dir("midwrite"), "final"), 0);
  for (const auto& f : fs::list_dir(ck)) EXPECT_EQ(f.find(".tmp"), std::string::npos) << "stale " << f;
}

TEST_F(MidE2E, SigtermCheckpointsAndExitsCleanly) {
  ASSERT_EQ(run({"term_straight", {}}), 0);
  RunSpec r{"term", {}, {"--debug-checkpoint-pause-ms", "1500"}};
  auto p = start(r);
  const auto ck = fs::join(out_dir("term"), "checkpoints");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  bool sent = false;
  while (std::chrono::steady_clock::now() < deadline && !sent) {
    if (fs::is_directory(ck))
      for (const auto& f : fs::list_dir(ck))
        if (f.rfind("step-00000005.tmp", 0) == 0) {
          kill(p.pid, SIGTERM);  // arrives during step 5's checkpoint: the run stops after step 6
          sent = true;
        }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(sent);
  EXPECT_EQ(wait_for(p), 3) << read_log(p);  // kExitStopped: not "done", so `&& next-stage` does not run
  EXPECT_NE(read_log(p).find("resume auto"), std::string::npos) << read_log(p);
  EXPECT_EQ(prism::train::CheckpointDir::latest_complete(out_dir("term")).value_or(""), fs::join(ck, "step-00000006"));
  EXPECT_FALSE(fs::exists(fs::join(out_dir("term"), "final")));
  r.args.clear();
  r.resume = "auto";
  ASSERT_EQ(run(r), 0);
  expect_same_weights(fs::join(out_dir("term_straight"), "final"), fs::join(out_dir("term"), "final"), 0);
}

TEST_F(MidE2E, NonFiniteStepsAreSkippedAndTooManyStopTheRun) {
  ASSERT_EQ(run({"nan", {"train.steps=6", "checkpoint.every=2"}, {"--debug-nonfinite-steps", "3,4"}}), 0);
  auto sk = losses("nan", "skipped");
  EXPECT_EQ(sk[2], 0);
  EXPECT_EQ(sk[3], 1);
  EXPECT_EQ(sk[4], 1);
  EXPECT_EQ(sk[5], 0);
  // Skipped steps leave the weights untouched.
  const auto ck = fs::join(out_dir("nan"), "checkpoints");
  expect_same_weights(fs::join(ck, "step-00000002/model"), fs::join(ck, "step-00000004/model"), 0);

  RunSpec stop{"nanstop", {"train.steps=10", "train.max_consecutive_nonfinite=2"},
               {"--debug-nonfinite-steps", "3,4,5"}};
  auto p = start(stop);
  EXPECT_EQ(wait_for(p), 1);
  const auto log = read_log(p);
  EXPECT_NE(log.find("2 consecutive steps with non-finite loss"), std::string::npos) << log;
  EXPECT_EQ(prism::train::CheckpointDir::latest_complete(out_dir("nanstop")).value_or(""),
            fs::join(out_dir("nanstop"), "checkpoints/step-00000004"));
}

TEST_F(MidE2E, FreshStartRefusesExistingCheckpointsAndExportWorks) {
  ASSERT_EQ(run({"again", {"train.steps=2"}}), 0);
  auto p = start({"again", {"train.steps=2"}});
  EXPECT_EQ(wait_for(p), 1);
  EXPECT_NE(read_log(p).find("--resume auto"), std::string::npos);
  const auto out = fs::join(g_root, "exported");
  auto e = spawn({fs::join(prism::test::bin_dir(), "prism-train"), "export", out_dir("again"), out, "--dtype", "bf16"}, {},
                 fs::join(g_root, "logs/export.log"));
  ASSERT_EQ(wait_for(e), 0) << read_log(e);
  auto w = checkpoint_weights(out);
  auto ref = checkpoint_weights(fs::join(out_dir("again"), "checkpoints/step-00000002/model"));
  for (const auto& [n, t] : ref) {
    ASSERT_TRUE(w.count(n)) << n;
    EXPECT_EQ(w[n].scalar_type(), at::kBFloat16);
    EXPECT_TRUE(at::equal(w[n], t.to(at::kBFloat16))) << n;
  }
}

}  // namespace

namespace {

TEST_F(MidE2E, ActivationCheckpointingChangesNothingAndBf16Trains) {
  ASSERT_EQ(run({"noac", {"train.steps=3"}}), 0);
  ASSERT_EQ(run({"ac", {"train.steps=3", "model.activation_checkpointing=true"}}), 0);
  auto a = losses("noac"), b = losses("ac");
  ASSERT_EQ(b.size(), 3u);
  for (const auto& [s, v] : a) EXPECT_NEAR(b[s], v, 1e-6 * std::abs(v)) << "step " << s;
  expect_same_weights(fs::join(out_dir("noac"), "final"), fs::join(out_dir("ac"), "final"), 1e-6);

  // bf16 compute with fp32 master weights: the loss falls, the export is bf16.
  ASSERT_EQ(run({"bf16", {"train.steps=30", "model.dtype=bf16", "checkpoint.every=30"}}), 0);
  auto l = losses("bf16");
  EXPECT_LT(l[30], l[1] - 0.5) << "bf16 loss " << l[1] << " -> " << l[30];
  auto w = checkpoint_weights(fs::join(out_dir("bf16"), "final"));
  EXPECT_EQ(w.begin()->second.scalar_type(), at::kBFloat16);
}

// train.trainable: [attention] (the study's attention-only long-context variant). Every other
// parameter leaves the run bit-identical to the start, the optimizer state holds the attention
// projections only, the trained ones move, a killed run resumes bit-exactly, and 2 ranks (ZeRO-1
// over the subset) equal 1 rank with accumulation.
TEST_F(MidE2E, AttentionOnlyTrainingFreezesTheRestAndResumesExactly) {
  const std::vector<std::string> sets = {"train.steps=8", "checkpoint.every=4", "train.trainable=[attention]",
                                         "model.activation_checkpointing=true"};
  ASSERT_EQ(run({"attn", sets}), 0);
  const auto init = checkpoint_weights(fs::join(prism::test::source_dir(), "configs/tiny/llama-tiny"));
  const auto fin = checkpoint_weights(fs::join(out_dir("attn"), "final"));
  ASSERT_EQ(init.size(), fin.size());
  int64_t n_attn = 0;
  std::string attn_layout;
  for (const auto& [name, w0] : init) {
    SCOPED_TRACE(name);
    const at::Tensor w = fin.at(name);
    const bool attn = name.find(".self_attn.") != std::string::npos;
    if (attn) {
      EXPECT_FALSE(at::equal(w.to(at::kFloat), w0.to(at::kFloat))) << "a trained parameter did not move";
      n_attn += w0.numel();
    } else {
      EXPECT_TRUE(at::equal(w.to(at::kFloat), w0.to(at::kFloat))) << "a frozen parameter changed";
    }
  }
  // The optimizer state of the last checkpoint covers exactly the attention projections.
  auto st = prism::io::SafetensorsFile::open(
      fs::join(out_dir("attn"), "checkpoints/step-00000008/optimizer-rank00000-of-00001.safetensors"));
  EXPECT_EQ(st->get("exp_avg").numel(), n_attn);
  EXPECT_EQ(st->get("master").numel(), n_attn);
  EXPECT_EQ(st->header().metadata.at("logical_total"), std::to_string(n_attn));
  const std::string& layout = st->header().metadata.at("layout");
  EXPECT_EQ(layout.find("mlp"), std::string::npos) << layout;
  EXPECT_EQ(layout.find("embed"), std::string::npos) << layout;
  EXPECT_NE(layout.find("self_attn.q_proj"), std::string::npos) << layout;
  const std::string log = fs::read_file(fs::join(g_root, "logs/attn.log"));
  EXPECT_NE(log.find("trainable: " + std::to_string(n_attn) + " of "), std::string::npos) << log;

  // Killed after step 6, resumed from step 4: the same losses and weights bit for bit.
  RunSpec killed{"attn_killed", sets, {"--debug-sigkill-after-step", "6"}};
  {
    auto p = start(killed);
    EXPECT_EQ(wait_for(p), 128 + SIGKILL);
  }
  killed.args.clear();
  killed.resume = "auto";
  ASSERT_EQ(run(killed), 0);
  auto a = losses("attn"), b = losses("attn_killed");
  ASSERT_EQ(b.size(), 8u);
  for (const auto& [s, v] : a) EXPECT_EQ(b[s], v) << "step " << s;
  expect_same_weights(fs::join(out_dir("attn"), "final"), fs::join(out_dir("attn_killed"), "final"), 0);

  // Two ranks, ZeRO-1 over the trainable subset, equal one rank with 2x accumulation.
  std::vector<std::string> two = sets;
  two.push_back("train.grad_accum=1");
  ASSERT_EQ(run({"attn_ranks2", two, {}, 2}), 0);
  auto c = losses("attn_ranks2");
  for (const auto& [s, v] : a) EXPECT_NEAR(c[s], v, 1e-6 * std::abs(v)) << "step " << s;
  expect_same_weights(fs::join(out_dir("attn"), "final"), fs::join(out_dir("attn_ranks2"), "final"), 1e-6);

  // Resuming with another selection is refused by the optimizer-state check, naming the cause.
  std::vector<std::string> other = sets;
  other.push_back("train.trainable=[mlp]");
  other.push_back("train.steps=12");
  ASSERT_NE(run({"attn", other, {}, 1, "auto"}), 0);
  EXPECT_NE(fs::read_file(fs::join(g_root, "logs/attn.log")).find("train.trainable"), std::string::npos);
}

}  // namespace

namespace {

// prism-train runs unchanged under torchrun (the torch wheel's launcher, from the test venv).
TEST_F(MidE2E, RunsUnderTorchrunAndFromScratch) {
  // `python -m torch.distributed.run` is torchrun; the venv's bin/torchrun script is not used
  // because tools/setup.sh moves the venv after creating it (script shebangs keep the old path).
  const auto python = fs::join(prism::test::source_dir(), ".venv/bin/python");
  if (!fs::exists(python)) GTEST_SKIP() << "no " << python;
  ASSERT_EQ(run({"tr_ref", {"train.steps=3", "train.grad_accum=1"}, {}, 2}), 0);
  const int port = free_port();
  auto p = spawn({python, "-m", "torch.distributed.run", "--no-python", "--nproc-per-node", "2", "--master-port", std::to_string(port),
                  fs::join(prism::test::bin_dir(), "prism-train"), "mid", "--config", fs::join(g_root, "mid.yaml"),
                  "--set", "output_dir=" + out_dir("torchrun"), "--set", "train.steps=3", "--set", "train.grad_accum=1"},
                 {{"OMP_NUM_THREADS", "1"}}, fs::join(g_root, "logs/torchrun.log"));
  ASSERT_EQ(wait_for(p), 0) << read_log(p);
  EXPECT_NE(read_log(p).find("x2 ranks (tcp)"), std::string::npos) << read_log(p);
  expect_same_weights(fs::join(out_dir("tr_ref"), "final"), fs::join(out_dir("torchrun"), "final"), 0);

  // model.init: scratch takes only config.json and initialises (docs/models.md): the first loss
  // is ~ln(vocab) and training still lowers it.
  ASSERT_EQ(run({"scratch", {"train.steps=20", "model.init=scratch", "model.init_seed=3"}}), 0);
  auto l = losses("scratch");
  EXPECT_NEAR(l[1], std::log(256.0), 0.1);
  EXPECT_LT(l[20], l[1] - 0.5);
}

// A model.init: scratch run starts from the architecture directory's config.json, not from a
// checkpoint; its export must still carry that directory's tokenizer and generation files, so that
// generate and eval take it as is (the study used to copy them after pretraining).
TEST_F(MidE2E, ScratchExportIsAUsableCheckpoint) {
  ASSERT_EQ(run({"scratch-export", {"train.steps=2", "model.init=scratch", "checkpoint.every=2"}}), 0);
  const auto src = prism::test::source_dir();
  const auto arch = fs::join(src, "configs/tiny/llama-tiny");
  const auto final_dir = fs::join(out_dir("scratch-export"), "final");
  for (const std::string f : {"tokenizer.json", "generation_config.json"}) {
    ASSERT_TRUE(fs::exists(fs::join(final_dir, f))) << f;
    EXPECT_EQ(fs::read_file(fs::join(final_dir, f)), fs::read_file(fs::join(arch, f))) << f;
  }
  const auto bin = fs::join(prism::test::bin_dir(), "prism-train");
  const auto dir = fs::join(g_root, "scratch-use");
  fs::create_directories(dir);
  fs::write_file_atomic(fs::join(dir, "prompts.jsonl"), "{\"prompt\": \"2 + 5 =\"}\n");
  auto gen = spawn({bin, "generate", final_dir, "--prompts", fs::join(dir, "prompts.jsonl"), "--field", "prompt",
                    "--max-new-tokens", "3", "-o", fs::join(dir, "gen.jsonl")},
                   {}, fs::join(dir, "generate.log"));
  ASSERT_EQ(wait_for(gen), 0) << read_log(gen);
  EXPECT_TRUE(fs::exists(fs::join(dir, "gen.jsonl")));
  auto ev = spawn({bin, "eval", final_dir, "--suite", fs::join(src, "configs/eval/toy.yaml"), "--set",
                   "benchmarks=[{name: sevens, path: " + fs::join(src, "configs/rl/data/toy-sevens.jsonl") +
                       ", n: 1, max_new_tokens: 3, ks: [1], limit: 2}]",
                   "-o", fs::join(dir, "eval"), "--threads", "1"},
                  {}, fs::join(dir, "eval.log"));
  ASSERT_EQ(wait_for(ev), 0) << read_log(ev);
  EXPECT_TRUE(fs::exists(fs::join(dir, "eval/samples.jsonl")));
}

}  // namespace

// ---- issue 13 ("Nothing lost"): each test fails on the code before its fix -------------------
namespace {

size_t rows_of_step(const std::string& name, int64_t step) {
  size_t n = 0;
  std::istringstream is(fs::read_file(fs::join(out_dir(name), "metrics.jsonl")));
  for (std::string line; std::getline(is, line);)
    if (nlohmann::json::parse(line).value("step", -1) == step && line.find("\"loss\"") != std::string::npos) ++n;
  return n;
}

bool all_finite(const std::string& dir) {
  for (const auto& [n, t] : checkpoint_weights(dir))
    if (!at::isfinite(t).all().item<bool>()) return false;
  return true;
}

// #1: a second writer on the same output_dir is refused while the first runs, naming the holder.
TEST_F(MidE2E, SecondRunOnTheSameOutputDirIsRefused) {
  RunSpec a{"locked", {"train.steps=4", "checkpoint.every=1"}, {"--debug-checkpoint-pause-ms", "1500"}};
  auto pa = start(a);
  const auto lock = fs::join(out_dir("locked"), "run.lock");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!(fs::exists(lock) && fs::file_size(lock) > 0) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto pb = start({"locked", {"train.steps=4"}, {}, 1, "auto"});
  EXPECT_EQ(wait_for(pb), 1);
  const auto log_b = read_log(pb);
  EXPECT_NE(log_b.find("in use by another run (pid " + std::to_string(pa.pid)), std::string::npos) << log_b;
  EXPECT_EQ(wait_for(pa), 0) << read_log(pa);
  // The lock went with its holder: the directory can be resumed (nothing left to do: exit 0).
  ASSERT_EQ(run({"locked", {"train.steps=4"}, {}, 1, "auto"}), 0);
}

// Issue 19: the memory plan is logged at start, and a run whose plan exceeds the device memory
// (here model.device_memory) is refused before the model is loaded, in one line naming the
// biggest item and a layout that fits.
TEST_F(MidE2E, MemoryPlanIsLoggedAndARunThatCannotFitIsRefused) {
  auto ok = start({"plan-ok", {"train.steps=2", "model.device_memory=8GB"}});
  ASSERT_EQ(wait_for(ok), 0) << read_log(ok);
  const auto log_ok = read_log(ok);
  EXPECT_NE(log_ok.find("memory plan per rank: llama"), std::string::npos) << log_ok;
  EXPECT_NE(log_ok.find("fits in 7.45 GiB"), std::string::npos) << log_ok;
  // tiny-llama fp32, 2 x 128 tokens: ~0.3 MiB of weights but ~2 MiB of activations and loss head.
  auto no = start({"plan-refused", {"train.steps=2", "model.device_memory=1MB"}});
  EXPECT_EQ(wait_for(no), 1);
  const auto log_no = read_log(no);
  EXPECT_NE(log_no.find("prism-train: error: " + fs::join(g_root, "mid.yaml") +
                        ": model.device_memory: the run does not fit: the plan needs "),
            std::string::npos) << log_no;
  EXPECT_NE(log_no.find("the biggest item is "), std::string::npos) << log_no;
  EXPECT_NE(log_no.find("prism-train plan --config"), std::string::npos) << log_no;
  // Nothing was loaded or written: no checkpoint, no export.
  EXPECT_FALSE(fs::exists(fs::join(out_dir("plan-refused"), "checkpoints")));
  EXPECT_FALSE(fs::exists(fs::join(out_dir("plan-refused"), "final")));
}

// #2: lr 1e6 on a healthy run: the update is checked and skipped, the skip streak's checkpoints
// never prune the last healthy one, and resuming with a sane lr continues from healthy weights.
TEST_F(MidE2E, DivergenceKeepsTheLastHealthyCheckpointAndResumeWithLowerLrWorks) {
  const std::vector<std::string> base = {"train.steps=10", "checkpoint.every=2", "checkpoint.keep_last=1",
                                         "train.max_consecutive_nonfinite=3"};
  ASSERT_EQ(run({"diverge", {"train.steps=4", "checkpoint.every=2", "checkpoint.keep_last=1"}}), 0);
  auto sets = base;
  sets.push_back("optimizer.lr=1e6");
  auto p = start({"diverge", sets, {}, 1, "auto"});
  EXPECT_EQ(wait_for(p), 1);
  const auto log = read_log(p);
  EXPECT_NE(log.find("update too large"), std::string::npos) << log;
  const auto ck = fs::join(out_dir("diverge"), "checkpoints");
  EXPECT_TRUE(fs::exists(fs::join(ck, "step-00000004/COMPLETE"))) << "the last healthy checkpoint was pruned";
  for (const auto& c : prism::train::CheckpointDir::complete_steps(out_dir("diverge")))
    EXPECT_TRUE(all_finite(fs::join(ck, "step-" + std::string(8 - std::to_string(c).size(), '0') + std::to_string(c) + "/model")));
  sets = base;
  sets.push_back("optimizer.lr=3e-3");
  ASSERT_EQ(run({"diverge", sets, {}, 1, "auto"}), 0);
  EXPECT_TRUE(all_finite(fs::join(out_dir("diverge"), "final")));
  auto l = losses("diverge");
  EXPECT_LT(l[10], l[1]) << "loss " << l[1] << " -> " << l[10];
}

// #3: weights that became non-finite (lr 1e39 is a finite double but inf in fp32; the update
// guard off) are never checkpointed, exported or reported as done.
TEST_F(MidE2E, NonFiniteWeightsAreNeverExportedOrReportedDone) {
  auto p = start({"nanweights",
                  {"train.steps=2", "schedule.warmup_steps=0", "optimizer.lr=1e39", "train.max_update_ratio=0"}});
  EXPECT_EQ(wait_for(p), 1);
  const auto log = read_log(p);
  EXPECT_NE(log.find("NaN/inf"), std::string::npos) << log;
  EXPECT_EQ(log.find("mid: done"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(fs::join(out_dir("nanweights"), "final")));
  EXPECT_FALSE(prism::train::CheckpointDir::latest_complete(out_dir("nanweights")));
}

// #9: a missing eval directory is reported at start-up with the full key path.
TEST_F(MidE2E, EvalSourcesAreCheckedAtStartUp) {
  auto p = start({"badeval", {"eval.every=100", "eval.sources=[{name: x, path: " + g_root + "/nowhere/*.tok}]"}});
  EXPECT_EQ(wait_for(p), 1);
  const auto log = read_log(p);
  EXPECT_NE(log.find("eval.sources[0].path: directory " + g_root + "/nowhere does not exist"), std::string::npos)
      << log;
  EXPECT_EQ(log.find("step 1/"), std::string::npos) << log;
}

// #10: a corrupt trainer_state.json names the file; a missing --config is exit 1 with the file.
TEST_F(MidE2E, CorruptStateAndMissingConfigNameTheFile) {
  ASSERT_EQ(run({"corrupt", {"train.steps=2"}}), 0);
  const auto st = fs::join(out_dir("corrupt"), "checkpoints/step-00000002/trainer_state.json");
  fs::write_file_atomic(st, "{\"step\": 2, \"tok");
  auto p = start({"corrupt", {"train.steps=4"}, {}, 1, "auto"});
  EXPECT_EQ(wait_for(p), 1);
  EXPECT_NE(read_log(p).find("prism-train: error: " + st + ": corrupt or incomplete trainer state"), std::string::npos)
      << read_log(p);
  const auto missing = fs::join(g_root, "no-such.yaml");
  auto q = spawn({fs::join(prism::test::bin_dir(), "prism-train"), "mid", "--config", missing}, {},
                 fs::join(g_root, "logs/missing-config.log"));
  EXPECT_EQ(wait_for(q), 1);
  EXPECT_NE(read_log(q).find("prism-train: error: " + missing + ": "), std::string::npos) << read_log(q);
}

// #12: one metrics row per step after a kill and --resume, and a fresh run does not append to an
// older run's rows.
TEST_F(MidE2E, MetricsHaveOneRowPerStep) {
  RunSpec r{"rows", {"train.steps=8", "checkpoint.every=5"}, {"--debug-sigkill-after-step", "7"}};
  {
    auto p = start(r);
    EXPECT_EQ(wait_for(p), 128 + SIGKILL);
  }
  r.args.clear();
  r.resume = "auto";
  ASSERT_EQ(run(r), 0);
  for (int64_t s = 1; s <= 8; ++s) EXPECT_EQ(rows_of_step("rows", s), 1u) << "step " << s;
  fs::create_directories(out_dir("fresh_rows"));
  fs::write_file_atomic(fs::join(out_dir("fresh_rows"), "metrics.jsonl"), "{\"step\":1,\"time\":0,\"loss\":99}\n");
  ASSERT_EQ(run({"fresh_rows", {"train.steps=2"}}), 0);
  EXPECT_EQ(rows_of_step("fresh_rows", 1), 1u);
  EXPECT_NE(losses("fresh_rows")[1], 99);
}

// #13: the held-out loss is the same set whatever the world size.
TEST_F(MidE2E, EvalLossDoesNotDependOnWorldSize) {
  const std::vector<std::string> ev = {"train.steps=2", "eval.every=2", "eval.batches=3",
                                       "eval.sources=[{name: math, path: " + g_root + "/shards/math.held/*.tok}]"};
  auto one = ev, two = ev;
  two.push_back("train.grad_accum=1");
  ASSERT_EQ(run({"eval_w1", one}), 0);
  ASSERT_EQ(run({"eval_w2", two, {}, 2}), 0);
  const double a = losses("eval_w1", "eval/math/loss")[2], b = losses("eval_w2", "eval/math/loss")[2];
  EXPECT_GT(a, 0);
  EXPECT_NEAR(a, b, 1e-5 * a);
}

// Issue 17: in-loop pass@k (eval.benchmarks) is logged at every `every` steps and the last, and
// equals a standalone `prism-train eval` of the checkpoint written at that step (every sample and
// score), on 1 and on 2 ranks (rank 0 evaluates its full copy of the weights).
TEST_F(MidE2E, InLoopBenchmarkEvalEqualsEvalOfTheCheckpoint) {
  const auto src = prism::test::source_dir();
  const auto suite = fs::join(g_root, "suite.yaml");
  fs::write_file_atomic(suite, "benchmarks:\n"
                               "  - {name: sevens, path: " + fs::join(src, "configs/rl/data/toy-sevens.jsonl") +
                               ", n: 8, temperature: 1.0, max_new_tokens: 24, ks: [1, 4]}\n"
                               "  - {name: unreachable, path: " + fs::join(src, "configs/eval/data/toy-unreachable.jsonl") +
                               ", n: 2, temperature: 1.0, max_new_tokens: 6, ks: [1]}\n"
                               "rewards:\n  math: {last_number_fallback: true, workers: 1}\n"
                               "  domains:\n    - {domain: math, verifier: math}\nslots: 16\nseed: 5\n");
  for (int nproc : {1, 2}) {
    const std::string name = "bench_w" + std::to_string(nproc);
    std::vector<std::string> sets = {"train.steps=5", "checkpoint.every=2", "eval.benchmarks.every=2",
                                     "eval.benchmarks.suite=" + suite, "eval.benchmarks.limit=5"};
    if (nproc == 2) sets.push_back("train.grad_accum=1");
    ASSERT_EQ(run({name, sets, {}, nproc}), 0);
    const auto pass1 = losses(name, "eval/sevens/pass@1"), macro = losses(name, "eval/macro_avg");
    std::vector<int64_t> steps;
    for (const auto& [st, v] : pass1) steps.push_back(st);
    EXPECT_EQ(steps, (std::vector<int64_t>{2, 4, 5})) << name;
    EXPECT_EQ(losses(name, "eval/sevens/pass@4").size(), 3u);
    EXPECT_GT(pass1.at(2) + pass1.at(4) + pass1.at(5), 0.0) << "all scores 0: the equalities below would be weak";
    EXPECT_EQ(losses(name, "eval/domain/math").size(), 3u);
    for (int64_t st : {2, 4, 5}) {
      char ck[32];
      std::snprintf(ck, sizeof ck, "checkpoints/step-%08lld/model", static_cast<long long>(st));
      const auto ev = fs::join(g_root, name + "_eval_" + std::to_string(st));
      auto p = spawn({fs::join(prism::test::bin_dir(), "prism-train"), "eval", fs::join(out_dir(name), ck), "--suite",
                      suite, "--set", "benchmarks[0].limit=5", "--set", "benchmarks[1].limit=5", "--threads", "1", "-o",
                      ev},
                     {}, ev + ".log");
      ASSERT_EQ(wait_for(p), 0) << read_log(p);
      const auto in_loop = fs::join(out_dir(name), "eval/step-" + std::to_string(st));
      EXPECT_EQ(fs::read_file(fs::join(in_loop, "samples.jsonl")), fs::read_file(fs::join(ev, "samples.jsonl")))
          << name << " step " << st;
      auto rep = nlohmann::json::parse(fs::read_file(fs::join(ev, "report.json")));
      EXPECT_EQ(rep["benchmarks"][0]["problems"].get<int64_t>(), 5);
      EXPECT_EQ(pass1.at(st), rep["benchmarks"][0]["pass_at"]["1"].get<double>()) << name << " step " << st;
      EXPECT_EQ(macro.at(st), rep["macro_avg"].get<double>()) << name << " step " << st;
    }
  }
  // Every step's model samples: the completions change as the weights do (the check is not vacuous).
  EXPECT_NE(fs::read_file(fs::join(out_dir("bench_w1"), "eval/step-2/samples.jsonl")),
            fs::read_file(fs::join(out_dir("bench_w1"), "eval/step-5/samples.jsonl")));
  auto bad = start({"bench_bad", {"train.steps=2", "eval.benchmarks.every=2"}});
  EXPECT_EQ(wait_for(bad), 1);
  EXPECT_NE(read_log(bad).find("eval.benchmarks.suite: required when every > 0"), std::string::npos) << read_log(bad);
  // A suite whose data file is missing fails before step 1, naming the suite file and the key.
  const auto missing = fs::join(g_root, "suite_missing.yaml");
  fs::write_file_atomic(missing, "benchmarks:\n  - {name: x, path: " + g_root + "/nowhere.jsonl}\n");
  auto early = start({"bench_missing", {"train.steps=50", "eval.benchmarks.every=50", "eval.benchmarks.suite=" + missing}});
  EXPECT_EQ(wait_for(early), 1);
  const auto log = read_log(early);
  EXPECT_NE(log.find(missing + ": benchmarks[0].path: file not found"), std::string::npos) << log;
  EXPECT_EQ(log.find("step 1"), std::string::npos) << log;
}

// #14: warnings for a sequence longer than the model's positions, and for a resume whose
// model.path or mixture weights differ from the checkpoint's.
TEST_F(MidE2E, WarnsAboutSeqLenAndResumeChanges) {
  ASSERT_EQ(run({"warn", {"train.steps=2"}}), 0);
  std::string mix = fs::read_file(fs::join(g_root, "mix.yaml"));
  const auto at = mix.find("weight: 1}");
  mix.replace(at, 10, "weight: 3}");
  fs::write_file_atomic(fs::join(g_root, "mix3.yaml"), mix);
  const auto other_model = fs::join(g_root, "llama-copy");
  fs::copy_tree(fs::join(prism::test::source_dir(), "configs/tiny/llama-tiny"), other_model);
  auto p = start({"warn", {"train.steps=3", "data.mixture=" + g_root + "/mix3.yaml", "model.path=" + other_model},
                  {}, 1, "auto"});
  EXPECT_EQ(wait_for(p), 0) << read_log(p);
  const auto log = read_log(p);
  EXPECT_NE(log.find("model.path differs from the checkpoint's"), std::string::npos) << log;
  EXPECT_NE(log.find("mixture weights differ from the checkpoint's"), std::string::npos) << log;
  auto q = start({"warn_seq", {"train.steps=2", "data.seq_len=600", "data.micro_batch_size=1"}});
  EXPECT_EQ(wait_for(q), 0) << read_log(q);
  EXPECT_NE(read_log(q).find("data.seq_len 600 exceeds the model's max_position_embeddings 512"), std::string::npos)
      << read_log(q);
}

// #17: temps of dead writers (an interrupted final export, a checkpoint being written) go away.
TEST_F(MidE2E, DeadWritersTempsAreCleanedUp) {
  ASSERT_EQ(run({"temps", {"train.steps=2"}}), 0);
  const auto stale_final = fs::join(out_dir("temps"), "final.tmp.999999");
  const auto stale_ckpt = fs::join(out_dir("temps"), "checkpoints/step-00000004.tmp-999999");
  fs::copy_tree(fs::join(out_dir("temps"), "final"), stale_final);
  fs::create_directories(stale_ckpt);
  ASSERT_EQ(run({"temps", {"train.steps=3"}, {}, 1, "auto"}), 0);
  EXPECT_FALSE(fs::exists(stale_final));
  EXPECT_FALSE(fs::exists(stale_ckpt));
}

// #7: a disk that holds one checkpoint but not two: pruning happens before the write (keep_last 1),
// the run completes and leaves no temps; a disk too small for any checkpoint fails at start-up
// saying what is needed, before redoing any step, and leaves nothing behind.
TEST_F(MidE2E, DiskFullPrunesFirstAndFailsEarlyWithoutTemps) {
  const auto mnt = fs::join(g_root, "small-disk");
  fs::create_directories(mnt);
  if (std::system(("mount -t tmpfs -o size=3m tmpfs " + mnt + " 2>/dev/null").c_str()) != 0)
    GTEST_SKIP() << "cannot mount a tmpfs (needs root)";
  struct Unmount {
    std::string m;
    ~Unmount() { (void)!std::system(("umount " + m).c_str()); }
  } unmount{mnt};
  auto cmd_for = [&](const std::string& dir, const std::string& steps) {
    return std::vector<std::string>{fs::join(prism::test::bin_dir(), "prism-train"), "mid", "--config",
                                    fs::join(g_root, "mid.yaml"), "--set", "output_dir=" + dir, "--set", steps,
                                    "--set", "checkpoint.every=1", "--set", "checkpoint.keep_last=1",
                                    "--set", "log.tensorboard=false", "--resume", "auto"};
  };
  const auto dir = fs::join(mnt, "run");
  fs::create_directories(fs::join(g_root, "logs"));  // ctest runs each test in a process of its own
  auto p = spawn(cmd_for(dir, "train.steps=4"), {}, fs::join(g_root, "logs/disk.log"));
  ASSERT_EQ(wait_for(p), 0) << read_log(p);
  EXPECT_TRUE(fs::exists(fs::join(dir, "final/config.json")));
  for (const auto& f : fs::list_dir(fs::join(dir, "checkpoints"))) EXPECT_EQ(f.find(".tmp"), std::string::npos) << f;

  // Fill the disk so no checkpoint fits: the resumed run refuses at start-up, twice the same way.
  fs::remove_all(fs::join(dir, "final"));
  ASSERT_EQ(std::system(("head -c 1200000 /dev/zero > " + mnt + "/filler").c_str()), 0);
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto q = spawn(cmd_for(dir, "train.steps=8"), {}, fs::join(g_root, "logs/disk-full.log"));
    EXPECT_EQ(wait_for(q), 1);
    const auto log = read_log(q);
    EXPECT_NE(log.find("not enough disk space for a checkpoint: one needs about"), std::string::npos) << log;
    EXPECT_EQ(log.find("step 5/"), std::string::npos) << log;
    for (const auto& f : fs::list_dir(fs::join(dir, "checkpoints"))) EXPECT_EQ(f.find(".tmp"), std::string::npos) << f;
  }
}

}  // namespace
