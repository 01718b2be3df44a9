// Evaluation scores: the unbiased pass@k estimator, mean@n, and the study's aggregation
// (per-benchmark -> per-domain average -> macro average over domains).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace prism::eval {

/// Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k) for n samples of which c are
/// correct, computed as 1 - prod_{i=n-c+1..n} (1 - k/i) so large n cannot overflow. Requires
/// 0 <= c <= n and 1 <= k <= n (throws otherwise); n - c < k gives exactly 1.
double pass_at_k(int64_t n, int64_t c, int64_t k);

/// Per-problem results of one benchmark: samples drawn and samples correct, and the mean reward.
struct ProblemResult {
  std::string id;
  int64_t n = 0;
  int64_t correct = 0;
  double reward_sum = 0;
};

struct BenchmarkScore {
  std::string name;
  std::string domain;
  int64_t problems = 0;
  int64_t samples = 0;
  std::map<int64_t, double> pass_at;  ///< k -> mean over problems of pass@k (k <= every problem's n)
  double mean_at_n = 0;               ///< mean over problems of correct/n (avg@n)
  double mean_reward = 0;             ///< mean over samples of the shaped reward
};

/// Scores one benchmark's problems for every k in `ks` that no problem's n is below (others are
/// left out of pass_at rather than reported wrongly).
BenchmarkScore score_benchmark(const std::string& name, const std::string& domain,
                               const std::vector<ProblemResult>& problems, const std::vector<int64_t>& ks);

struct SuiteScore {
  std::vector<BenchmarkScore> benchmarks;
  std::map<std::string, double> domain_avg;  ///< domain -> mean over its benchmarks of pass@1 (or mean@n if k=1 absent)
  double macro_avg = 0;                      ///< mean over domains of domain_avg (the paper's AVG)
};

/// The paper's aggregation: per domain the plain mean of its benchmarks' headline score (pass@1),
/// then the mean over domains.
SuiteScore aggregate(std::vector<BenchmarkScore> benchmarks);

/// Markdown tables (per benchmark: problems, samples, pass@k columns, mean@n; per domain; macro).
std::string to_markdown(const SuiteScore& s);
/// The same as JSON text.
std::string to_json(const SuiteScore& s);

}  // namespace prism::eval
