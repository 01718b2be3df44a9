// CPU forward throughput of prism's CausalLM on an HF checkpoint directory (tokens/s), the prism
// side of tools/bench/run_forward_bench.sh (the baseline side is bench_forward_hf.py on the same
// weights, same thread count). Prints one JSON line.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "prism/models/causal_lm.h"

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: bench_forward <hf_dir> <threads> <batch> <seq> <iters> [label]\n");
    return 2;
  }
  try {
    const std::string dir = argv[1];
    const int threads = std::atoi(argv[2]);
    const int64_t batch = std::atoll(argv[3]), seq = std::atoll(argv[4]);
    const int iters = std::atoi(argv[5]);
    const std::string label = argc > 6 ? argv[6] : dir;
    at::set_num_threads(threads);
    auto model = prism::models::CausalLM::from_pretrained(dir);
    at::manual_seed(0);
    auto ids = at::randint(model->config().vocab_size, {batch, seq}, at::kLong);
    c10::InferenceMode im;
    model->forward(ids);  // warm-up
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) model->forward(ids);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("{\"impl\": \"prism\", \"config\": \"%s\", \"threads\": %d, \"batch\": %lld, \"seq\": %lld, \"tokens_per_s\": %.1f}\n",
                label.c_str(), threads, static_cast<long long>(batch), static_cast<long long>(seq),
                batch * seq * iters / s);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_forward: error: %s\n", e.what());
    return 1;
  }
}
