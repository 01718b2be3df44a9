// A bad config through prism-train: every job (mid, rl, eval, study) exits 1 with one line naming
// the file and line where the bad key was written, the key path, what was expected and what was
// written; a `--set` names the override instead, and a study's `set:` entry names the study file's
// line. The YAML files are written here, so the line numbers below are counted by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "prism/core/fs.h"
#include "util/test_util.h"

namespace {

namespace fs = prism::fs;

class ConfigErrorsCli : public ::testing::Test {
 protected:
  void SetUp() override { dir = prism::test::make_temp_dir("config_errors_cli"); }
  void TearDown() override { fs::remove_all(dir); }

  std::string write(const std::string& name, const std::string& text) const {
    const std::string p = fs::join(dir, name);
    std::ofstream(p) << text;
    return p;
  }
  /// stderr of a prism-train run that must fail with exit code 1 and print exactly one line.
  std::string error_line(const std::string& args) const {
    const std::string err = fs::join(dir, "err.txt");
    const std::string cmd = fs::join(prism::test::bin_dir(), "prism-train") + " " + args + " >/dev/null 2>" + err;
    const int rc = std::system(cmd.c_str());
    const std::string text = fs::read_file(err);
    EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 1) << args << "\n" << text;
    EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
    return text;
  }
  std::string stage(const std::string& name) const {
    return fs::join(prism::test::source_dir(), "configs/study/stages/" + name + ".yaml");
  }

  std::string dir;
};

TEST_F(ConfigErrorsCli, MidNamesTheLineOfABadChoiceAndTheOverride) {
  const std::string cfg = write("mid.yaml",
                                "# a mid-training job with a dtype prism does not train in\n"  // 1
                                "output_dir: " + dir + "/mid\n"                                  // 2
                                "model:\n"                                                      // 3
                                "  path: configs/tiny/llama-tiny\n"                             // 4
                                "  dtype: fp16\n");                                             // 5
  EXPECT_EQ(error_line("mid -c " + cfg),
            "prism-train: error: " + cfg + ":5: model.dtype: expected one of fp32 | bf16, got \"fp16\"\n");
  EXPECT_EQ(error_line("mid -c " + cfg + " --set model.dtype=fp64"),
            "prism-train: error: --set model.dtype=fp64: model.dtype: expected one of fp32 | bf16, got \"fp64\"\n");
}

TEST_F(ConfigErrorsCli, RlNamesTheLineOfAnUnknownKey) {
  const std::string cfg = write("rl.yaml",
                                "output_dir: " + dir + "/rl\n"            // 1
                                "model: {path: configs/tiny/llama-tiny}\n"  // 2
                                "rollout:\n"                                // 3
                                "  prompts_per_step: 4\n"                   // 4
                                "  samples_per_promt: 8\n");                // 5
  EXPECT_EQ(error_line("rl -c " + cfg), "prism-train: error: " + cfg +
                                            ":5: rollout.samples_per_promt: unknown key (did you mean "
                                            "'samples_per_prompt'?)\n");
}

// A setting refused at start-up, after parsing (the layout needs the world size), names its line too.
TEST_F(ConfigErrorsCli, RlStartUpCheckNamesTheLine) {
  const std::string src = prism::test::source_dir();
  const std::string cfg = write("rl-layout.yaml",
                                "output_dir: " + dir + "/rl-layout\n"                                   // 1
                                "model: {path: " + src + "/configs/tiny/llama-tiny}\n"                    // 2
                                "data: {prompts: [" + src + "/configs/rl/data/toy-sevens.jsonl]}\n"       // 3
                                "rollout:\n"                                                             // 4
                                "  prompts_per_step: 1\n"                                                // 5
                                "  samples_per_prompt: 2\n"                                              // 6
                                "train:\n"                                                               // 7
                                "  mini_batches: 4\n"                                                    // 8
                                "  steps: 1\n");                                                         // 9
  const std::string err = fs::join(dir, "rl-layout.err");
  const int rc = std::system((fs::join(prism::test::bin_dir(), "prism-train") + " rl -c " + cfg + " >/dev/null 2>" + err).c_str());
  EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
  const std::string text = fs::read_file(err);
  const std::string expected = "prism-train: error: " + cfg +
                               ":8: train.mini_batches: each rank has 2 rollouts per step, fewer than the updates asked "
                               "for (expected at most 2, found 4)\n";
  ASSERT_GE(text.size(), expected.size()) << text;
  EXPECT_EQ(text.substr(text.size() - expected.size()), expected) << text;
}

TEST_F(ConfigErrorsCli, EvalNamesTheLineOfAValidationRuleAndOfADuplicateKey) {
  const std::string suite = write("suite.yaml",
                                  "# pass@8 of 4 samples cannot be estimated\n"  // 1
                                  "benchmarks:\n"                                // 2
                                  "  - {name: a, path: a.jsonl, n: 4, ks: [1]}\n"  // 3
                                  "  - name: b\n"                                // 4
                                  "    path: b.jsonl\n"                          // 5
                                  "    n: 4\n"                                   // 6
                                  "    ks: [1, 8]\n");                           // 7
  const std::string model = fs::join(prism::test::source_dir(), "configs/tiny/llama-tiny");
  EXPECT_EQ(error_line("eval " + model + " --suite " + suite),
            "prism-train: error: " + suite + ":7: benchmarks[1].ks: pass@8 needs n >= 8 samples, n is 4\n");
  const std::string dup = write("dup.yaml",
                                "benchmarks:\n"                            // 1
                                "  - {name: a, path: a.jsonl, n: 4}\n"     // 2
                                "slots: 8\n"                               // 3
                                "seed: 1\n"                                // 4
                                "slots: 16\n");                            // 5
  EXPECT_EQ(error_line("eval " + model + " --suite " + dup),
            "prism-train: error: " + dup + ":5: slots: duplicate key (first written on line 3)\n");
}

TEST_F(ConfigErrorsCli, StudyNamesTheStudyLineOfABadSetEntryAndTheStageFileLine) {
  const std::string study_head = "# a study whose stages are composed with `set:` lists\n"  // 1
                                 "output_dir: " + dir + "/study\n"                          // 2
                                 "model: " + prism::test::source_dir() + "/configs/tiny/study-dense\n"  // 3
                                 "pretrain: {config: " + stage("pretrain") + "}\n"          // 4
                                 "mid: {config: " + stage("mid") + "}\n";                   // 5
  const std::string cfg = write("study.yaml", study_head +
                                                  "rl:\n"                                   // 6
                                                  "  config: " + stage("rl") + "\n"         // 7
                                                  "  set:\n"                                // 8
                                                  "    - train.steps=2\n"                   // 9
                                                  "    - rollout.temperatur=1.0\n"          // 10
                                                  "eval: {config: " + stage("eval") + "}\n");  // 11
  EXPECT_EQ(error_line("study --config " + cfg),
            "prism-train: error: " + cfg +
                ":10: rl.set[1]: rollout.temperatur: unknown key (did you mean 'temperature'?) (study stage `rl`)\n");

  // A bad key in a stage file names that file's line, and the study that composed it.
  const std::string eval_stage = write("eval-stage.yaml",
                                       "benchmarks:\n"                           // 1
                                       "  - {name: a, path: a.jsonl, n: 4}\n"    // 2
                                       "slots: 0\n");                            // 3
  const std::string cfg2 = write("study2.yaml", study_head + "rl: {config: " + stage("rl") +
                                                    "}\n"
                                                    "eval: {config: " + eval_stage + "}\n");
  EXPECT_EQ(error_line("study --config " + cfg2), "prism-train: error: " + eval_stage +
                                                      ":3: slots: expected an integer > 0, got 0 (study stage `eval` of " +
                                                      cfg2 + ")\n");
}

}  // namespace
