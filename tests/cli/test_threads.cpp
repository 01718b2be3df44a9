// `--threads N` on every compute subcommand of prism-train: accepted and applied (the log line and
// `inspect`'s report print the counts ATen has in effect), and a bad value is a one-line error
// naming --threads. The commands run on the tiny fixtures; those that need inputs the test does not
// build (a training config, a suite) fail after the threads are applied, with an error about that
// input, which still shows the option was accepted.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "prism/core/fs.h"
#include "util/test_util.h"

namespace {

namespace fs = prism::fs;

std::string slurp(const std::string& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct Result {
  int rc;
  std::string out, err;
};

Result run(const std::string& args, const std::string& dir) {
  const std::string cmd =
      fs::join(prism::test::bin_dir(), "prism-train") + " " + args + " >" + dir + "/out.txt 2>" + dir + "/err.txt";
  const int rc = std::system(cmd.c_str());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, slurp(dir + "/out.txt"), slurp(dir + "/err.txt")};
}

class ThreadsCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = prism::test::make_temp_dir("threads_cli");
    model = prism::test::fixture("llama");
    std::ofstream(dir + "/prompts.jsonl") << "{\"ids\": [1, 2, 3]}\n";
    std::ofstream(dir + "/texts.jsonl") << "{\"text\": \"a b c\"}\n";
    std::ofstream(dir + "/empty.yaml") << "{}\n";
    std::ofstream(dir + "/run.yaml") << "output_dir: " << dir << "/run\nmodel:\n  path: " << model
                                     << "\ngenerate:\n  prompt_ids: [1, 2, 3]\n  max_new_tokens: 2\n";
  }
  void TearDown() override { fs::remove_all(dir); }

  // Each compute subcommand, with arguments that get it past option parsing (the thread option is
  // appended). `ok`: the command succeeds on these inputs.
  struct Command {
    std::string args;
    bool ok;
  };
  std::vector<Command> commands() const {
    const std::string m = model;
    return {
        {"inspect " + m, true},
        {"forward " + m + " --ids \"1 2 3\" -o " + dir + "/logits.safetensors", true},
        {"save " + m + " " + dir + "/saved", true},
        {"generate " + m + " --ids \"1 2 3\" --max-new-tokens 2 --slots 1", true},
        {"generate " + m + " --prompts " + dir + "/prompts.jsonl --field ids --max-new-tokens 2 -o " + dir +
             "/gen.jsonl",
         true},
        {"run -c " + dir + "/run.yaml", true},
        {"export " + m + " " + dir + "/exported", false},  // an HF dir is not a training checkpoint
        {"mid -c " + dir + "/empty.yaml", false},
        {"rl -c " + dir + "/empty.yaml", false},
        {"data tokenize --tokenizer " + dir + "/none.json -i " + dir + "/texts.jsonl -o " + dir + "/tok", false},
        {"data mixture -c " + dir + "/empty.yaml", false},
        {"eval " + m + " --suite " + dir + "/none.yaml", false},
        {"analyze weights " + m + " " + m + " -o " + dir + "/aw", false},  // ok only where gnuplot exists
        {"analyze trajectory " + m + " " + m + " -o " + dir + "/at", false},
        {"analyze cka " + m + " " + m + " --inputs " + dir + "/texts.jsonl -o " + dir + "/ac", false},
    };
  }

  std::string dir, model;
};

TEST_F(ThreadsCli, EveryComputeCommandAcceptsAndAppliesThreads) {
  for (const auto& c : commands()) {
    SCOPED_TRACE(c.args);
    auto r = run(c.args + " --threads 1", dir);
    // Applied before the command's own work: the log line carries ATen's counts after the change.
    EXPECT_NE(r.err.find("threads: 1 intra-op, 1 inter-op (--threads)"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("invalid thread count"), std::string::npos) << r.err;
    if (c.ok)
      EXPECT_EQ(r.rc, 0) << r.err;
    else
      EXPECT_TRUE(r.rc == 0 || r.rc == 1) << r.err;  // a prism error about another input, not a usage error
  }
}

TEST_F(ThreadsCli, InspectReportsTheEffectiveCount) {
  for (int n : {1, 2}) {
    auto r = run("inspect " + model + " --threads " + std::to_string(n), dir);
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_NE(r.out.find("threads:       " + std::to_string(n) + " "), std::string::npos) << r.out;
  }
  // generate's summary reports the count the engine ran with.
  auto r = run("generate " + model + " --ids \"1 2 3\" --max-new-tokens 2 --slots 1 --threads 2", dir);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find(", 2 threads,"), std::string::npos) << r.err;
}

TEST_F(ThreadsCli, BadValueIsOneLineError) {
  // Every bad form on one command, one bad value on each of the others (each run starts a process).
  const auto cmds = commands();
  for (size_t i = 0; i < cmds.size(); ++i) {
    const auto& c = cmds[i];
    const std::vector<std::string> values =
        i == 0 ? std::vector<std::string>{"0", "-1", "x", "1.5", "\"\""} : std::vector<std::string>{"0"};
    for (const auto& bad : values) {
      SCOPED_TRACE(c.args + " --threads " + bad);
      auto r = run(c.args + " --threads " + bad, dir);
      EXPECT_EQ(r.rc, 1);
      const std::string shown = bad == "\"\"" ? "" : bad;
      EXPECT_EQ(r.err, "prism-train: error: --threads: invalid thread count (expected an integer >= 1, found \"" +
                           shown + "\")\n");
    }
  }
}

}  // namespace
