// Math verifications per second of prism::rewards::MathVerifier on the golden corpus
// (tests/fixtures/make_math_golden.py), next to Math-Verify in tools/bench/bench_rewards_math_mv.py
// (run both with tools/bench/run_rewards_bench.sh). Each verification is the whole job a trainer
// asks for: extract the answer from the completion, normalise both sides, compare.
//   bench_rewards_math <math_golden.jsonl> [reps=3] [workers=1] [symbolic_ids_out]
// One untimed pass first (it also starts the worker processes); prints one JSON line per mode.
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "prism/rewards/math.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_rewards_math <math_golden.jsonl> [reps=3] [workers=1] [symbolic_ids_out]\n");
    return 2;
  }
  int reps = argc > 2 ? std::atoi(argv[2]) : 3;
  int workers = argc > 3 ? std::atoi(argv[3]) : 1;
  std::vector<prism::rewards::Sample> samples;
  {
    std::ifstream f(argv[1]);
    std::string line;
    while (std::getline(f, line)) {
      auto j = nlohmann::json::parse(line);
      prism::rewards::Sample s;
      s.completion = j.at("completion").get<std::string>();
      s.answer = j.at("gold").get<std::string>();
      samples.push_back(std::move(s));
    }
  }
  prism::rewards::MathOptions o;
  o.workers = workers;
  prism::rewards::MathVerifier v(o);
  // Untimed pass: which pairs need GiNaC (written out so the Python side can time the same subset).
  std::vector<std::size_t> symbolic;
  for (std::size_t i = 0; i < samples.size(); ++i) {
    long long before = v.symbolic_calls();
    v.verify(samples[i]);
    if (v.symbolic_calls() > before) symbolic.push_back(i);
  }
  if (argc > 4) {
    std::ofstream ids(argv[4]);
    for (auto i : symbolic) ids << i << "\n";
  }
  auto time_it = [&](const std::vector<prism::rewards::Sample>& batch, bool parallel) {
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      if (parallel) {
        v.verify_batch(batch);
      } else {
        for (const auto& s : batch) v.verify(s);
      }
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  double all = time_it(samples, false);
  std::vector<prism::rewards::Sample> sym;
  for (auto i : symbolic) sym.push_back(samples[i]);
  double sym_t = sym.empty() ? 0 : time_it(sym, false);
  std::printf("{\"mode\": \"all\", \"threads\": 1, \"pairs\": %zu, \"seconds\": %.6f, \"per_s\": %.1f}\n",
              samples.size(), all, samples.size() / all);
  if (!sym.empty())
    std::printf("{\"mode\": \"symbolic\", \"threads\": 1, \"pairs\": %zu, \"seconds\": %.6f, \"per_s\": %.1f}\n",
                sym.size(), sym_t, sym.size() / sym_t);
  if (workers > 1) {
    double par = time_it(samples, true);
    std::printf("{\"mode\": \"all\", \"threads\": %d, \"pairs\": %zu, \"seconds\": %.6f, \"per_s\": %.1f}\n", workers,
                samples.size(), par, samples.size() / par);
  }
  return 0;
}
