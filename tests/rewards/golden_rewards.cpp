// Golden corpora of the rewards verifiers (built by tests/fixtures/make_math_golden.py):
//  * math: >= 2,000 (gold, prediction) pairs from MATH-500 / GSM8K answers, labelled by
//    Math-Verify; prism must agree on >= 99% and every disagreement is printed (and explained in
//    docs/rewards.md);
//  * mc: ARC-Challenge / SciQ gold letters in generated phrasings, wrong letters and hedges.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "prism/rewards/math.h"
#include "prism/rewards/mc.h"

namespace {

std::string golden_dir() {
  if (const char* e = std::getenv("PRISM_REWARDS_GOLDEN")) return e;
  return PRISM_REWARDS_GOLDEN_DIR;
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << path << " is missing: run `ctest -R rewards_golden_generate` (make_math_golden.py)";
  std::vector<nlohmann::json> rows;
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

TEST(MathGolden, AgreesWithMathVerify) {
  auto rows = read_jsonl(golden_dir() + "/math_golden.jsonl");
  ASSERT_GE(rows.size(), 2000u);
  std::vector<prism::rewards::Sample> samples;
  for (const auto& r : rows) {
    prism::rewards::Sample s;
    s.domain = "math";
    s.completion = r.at("completion").get<std::string>();
    s.answer = r.at("gold").get<std::string>();
    samples.push_back(std::move(s));
  }
  prism::rewards::MathOptions opts;
  opts.workers = 2;
  prism::rewards::MathVerifier v(opts);
  auto verdicts = v.verify_batch(samples);
  std::size_t agree = 0, positives = 0, negatives = 0;
  std::map<std::string, int> by_intent;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    bool label = rows[i].at("label").get<bool>();
    (label ? positives : negatives)++;
    if (verdicts[i].correct == label) {
      ++agree;
      continue;
    }
    ++by_intent[rows[i].at("intent").get<std::string>()];
    std::cout << "disagreement: math-verify=" << label << " prism=" << verdicts[i].reason
              << " gold=" << rows[i].at("gold").get<std::string>() << " pred=" << rows[i].at("pred").get<std::string>()
              << " (" << rows[i].at("intent").get<std::string>() << ", " << rows[i].at("source").get<std::string>()
              << ")\n";
  }
  double rate = static_cast<double>(agree) / static_cast<double>(rows.size());
  std::cout << "math golden: " << agree << "/" << rows.size() << " agree (" << 100.0 * rate << "%), " << positives
            << " equal and " << negatives << " not equal per Math-Verify; " << v.symbolic_calls()
            << " comparisons needed GiNaC\n";
  // Both classes must be well represented, or agreement would say little.
  EXPECT_GE(positives, 1000u);
  EXPECT_GE(negatives, 1000u);
  EXPECT_GE(rate, 0.99);
}

TEST(McGolden, GoldLettersInManyPhrasings) {
  auto rows = read_jsonl(golden_dir() + "/mc_golden.jsonl");
  ASSERT_GE(rows.size(), 1000u);
  prism::rewards::McVerifier v;
  std::map<std::string, std::pair<int, int>> per_expect;  // expect -> (ok, total)
  int shown = 0;
  for (const auto& r : rows) {
    prism::rewards::Sample s;
    s.domain = "mc";
    s.completion = r.at("completion").get<std::string>();
    s.answer = r.at("gold").get<std::string>();
    s.choices.resize(r.at("n_choices").get<int>());
    auto verdict = v.verify(s);
    std::string expect = r.at("expect").get<std::string>();
    bool ok = expect == "correct" ? verdict.correct
              : expect == "wrong" ? (!verdict.correct && verdict.reason == "wrong_choice")
                                  : (!verdict.correct && verdict.reason == "multiple_choices");
    auto& [n_ok, n] = per_expect[expect];
    ++n;
    n_ok += ok;
    if (!ok && shown++ < 50)
      std::cout << "mc mismatch: expect=" << expect << " got=" << verdict.reason << " extracted=" << verdict.extracted
                << " gold=" << s.answer << " completion=" << s.completion << "\n";
  }
  for (const auto& [expect, c] : per_expect) {
    std::cout << "mc golden " << expect << ": " << c.first << "/" << c.second << "\n";
    EXPECT_EQ(c.first, c.second) << expect;
  }
  EXPECT_EQ(per_expect.size(), 3u);
}

}  // namespace
