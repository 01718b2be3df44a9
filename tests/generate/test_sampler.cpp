// The sampler against definitions written out here in float64 (the oracle): temperature, top-k
// (k highest, ties to the lower id), top-p (smallest prefix reaching p, on the top-k renormalised
// distribution), min-p (probability >= min_p x the top probability), greedy (lowest id among the
// maxima). Empirical frequencies over many independent keys (Gumbel-max draws) must match the processed
// distribution: a chi-square statistic over the kept tokens below df + 6 sqrt(2 df) (about a
// 1e-6 false-alarm rate for the df used here), and never a removed token.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "prism/generate/sampler.h"

using prism::generate::sample_key;
using prism::generate::uniform_noise;
using prism::generate::uniform_noise_scalar;
using prism::generate::processed_logprobs;
using prism::generate::RowParams;
using prism::generate::sample_tokens;

namespace {

// The processed distribution by the definitions, in double.
std::vector<double> oracle(const std::vector<double>& logits, const RowParams& p) {
  const size_t V = logits.size();
  std::vector<double> out(V, 0.0);
  if (p.temperature == 0.0) {
    out[std::max_element(logits.begin(), logits.end()) - logits.begin()] = 1.0;  // first maximum
    return out;
  }
  std::vector<double> s(V);
  for (size_t i = 0; i < V; ++i) s[i] = logits[i] / p.temperature;
  std::vector<size_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return s[a] > s[b]; });
  std::vector<bool> keep(V, true);
  if (p.top_k > 0)
    for (size_t r = static_cast<size_t>(p.top_k); r < V; ++r) keep[order[r]] = false;
  auto softmax_kept = [&] {
    std::vector<double> q(V, 0.0);
    double mx = -1e300, z = 0;
    for (size_t i = 0; i < V; ++i)
      if (keep[i]) mx = std::max(mx, s[i]);
    for (size_t i = 0; i < V; ++i)
      if (keep[i]) z += q[i] = std::exp(s[i] - mx);
    for (auto& v : q) v /= z;
    return q;
  };
  if (p.top_p < 1.0) {
    auto q = softmax_kept();
    double before = 0;
    for (size_t r = 0; r < V; ++r) {
      const size_t i = order[r];
      if (!keep[i]) continue;
      if (before >= p.top_p) keep[i] = false;
      before += q[i];
    }
  }
  if (p.min_p > 0.0) {
    auto q = softmax_kept();
    const double top = *std::max_element(q.begin(), q.end());
    for (size_t i = 0; i < V; ++i)
      if (q[i] < p.min_p * top) keep[i] = false;
  }
  return softmax_kept();
}

const std::vector<double> kLogits{2.0, 1.5, -0.3, 0.7, 1.5, -2.0, 0.1, 0.9, -1.0, 0.4, 1.1, -0.5};

TEST(Sampler, ProcessedDistributionMatchesTheDefinitions) {
  const std::vector<RowParams> cases{{1.0, 0, 1.0, 0.0},  {0.7, 0, 1.0, 0.0},  {1.3, 5, 1.0, 0.0},
                                     {1.0, 0, 0.8, 0.0},  {0.8, 6, 0.75, 0.0}, {1.0, 0, 1.0, 0.2},
                                     {1.2, 8, 0.9, 0.15}, {0.0, 0, 1.0, 0.0},  {0.5, 1, 1.0, 0.0}};
  std::vector<float> row(kLogits.begin(), kLogits.end());
  const int64_t V = static_cast<int64_t>(row.size()), B = static_cast<int64_t>(cases.size());
  auto logits = at::tensor(row).view({1, V}).expand({B, V}).contiguous();
  auto lp = processed_logprobs(logits, cases);
  for (int64_t b = 0; b < B; ++b) {
    auto want = oracle(kLogits, cases[b]);
    for (int64_t v = 0; v < V; ++v) {
      const double got = std::exp(lp[b][v].item<double>());
      EXPECT_NEAR(got, want[v], 1e-6) << "case " << b << " token " << v;
    }
  }
}

TEST(Sampler, EmpiricalFrequenciesMatchTheProcessedDistribution) {
  const std::vector<RowParams> cases{{1.0, 0, 1.0, 0.0}, {0.7, 4, 1.0, 0.0}, {1.0, 0, 0.8, 0.0},
                                     {1.0, 0, 1.0, 0.25}, {1.5, 7, 0.9, 0.05}};
  const int64_t draws = 40000, V = static_cast<int64_t>(kLogits.size());
  std::vector<float> row(kLogits.begin(), kLogits.end());
  for (size_t c = 0; c < cases.size(); ++c) {
    auto want = oracle(kLogits, cases[c]);
    std::vector<RowParams> params(draws, cases[c]);
    std::vector<uint64_t> u(draws);
    for (int64_t i = 0; i < draws; ++i) u[i] = sample_key(1234 + c, static_cast<uint64_t>(i), 0);
    auto logits = at::tensor(row).view({1, V}).expand({draws, V}).contiguous();
    auto res = sample_tokens(logits, params, u);
    std::vector<int64_t> count(V, 0);
    auto tok = res.tokens.contiguous();
    for (int64_t i = 0; i < draws; ++i) ++count[tok[i].item<int64_t>()];
    double chi2 = 0;
    int kept = 0;
    for (int64_t v = 0; v < V; ++v) {
      if (want[v] == 0.0) {
        EXPECT_EQ(count[v], 0) << "case " << c << ": removed token " << v << " was drawn";
        continue;
      }
      ++kept;
      const double e = want[v] * draws;
      chi2 += (count[v] - e) * (count[v] - e) / e;
    }
    const double df = kept - 1;
    EXPECT_LT(chi2, df + 6 * std::sqrt(2 * df)) << "case " << c << ": chi-square " << chi2 << " with " << df << " df";
    // the sampling log-prob is the processed distribution's, the raw one log_softmax of the logits
    double z = 0;
    for (double l : kLogits) z += std::exp(l);
    for (int64_t i = 0; i < 50; ++i) {
      const int64_t t = tok[i].item<int64_t>();
      EXPECT_NEAR(res.sampling_logprobs[i].item<double>(), std::log(want[t]), 1e-5);
      EXPECT_NEAR(res.logprobs[i].item<double>(), kLogits[t] - std::log(z), 1e-5);
    }
  }
}

TEST(Sampler, TopPKeepsTheSmallestPrefixReachingP) {
  // probabilities 0.4, 0.3, 0.2, 0.1 (logits = log p)
  std::vector<float> lg{std::log(0.4f), std::log(0.3f), std::log(0.2f), std::log(0.1f)};
  auto logits = at::tensor(lg).view({1, 4});
  auto kept = [&](double p) {
    auto lp = processed_logprobs(logits, {{1.0, 0, p, 0.0}});
    std::set<int64_t> s;
    for (int64_t v = 0; v < 4; ++v)
      if (std::isfinite(lp[0][v].item<double>())) s.insert(v);
    return s;
  };
  EXPECT_EQ(kept(0.3), (std::set<int64_t>{0}));
  EXPECT_EQ(kept(0.4 - 1e-4), (std::set<int64_t>{0}));
  EXPECT_EQ(kept(0.4 + 1e-4), (std::set<int64_t>{0, 1}));
  EXPECT_EQ(kept(0.65), (std::set<int64_t>{0, 1}));
  EXPECT_EQ(kept(0.75), (std::set<int64_t>{0, 1, 2}));
  EXPECT_EQ(kept(0.95), (std::set<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(kept(1.0), (std::set<int64_t>{0, 1, 2, 3}));
}

TEST(Sampler, TiesGoToTheLowerTokenId) {
  auto logits = at::tensor(std::vector<float>{0.0f, 1.0f, 1.0f, 1.0f, 0.5f}).view({1, 5});
  auto kept = [&](const RowParams& p) {
    auto lp = processed_logprobs(logits, {p});
    std::set<int64_t> s;
    for (int64_t v = 0; v < 5; ++v)
      if (std::isfinite(lp[0][v].item<double>())) s.insert(v);
    return s;
  };
  EXPECT_EQ(kept({1.0, 2, 1.0, 0.0}), (std::set<int64_t>{1, 2}));    // top-k 2 of three tied maxima
  EXPECT_EQ(kept({1.0, 0, 0.5, 0.0}), (std::set<int64_t>{1, 2}));    // each tied token ~0.27: two reach 0.5
  EXPECT_EQ(kept({1.0, 0, 1.0, 0.99}), (std::set<int64_t>{1, 2, 3}));  // min-p keeps every tie of the top
  auto g = sample_tokens(logits, {{0.0, 0, 1.0, 0.0}}, {sample_key(0, 0, 0)});
  EXPECT_EQ(g.tokens[0].item<int64_t>(), 1);  // greedy: lowest id among the maxima
  EXPECT_EQ(g.sampling_logprobs[0].item<float>(), 0.0f);
}

TEST(Sampler, RowsAreIndependentOfTheirNeighbours) {
  // A row's token depends on its own logits, parameters and uniform only.
  const int64_t V = static_cast<int64_t>(kLogits.size());
  std::vector<float> row(kLogits.begin(), kLogits.end());
  auto one = at::tensor(row).view({1, V});
  for (int i = 0; i < 200; ++i) {
    const uint64_t u = sample_key(9, static_cast<uint64_t>(i), 3);
    const RowParams p{1.0, 0, 1.0, 0.0};
    auto alone = sample_tokens(one, {p}, {u}).tokens[0].item<int64_t>();
    auto batch = sample_tokens(at::cat({one, one * 2, one}), {{0.5, 3, 0.7, 0.1}, {0.0, 0, 1.0, 0.0}, p},
                               {sample_key(1, 2, 3), sample_key(4, 5, 6), u})
                     .tokens[2]
                     .item<int64_t>();
    ASSERT_EQ(alone, batch) << "draw " << i;
  }
}

// A 1e-6 relative change of the logits (what another batch shape or kernel can cause) must not
// move draws: with a 49152-token vocabulary, inverting the CDF would move about 10% of them.
TEST(Sampler, DrawsAreStableUnderTinyLogitChanges) {
  at::manual_seed(3);
  const int64_t V = 49152, draws = 512;
  auto base = at::randn({1, V}) * 3;
  auto moved = base * (1 + 1e-6 * at::randn({1, V}));
  std::vector<RowParams> params(draws, RowParams{1.0, 0, 1.0, 0.0});
  std::vector<uint64_t> keys(draws);
  for (int64_t i = 0; i < draws; ++i) keys[i] = sample_key(77, static_cast<uint64_t>(i), 0);
  auto a = sample_tokens(base.expand({draws, V}).contiguous(), params, keys).tokens;
  auto b = sample_tokens(moved.expand({draws, V}).contiguous(), params, keys).tokens;
  EXPECT_LE(a.ne(b).sum().item<int64_t>(), 1) << "draws moved by a 1e-6 change of the logits";
  EXPECT_GT(std::get<0>(at::_unique(a)).numel(), 200) << "draws must still spread over the vocabulary";
}

TEST(Sampler, NoiseIsACounterBasedUniformStream) {
  EXPECT_EQ(sample_key(1, 2, 3), sample_key(1, 2, 3));
  EXPECT_NE(sample_key(1, 2, 3), sample_key(1, 2, 4));
  EXPECT_NE(sample_key(1, 2, 3), sample_key(1, 3, 3));
  EXPECT_NE(sample_key(1, 2, 3), sample_key(2, 2, 3));
  // the vectorised noise equals the scalar definition (uint64 arithmetic) bit for bit
  std::vector<uint64_t> keys{sample_key(7, 0, 0), sample_key(7, 1, 0), ~0ULL, 0};
  const int64_t V = 50000;
  auto u = uniform_noise(keys, V, at::kCPU);
  for (size_t b = 0; b < keys.size(); ++b)
    for (int64_t t : {int64_t{0}, int64_t{1}, int64_t{12345}, V - 1})
      ASSERT_EQ(u[b][t].item<double>(), uniform_noise_scalar(keys[b], t)) << "row " << b << " token " << t;
  // mean and variance of 2e5 draws: 1/2 and 1/12 within 5 standard errors; all in (0, 1)
  const int64_t n = static_cast<int64_t>(keys.size()) * V;
  EXPECT_GT(u.min().item<double>(), 0.0);
  EXPECT_LT(u.max().item<double>(), 1.0);
  EXPECT_NEAR(u.mean().item<double>(), 0.5, 5 * std::sqrt(1.0 / 12 / n));
  EXPECT_NEAR(u.var().item<double>(), 1.0 / 12, 5 * std::sqrt(1.0 / 180 / n));
  // the CPU sampler's fused loop draws what the tensor formula (other devices) gives
  at::manual_seed(5);
  auto logits = at::randn({4, 1000}) * 2;
  std::vector<RowParams> params(4, RowParams{0.8, 0, 1.0, 0.0});
  auto got = sample_tokens(logits, params, keys).tokens;
  auto want = (logits.to(at::kDouble) / 0.8 - at::log(-at::log(uniform_noise(keys, 1000, at::kCPU)))).argmax(1);
  EXPECT_TRUE(at::equal(got, want)) << got << want;
  // Wide and narrow logit ranges (the CPU loop skips the logs of tokens that provably cannot win),
  // a removed-token mask, and many rows: still exactly the tensor formula's argmax.
  std::vector<uint64_t> many;
  for (uint64_t i = 0; i < 64; ++i) many.push_back(prism::generate::sample_key(11, i, 3));
  for (double spread : {0.1, 3.0, 20.0}) {
    auto lg = at::randn({64, 3000}) * spread;
    lg.index_put_({at::indexing::Slice(), at::indexing::Slice(0, 100)}, -std::numeric_limits<float>::infinity());
    std::vector<RowParams> p1(64, RowParams{1.0, 0, 1.0, 0.0});
    auto g = sample_tokens(lg, p1, many).tokens;
    auto w = (lg.to(at::kDouble) - at::log(-at::log(uniform_noise(many, 3000, at::kCPU)))).argmax(1);
    EXPECT_TRUE(at::equal(g, w)) << "spread " << spread;
  }
}

}  // namespace
