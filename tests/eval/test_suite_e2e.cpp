// `prism-train eval` end to end on the bundled tiny model and configs/eval/toy.yaml: the report's
// numbers are recomputed here from the raw samples with an independent pass@k (exact integer
// binomials) and an independent correctness check (the completion's last integer is 7), and the
// unreachable benchmark scores exactly 0.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <map>
#include <regex>
#include <sstream>

#include "distributed/spawn_util.h"
#include "prism/core/fs.h"
#include "util/test_util.h"

namespace {

namespace fs = prism::fs;

double binom(int64_t n, int64_t k) {
  if (k < 0 || k > n) return 0;
  double r = 1;
  for (int64_t i = 1; i <= k; ++i) r = r * static_cast<double>(n - k + i) / static_cast<double>(i);
  return r;
}

TEST(EvalSuiteE2E, ReportMatchesTheRawSamples) {
  const auto src = prism::test::source_dir();
  const auto dir = prism::test::make_temp_dir("prism-eval-e2e");
  const auto out = fs::join(dir, "report");
  const auto log = fs::join(dir, "eval.log");
  std::vector<std::string> cmd{fs::join(prism::test::bin_dir(), "prism-train"), "eval",
                               fs::join(src, "configs/tiny/llama-tiny"), "--suite", fs::join(src, "configs/eval/toy.yaml"),
                               "--set", "benchmarks[0].path=" + fs::join(src, "configs/rl/data/toy-sevens.jsonl"),
                               "--set", "benchmarks[1].path=" + fs::join(src, "configs/eval/data/toy-unreachable.jsonl"),
                               "-o", out, "--threads", "1"};
  auto pid = prism::test::dist::spawn(cmd, {}, log);
  auto r = prism::test::dist::wait_all({pid}, {log}, 300);
  ASSERT_EQ(r.procs[0].code, 0) << r.describe();

  // Raw samples: per (benchmark, problem) the number correct, checked independently.
  std::map<std::string, std::map<std::string, std::pair<int64_t, int64_t>>> per;  // bench -> id -> (n, c)
  std::istringstream is(fs::read_file(fs::join(out, "samples.jsonl")));
  const std::regex ints("[0-9]+");
  int64_t lines = 0;
  for (std::string line; std::getline(is, line); ++lines) {
    auto j = nlohmann::json::parse(line);
    const auto bench = j["benchmark"].get<std::string>();
    const auto text = j["completion"].get<std::string>();
    std::string last;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), ints); it != std::sregex_iterator(); ++it)
      last = it->str();
    const bool want = bench == "sevens" && !last.empty() && std::stoll(last.substr(0, 18)) == 7;
    EXPECT_EQ(j["correct"].get<bool>(), want) << line;
    auto& [n, c] = per[bench][j["id"].get<std::string>()];
    n += 1;
    c += want ? 1 : 0;
  }
  EXPECT_EQ(lines, 2 * 16 * 4);

  auto rep = nlohmann::json::parse(fs::read_file(fs::join(out, "report.json")));
  std::map<std::string, nlohmann::json> bench;
  for (const auto& b : rep["benchmarks"]) bench[b["name"].get<std::string>()] = b;
  ASSERT_EQ(bench.size(), 2u);
  for (int64_t k : {1, 2, 4}) {
    double want = 0;
    for (const auto& [id, nc] : per["sevens"]) want += 1 - binom(nc.first - nc.second, k) / binom(nc.first, k);
    want /= static_cast<double>(per["sevens"].size());
    EXPECT_NEAR(bench["sevens"]["pass_at"][std::to_string(k)].get<double>(), want, 1e-12) << "pass@" << k;
  }
  EXPECT_EQ(bench["unreachable"]["pass_at"]["1"].get<double>(), 0.0);
  EXPECT_EQ(bench["unreachable"]["pass_at"]["4"].get<double>(), 0.0);
  EXPECT_EQ(bench["sevens"]["problems"].get<int64_t>(), 16);
  EXPECT_EQ(bench["sevens"]["samples"].get<int64_t>(), 64);
  // Both benchmarks are math: the domain score is their mean, and the only domain is the macro.
  const double math = (bench["sevens"]["pass_at"]["1"].get<double>() + 0.0) / 2;
  EXPECT_NEAR(rep["domain_avg"]["math"].get<double>(), math, 1e-12);
  EXPECT_NEAR(rep["macro_avg"].get<double>(), math, 1e-12);
  const auto md = fs::read_file(fs::join(out, "report.md"));
  EXPECT_NE(md.find("| unreachable | math | 16 | 64 | 0.00 |"), std::string::npos) << md;
  fs::remove_all(dir);
}

}  // namespace
