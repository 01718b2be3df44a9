// Makes a randomly initialised checkpoint of a given config.json for the `analyze weights`
// benchmark (tools/bench/run_analysis_bench.sh): CausalLM::from_config + init_weights(seed) +
// save_pretrained, so two seeds give two checkpoints of the same architecture.
//
//   bench_analysis <config.json> <out_dir> <seed> [fp32|bf16] [shard bytes]
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "prism/core/fs.h"
#include "prism/models/causal_lm.h"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s <config.json> <out_dir> <seed> [fp32|bf16] [shard bytes]\n", argv[0]);
    return 2;
  }
  try {
    const auto t0 = std::chrono::steady_clock::now();
    auto cfg = prism::models::CausalLM::read_config(argv[1]);
    prism::models::LoadOptions lo;
    lo.dtype = argc > 4 && std::string(argv[4]) == "fp32" ? at::kFloat : at::kBFloat16;
    auto model = prism::models::CausalLM::from_config(cfg, lo);
    model->init_weights(std::strtoull(argv[3], nullptr, 10));
    const uint64_t shard = argc > 5 ? std::strtoull(argv[5], nullptr, 10) : 5'000'000'000ULL;
    model->save_pretrained(argv[2], shard);
    std::printf("{\"parameters\": %lld, \"seconds\": %.1f}\n", static_cast<long long>(model->num_parameters()),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_analysis: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
