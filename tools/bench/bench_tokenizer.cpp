// Encode throughput of prism::io::Tokenizer on a text corpus (one sample per line), single thread
// and N threads (std::thread over contiguous line batches), printed as Markdown table rows next to
// the HF `tokenizers` rows of tools/bench/bench_tokenizer_hf.py (same file, same corpus, same
// warm-cache protocol: one untimed pass, then `reps` timed passes).
//   bench_tokenizer <tokenizer.json|dir> <corpus.txt> [threads=hardware] [reps=3] [label]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "prism/core/fs.h"
#include "prism/io/tokenizer.h"

namespace {

struct Result {
  double seconds;
  size_t tokens;
};

/// Warm: one untimed pass first. Cold (`cold`): each timed pass uses a freshly loaded tokenizer,
/// so every pre-token goes through the merge loop once (the load itself is not timed).
Result run(const std::string& path, const std::vector<std::string>& lines, int threads, int reps, bool cold) {
  auto fresh = prism::io::Tokenizer::from_file(path);
  std::vector<size_t> counts(size_t(threads), 0);
  auto pass = [&](const prism::io::Tokenizer& tok) {
    std::vector<std::thread> pool;
    size_t per = (lines.size() + size_t(threads) - 1) / size_t(threads);
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        size_t n = 0;
        size_t a = size_t(t) * per, b = std::min(lines.size(), a + per);
        for (size_t i = a; i < b; ++i) n += tok.encode(lines[i], false).size();
        counts[size_t(t)] = n;
      });
    }
    for (auto& th : pool) th.join();
  };
  if (!cold) pass(*fresh);  // warm-up (fills the pre-token cache, like HF's)
  double seconds = 0;
  size_t tokens = 0;
  for (int r = 0; r < reps; ++r) {
    if (cold) fresh = prism::io::Tokenizer::from_file(path);
    auto t0 = std::chrono::steady_clock::now();
    pass(*fresh);
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (auto c : counts) tokens += c;
  }
  return {seconds, tokens};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: bench_tokenizer <tokenizer.json|dir> <corpus.txt> [threads] [reps] [label]\n");
    return 2;
  }
  try {
    const std::string path = argv[1];
    std::string text = prism::fs::read_file(argv[2]);
    int threads = argc > 3 ? std::atoi(argv[3]) : int(std::max(1u, std::thread::hardware_concurrency()));
    int reps = argc > 4 ? std::atoi(argv[4]) : 3;
    std::string label = argc > 5 ? argv[5] : argv[1];
    std::vector<std::string> lines;
    size_t bytes = 0;
    for (size_t a = 0; a < text.size();) {
      size_t e = text.find('\n', a);
      if (e == std::string::npos) e = text.size();
      lines.push_back(text.substr(a, e - a));
      bytes += e - a;
      a = e + 1;
    }
    std::printf("| impl | tokenizer | cache | threads | MB/s | Mtokens/s |\n|---|---|---|---|---|---|\n");
    for (bool cold : {false, true}) {
      for (int th : {1, threads}) {
        Result r = run(path, lines, th, reps, cold);
        std::printf("| prism | %s | %s | %d | %.2f | %.3f |\n", label.c_str(), cold ? "cold" : "warm", th,
                    double(bytes) * reps / r.seconds / 1e6, double(r.tokens) / r.seconds / 1e6);
        if (threads == 1) break;
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_tokenizer: error: %s\n", e.what());
    return 1;
  }
}
