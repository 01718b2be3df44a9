// Code candidates per second through the sandboxed code verifier: HumanEval's canonical solutions
// (the program is the prompt + solution + tests + check(entry_point), run by the verifier's
// harness in a fresh sandbox each). One untimed warm-up pass, then `reps` timed passes; prints one
// JSON line. The plain-subprocess baseline is tools/bench/bench_sandbox_baseline.py; both are run
// side by side by tools/bench/bench_sandbox.sh.
//   bench_sandbox <humaneval.jsonl> [workers=2] [reps=3] [interpreter=/usr/bin/python3]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "prism/rewards/code.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_sandbox <humaneval.jsonl> [workers=2] [reps=3] [interpreter]\n");
    return 2;
  }
  const int workers = argc > 2 ? std::atoi(argv[2]) : 2;
  const int reps = argc > 3 ? std::atoi(argv[3]) : 3;
  try {
    std::vector<prism::rewards::Sample> samples;
    std::ifstream f(argv[1]);
    std::string line;
    while (std::getline(f, line)) {
      if (line.empty()) continue;
      auto j = nlohmann::json::parse(line);
      prism::rewards::Sample s;
      s.domain = "code";
      s.prompt = j["prompt"];
      s.completion = j["canonical_solution"];
      s.tests = j["test"];
      s.entry_point = j["entry_point"];
      samples.push_back(std::move(s));
    }
    if (samples.empty()) throw std::runtime_error(std::string("no problems in ") + argv[1]);
    prism::rewards::CodeVerifierOptions o;
    o.sandbox.workers = workers;
    o.sandbox.wall_timeout_s = 10.0;
    if (argc > 4) o.sandbox.interpreter = argv[4];
    auto v = prism::rewards::make_code_verifier(o);
    auto pass = [&] {
      int ok = 0;
      for (const auto& r : v->verify_batch(samples)) ok += r.correct;
      return ok;
    };
    pass();  // warm-up (page cache, interpreter files)
    double best = 1e30;
    int ok = 0;
    for (int r = 0; r < reps; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      ok = pass();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::printf(
        "{\"impl\": \"prism sandbox\", \"workers\": %d, \"candidates\": %zu, \"passed\": %d, \"seconds\": %.3f, "
        "\"candidates_per_s\": %.1f}\n",
        workers, samples.size(), ok, best, static_cast<double>(samples.size()) / best);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_sandbox: error: %s\n", e.what());
    return 1;
  }
}
