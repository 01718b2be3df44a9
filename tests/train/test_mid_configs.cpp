// Every YAML under configs/mid parses as a MidTrainConfig, and the study configs carry the
// study's hyperparameters (docs/paper-setup.md §2, [P Table 16]).
#include <gtest/gtest.h>

#include "prism/core/config.h"
#include "prism/core/fs.h"
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
    EXPECT_EQ(cfg.model.dtype, "bf16");
    EXPECT_EQ(cfg.data.mixture, "configs/mixtures/prism-mcs.yaml");
    EXPECT_GE(cfg.data.eos_id, 0);
  }
  EXPECT_EQ(study, 7);  // the seven base models of the study
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

}  // namespace
