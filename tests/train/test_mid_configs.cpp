// Every YAML under configs/mid parses as a MidTrainConfig, and the study configs carry the
// study's hyperparameters (docs/paper-setup.md §2, [P Table 16]).
#include <gtest/gtest.h>

#include "prism/core/config.h"
#include "prism/core/fs.h"
#include "prism/data/mixture.h"
#include "prism/train/train_config.h"
#include "util/test_util.h"

namespace {

TEST(MidConfigs, AllParseAndStudyOnesMatchThePaper) {
  const auto dir = prism::fs::join(prism::test::source_dir(), "configs/mid");
  int study = 0;
  for (const auto& f : prism::fs::list_dir(dir)) {
    if (f.size() < 5 || f.substr(f.size() - 5) != ".yaml") continue;
    SCOPED_TRACE(f);
    auto cfg = prism::config::load_config<prism::train::MidTrainConfig>(prism::fs::join(dir, f));
    EXPECT_FALSE(cfg.output_dir.empty());
    if (f == "tiny-cpu.yaml") continue;
    ++study;
    EXPECT_EQ(cfg.train.steps, 25000);
    EXPECT_EQ(cfg.data.seq_len, 8192);
    EXPECT_EQ(cfg.optimizer.lr, 5e-5);
    EXPECT_EQ(cfg.optimizer.betas[0], 0.9);
    EXPECT_EQ(cfg.optimizer.betas[1], 0.95);
    EXPECT_EQ(cfg.optimizer.eps, 1e-10);
    EXPECT_EQ(cfg.optimizer.weight_decay, 0.1);
    EXPECT_EQ(cfg.schedule.kind, prism::train::ScheduleKind::kCosine);
    EXPECT_EQ(cfg.schedule.warmup_steps, 500);
    EXPECT_EQ(cfg.schedule.min_lr_ratio, 0.1);
    EXPECT_EQ(cfg.model.dtype, prism::train::Dtype::kBf16);
    EXPECT_EQ(cfg.data.mixture, "configs/mixtures/prism-mcs.yaml");
    EXPECT_GE(cfg.data.eos_id, 0);
  }
  EXPECT_EQ(study, 7);  // the seven base models of the study
}

// configs/longctx/lc-*.yaml: the long-context stage of the study [P Table 17] for every study model,
// starting from the merge that merge-*.yaml writes; the mixture is the Table 18 pool, packed
// best-fit-decreasing with overlapping chunks at the long length.
TEST(MidConfigs, LongContextConfigsMatchTable17) {
  const auto src = prism::test::source_dir();
  const auto dir = prism::fs::join(src, "configs/longctx");
  int n = 0;
  for (const auto& f : prism::fs::list_dir(dir)) {
    if (f.rfind("lc-", 0) != 0) continue;
    SCOPED_TRACE(f);
    ++n;
    auto cfg = prism::config::load_config<prism::train::MidTrainConfig>(prism::fs::join(dir, f));
    const std::string model = f.substr(3, f.size() - 3 - 5);
    EXPECT_TRUE(prism::fs::exists(prism::fs::join(dir, "merge-" + model + ".yaml")));
    EXPECT_TRUE(prism::fs::exists(prism::fs::join(src, "configs/mid/" + model + ".yaml")));
    EXPECT_EQ(cfg.model.path, "checkpoints/hf/" + model + "-merge-15-85");
    EXPECT_EQ(cfg.train.steps, 1000);
    EXPECT_EQ(cfg.train.grad_accum, 1);
    EXPECT_EQ(cfg.train.trainable, std::vector<std::string>{"all"});
    EXPECT_EQ(cfg.data.seq_len, 131072);
    EXPECT_EQ(cfg.data.micro_batch_size, 1);
    EXPECT_EQ(cfg.optimizer.lr, 5e-5);
    EXPECT_EQ(cfg.optimizer.betas[0], 0.9);
    EXPECT_EQ(cfg.optimizer.betas[1], 0.95);
    EXPECT_EQ(cfg.optimizer.eps, 1e-10);
    EXPECT_EQ(cfg.optimizer.weight_decay, 0.1);
    EXPECT_EQ(cfg.schedule.kind, prism::train::ScheduleKind::kExponential);
    EXPECT_EQ(cfg.schedule.warmup_steps, 100);
    EXPECT_EQ(cfg.schedule.min_lr_ratio, 0.0);
    EXPECT_EQ(cfg.model.dtype, prism::train::Dtype::kBf16);
    EXPECT_TRUE(cfg.model.activation_checkpointing);
    EXPECT_EQ(cfg.data.mixture, "configs/mixtures/prism-longctx.yaml");
    // The same eos id as the model's mid-training config.
    auto mid = prism::config::load_config<prism::train::MidTrainConfig>(
        prism::fs::join(src, "configs/mid/" + model + ".yaml"));
    EXPECT_EQ(cfg.data.eos_id, mid.data.eos_id);
  }
  EXPECT_EQ(n, 7);
  auto mix =
      prism::config::load_config<prism::data::MixtureConfig>(prism::fs::join(src, "configs/mixtures/prism-longctx.yaml"));
  EXPECT_EQ(mix.packing, "bfd");
  EXPECT_GT(mix.split_overlap, 0);
  EXPECT_EQ(mix.seq_len, 131072);
  EXPECT_EQ(mix.sources.size(), 5u);  // Table 18
}

TEST(MidConfigs, UnknownKeyAndBadValueNameTheKey) {
  const auto dir = prism::test::make_temp_dir("prism-midcfg");
  const auto p = prism::fs::join(dir, "bad.yaml");
  prism::fs::write_file_atomic(p, "output_dir: x\nmodel: {path: m}\ndata: {mixture: m.yaml}\ntrain: {steps: 10}\n"
                                  "optimizer: {lr: -1}\n");
  try {
    prism::config::load_config<prism::train::MidTrainConfig>(p);
    FAIL();
  } catch (const prism::Error& e) {
    EXPECT_NE(std::string(e.what()).find("optimizer.lr"), std::string::npos) << e.what();
  }
  prism::fs::write_file_atomic(p, "output_dir: x\nmodel: {path: m}\ndata: {mixture: m.yaml}\ntrain: {steps: 10, stepz: 3}\n");
  try {
    prism::config::load_config<prism::train::MidTrainConfig>(p);
    FAIL();
  } catch (const prism::Error& e) {
    EXPECT_NE(std::string(e.what()).find("train.stepz"), std::string::npos) << e.what();
  }
  prism::fs::remove_all(dir);
}

// Issue 13 #10: the warmup-longer-than-run error names the config file and the full key.
TEST(MidConfigs, WarmupLongerThanTheRunNamesFileAndKey) {
  const auto dir = prism::test::make_temp_dir("prism-midcfg");
  const auto p = prism::fs::join(dir, "warm.yaml");
  prism::fs::write_file_atomic(p, "output_dir: x\nmodel: {path: m}\ndata: {mixture: m.yaml}\ntrain: {steps: 10}\n"
                                  "schedule: {warmup_steps: 500}\n");
  try {
    prism::config::load_config<prism::train::MidTrainConfig>(p);
    FAIL() << "expected an error";
  } catch (const prism::Error& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.rfind(p + ":5: schedule.warmup_steps: warmup is longer than the run", 0), 0u) << m;  // line 5
    EXPECT_NE(m.find("<= train.steps (10)"), std::string::npos) << m;
  }
  // Enum choices are checked when the YAML is read, naming the key.
  prism::fs::write_file_atomic(p, "output_dir: x\nmodel: {path: m, dtype: fp16}\ndata: {mixture: m.yaml}\n"
                                  "train: {steps: 10}\n");
  try {
    prism::config::load_config<prism::train::MidTrainConfig>(p);
    FAIL() << "expected an error";
  } catch (const prism::Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.dtype"), std::string::npos) << e.what();
  }
  prism::fs::remove_all(dir);
}

}  // namespace
