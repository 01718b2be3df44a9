#include "prism/eval/metrics.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <set>
#include <sstream>

#include "prism/core/error.h"

namespace prism::eval {

double pass_at_k(int64_t n, int64_t c, int64_t k) {
  PRISM_CHECK(n >= 1 && c >= 0 && c <= n, "pass@k: need 0 <= correct <= n and n >= 1, got n=", n, " correct=", c);
  PRISM_CHECK(k >= 1 && k <= n, "pass@", k, ": k must be in [1, n=", n, "]");
  if (n - c < k) return 1.0;
  // C(n-c, k) / C(n, k) = prod_{i=n-c+1..n} (1 - k / i)
  double p = 1.0;
  for (int64_t i = n - c + 1; i <= n; ++i) p *= 1.0 - static_cast<double>(k) / static_cast<double>(i);
  return 1.0 - p;
}

BenchmarkScore score_benchmark(const std::string& name, const std::string& domain,
                               const std::vector<ProblemResult>& problems, const std::vector<int64_t>& ks) {
  BenchmarkScore s;
  s.name = name;
  s.domain = domain;
  s.problems = static_cast<int64_t>(problems.size());
  int64_t min_n = problems.empty() ? 0 : problems.front().n;
  double reward_sum = 0;
  for (const auto& p : problems) {
    PRISM_CHECK(p.n >= 1 && p.correct >= 0 && p.correct <= p.n, name, ": problem ", p.id, ": ", p.correct,
                " correct of ", p.n, " samples");
    min_n = std::min(min_n, p.n);
    s.samples += p.n;
    s.mean_at_n += static_cast<double>(p.correct) / static_cast<double>(p.n);
    reward_sum += p.reward_sum;
  }
  if (s.problems == 0) return s;
  s.mean_at_n /= static_cast<double>(s.problems);
  s.mean_reward = s.samples > 0 ? reward_sum / static_cast<double>(s.samples) : 0.0;
  for (int64_t k : std::set<int64_t>(ks.begin(), ks.end())) {
    if (k < 1 || k > min_n) continue;
    double acc = 0;
    for (const auto& p : problems) acc += pass_at_k(p.n, p.correct, k);
    s.pass_at[k] = acc / static_cast<double>(s.problems);
  }
  return s;
}

namespace {
double headline(const BenchmarkScore& b) {
  auto it = b.pass_at.find(1);
  return it != b.pass_at.end() ? it->second : b.mean_at_n;
}
}  // namespace

SuiteScore aggregate(std::vector<BenchmarkScore> benchmarks) {
  SuiteScore s;
  s.benchmarks = std::move(benchmarks);
  std::map<std::string, std::pair<double, int>> acc;
  for (const auto& b : s.benchmarks) {
    auto& a = acc[b.domain];
    a.first += headline(b);
    a.second += 1;
  }
  for (const auto& [d, a] : acc) s.domain_avg[d] = a.first / a.second;
  for (const auto& [d, v] : s.domain_avg) s.macro_avg += v;
  if (!s.domain_avg.empty()) s.macro_avg /= static_cast<double>(s.domain_avg.size());
  return s;
}

namespace {
std::string pct(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", 100.0 * v);
  return buf;
}
}  // namespace

std::string to_markdown(const SuiteScore& s) {
  std::set<int64_t> ks;
  for (const auto& b : s.benchmarks)
    for (const auto& [k, v] : b.pass_at) ks.insert(k);
  std::ostringstream o;
  o << "| benchmark | domain | problems | samples |";
  for (auto k : ks) o << " pass@" << k << " |";
  o << " mean@n | mean reward |\n|---|---|---:|---:|";
  for (size_t i = 0; i < ks.size(); ++i) o << "---:|";
  o << "---:|---:|\n";
  for (const auto& b : s.benchmarks) {
    o << "| " << b.name << " | " << b.domain << " | " << b.problems << " | " << b.samples << " |";
    for (auto k : ks) {
      auto it = b.pass_at.find(k);
      o << " " << (it == b.pass_at.end() ? std::string("–") : pct(it->second)) << " |";
    }
    char r[32];
    std::snprintf(r, sizeof r, "%.4f", b.mean_reward);
    o << " " << pct(b.mean_at_n) << " | " << r << " |\n";
  }
  o << "\n| domain | score (pass@1, %) |\n|---|---:|\n";
  for (const auto& [d, v] : s.domain_avg) o << "| " << d << " | " << pct(v) << " |\n";
  o << "| **macro average** | **" << pct(s.macro_avg) << "** |\n";
  return o.str();
}

std::string to_json(const SuiteScore& s) {
  nlohmann::json j;
  j["benchmarks"] = nlohmann::json::array();
  for (const auto& b : s.benchmarks) {
    nlohmann::json jb{{"name", b.name}, {"domain", b.domain}, {"problems", b.problems}, {"samples", b.samples},
                      {"mean_at_n", b.mean_at_n}, {"mean_reward", b.mean_reward}};
    nlohmann::json pk = nlohmann::json::object();
    for (const auto& [k, v] : b.pass_at) pk[std::to_string(k)] = v;
    jb["pass_at"] = pk;
    j["benchmarks"].push_back(jb);
  }
  j["domain_avg"] = s.domain_avg;
  j["macro_avg"] = s.macro_avg;
  return j.dump(2);
}

}  // namespace prism::eval
