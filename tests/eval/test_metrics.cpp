// pass@k and the suite aggregation against values computed independently: the table below was
// produced with Python's exact fractions, 1 - Fraction(comb(n-c, k), comb(n, k)).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "prism/core/error.h"
#include "prism/eval/metrics.h"

namespace prism::eval {
namespace {

struct Row {
  int64_t n, c, k;
  double want;
};

TEST(PassAtK, MatchesExactFractions) {
  const Row rows[] = {
      {1, 0, 1, 0.0},                   // 0
      {1, 1, 1, 1.0},                   // 1
      {5, 2, 1, 0.4},                   // 2/5
      {5, 2, 2, 0.7},                   // 7/10
      {5, 2, 4, 1.0},                   // n - c < k
      {5, 2, 3, 0.9},                   // 9/10
      {16, 1, 1, 0.0625},               // 1/16
      {16, 1, 8, 0.5},                  // 1/2
      {16, 15, 2, 1.0},                 // 1
      {20, 0, 10, 0.0},                 // 0
      {10, 3, 5, 0.9166666666666666},   // 11/12
      {100, 7, 1, 0.07},                // 7/100
      {100, 7, 10, 0.5332595856827856}, // 6466807/12126940
      {100, 7, 50, 0.9937601736299512}, // 3663/3686
      {64, 5, 16, 0.7754211679383546},  // 41057/52948
  };
  for (const auto& r : rows) EXPECT_NEAR(pass_at_k(r.n, r.c, r.k), r.want, 1e-14) << r.n << " " << r.c << " " << r.k;
  // pass@1 is the fraction correct; large n does not overflow.
  EXPECT_NEAR(pass_at_k(100000, 31234, 1), 0.31234, 1e-12);
  EXPECT_THROW(pass_at_k(4, 5, 1), Error);
  EXPECT_THROW(pass_at_k(4, 1, 5), Error);
  EXPECT_THROW(pass_at_k(4, 1, 0), Error);
}

TEST(Suite, ScoresDomainsAndMacroAverageByHand) {
  // math: bench A (2 problems, n=4: 1 and 4 correct) -> pass@1 = (0.25 + 1)/2 = 0.625,
  //       pass@2 = ((1 - C(3,2)/C(4,2)) + 1)/2 = (0.5 + 1)/2 = 0.75;
  //       bench B (1 problem, n=4, 2 correct) -> pass@1 0.5. math avg = (0.625 + 0.5)/2 = 0.5625.
  // code: bench C (1 problem, n=2, 0 correct) -> 0 (pass@4 not reported: n < 4). code avg 0.
  // macro = (0.5625 + 0)/2 = 0.28125.
  std::vector<BenchmarkScore> b;
  b.push_back(score_benchmark("A", "math", {{"a1", 4, 1, 10.0}, {"a2", 4, 4, 40.0}}, {1, 2, 4}));
  b.push_back(score_benchmark("B", "math", {{"b1", 4, 2, 20.0}}, {1}));
  b.push_back(score_benchmark("C", "code", {{"c1", 2, 0, 0.0}}, {1, 4}));
  EXPECT_NEAR(b[0].pass_at.at(1), 0.625, 1e-15);
  EXPECT_NEAR(b[0].pass_at.at(2), 0.75, 1e-15);
  EXPECT_NEAR(b[0].pass_at.at(4), 1.0, 1e-15);  // k = n: any correct sample makes pass@n = 1
  EXPECT_NEAR(b[0].mean_reward, 50.0 / 8, 1e-15);
  EXPECT_EQ(b[2].pass_at.count(4), 0u);
  auto s = aggregate(b);
  EXPECT_NEAR(s.domain_avg.at("math"), 0.5625, 1e-15);
  EXPECT_NEAR(s.domain_avg.at("code"), 0.0, 1e-15);
  EXPECT_NEAR(s.macro_avg, 0.28125, 1e-15);
  auto j = nlohmann::json::parse(to_json(s));
  EXPECT_NEAR(j["macro_avg"].get<double>(), 0.28125, 1e-15);
  EXPECT_EQ(j["benchmarks"][0]["pass_at"]["2"].get<double>(), 0.75);
  auto md = to_markdown(s);
  EXPECT_NE(md.find("| A | math | 2 | 8 | 62.50 | 75.00 |"), std::string::npos) << md;
  EXPECT_NE(md.find("**28.12**"), std::string::npos) << md;
}

}  // namespace
}  // namespace prism::eval
