// `prism-train reward` end to end: scores, per-line errors with line numbers, the summary, the
// atomic output, and a bad config reported as one line.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

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

int run(const std::string& args, const std::string& dir) {
  std::string cmd = fs::join(prism::test::bin_dir(), "prism-train") + " reward " + args + " >" + dir + "/out.txt 2>" +
                    dir + "/err.txt";
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

TEST(RewardCli, ScoresReportsAndSkips) {
  auto dir = prism::test::make_temp_dir("reward_cli");
  {
    std::ofstream f(dir + "/in.jsonl");
    f << R"J({"domain": "math", "completion": "<think>ok</think> so $\\boxed{\\frac{1}{2}}$", "answer": "0.5", "id": 7})J"
      << "\n"
      << R"J({"domain": "math", "completion": "<think>ok</think> \\boxed{3}", "answer": 4, "truncated": true})J"
      << "\n"
      << "not json\n"
      << R"J({"domain": "mc", "completion": "<think>t</think> Answer: (c)", "answer": "C"})J"
      << "\n"
      << R"J({"domain": "mc"})J"
      << "\n"
      << R"J({"domain": "code", "completion": "x", "tests": ["assert True"]})J"
      << "\n";
  }
  ASSERT_EQ(run("-i " + dir + "/in.jsonl -o " + dir + "/scored.jsonl --workers 1 -c " + prism::test::source_dir() +
                    "/configs/rewards/default.yaml",
                dir),
            0)
      << slurp(dir + "/err.txt");
  std::string err = slurp(dir + "/err.txt"), out = slurp(dir + "/out.txt"), scored = slurp(dir + "/scored.jsonl");
  EXPECT_NE(err.find("in.jsonl:3: skipped: not valid JSON"), std::string::npos) << err;
  EXPECT_NE(err.find("in.jsonl:5: skipped: missing 'completion'"), std::string::npos) << err;
  EXPECT_NE(out.find("skipped 2 malformed"), std::string::npos) << out;
  EXPECT_NE(out.find("math"), std::string::npos) << out;
  std::istringstream lines(scored);
  std::string l1, l2, l3, l4, extra;
  std::getline(lines, l1);
  std::getline(lines, l2);
  std::getline(lines, l3);
  std::getline(lines, l4);
  EXPECT_FALSE(std::getline(lines, extra));
  // input fields kept in order, verdict appended (scale 10, stop-token penalty 1 in default.yaml)
  EXPECT_EQ(l1.rfind(R"J({"domain":"math",)J", 0), 0u) << l1;
  EXPECT_NE(l1.find(R"J("id":7,"reward":10.0,"correct":true,"reason":"equal"})J"), std::string::npos) << l1;
  EXPECT_NE(l2.find(R"("reward":-1.0,"correct":false,"reason":"not_equal")"), std::string::npos) << l2;
  EXPECT_NE(l3.find(R"("reward":10.0,"correct":true)"), std::string::npos) << l3;
  // code runs in the sandbox: "x" raises NameError, and default.yaml's format gate wraps the reason
  EXPECT_NE(l4.find(R"("correct":false,"reason":"format: )"), std::string::npos) << l4;
  for (const auto& name : fs::list_dir(dir)) EXPECT_EQ(name.find(".tmp"), std::string::npos) << name;

  // a bad config is one error line naming the key, exit 1
  {
    std::ofstream f(dir + "/bad.yaml");
    f << "domains:\n  - {domain: math, verifier: math, shaping: {scale: -2}}\n";
  }
  EXPECT_EQ(run("-i " + dir + "/in.jsonl -o " + dir + "/x.jsonl -c " + dir + "/bad.yaml", dir), 1);
  err = slurp(dir + "/err.txt");
  EXPECT_NE(err.find("prism-train: error: "), std::string::npos) << err;
  EXPECT_NE(err.find("scale"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir + "/x.jsonl"));
  fs::remove_all(dir);
}

}  // namespace
