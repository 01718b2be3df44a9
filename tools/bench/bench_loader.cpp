// Mixture loader throughput (tokens/s) on synthetic shards: writes 3 sources (default 50M tokens
// in all, uint16 ids, document lengths log-uniform in [16, 16384]) to a temp dir, then times
// MixtureLoader::next() at seq_len 8192 for concat and bfd packing, single rank and rank 0 of 8 (and
// of 128 for concat; rank 0 also walks the other ranks' rows, by lengths only). Prints one JSON line.
//
// Usage: bench_loader [total_tokens=50000000] [seq_len=8192]
#include <ATen/ATen.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "prism/core/fs.h"
#include "prism/data/mixture.h"
#include "prism/data/token_shard.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Tokens per second of `tokens_target` tokens worth of batches (excluding loader start-up).
double measure(const prism::data::MixtureConfig& cfg, int rank, int world, int64_t tokens_target) {
  prism::data::MixtureLoader loader(cfg, rank, world);
  loader.next();  // warm-up: first window, page cache
  const int64_t per_batch = cfg.batch_size * cfg.seq_len;
  int64_t tokens = 0;
  int64_t checksum = 0;
  auto t0 = std::chrono::steady_clock::now();
  while (tokens < tokens_target) {
    prism::data::Batch b = loader.next();
    checksum += b.input_ids.data_ptr<int64_t>()[0];
    tokens += per_batch;
  }
  double s = seconds_since(t0);
  if (checksum < 0) std::fprintf(stderr, "?");  // keeps the loop observable
  return static_cast<double>(tokens) / s;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const int64_t total = argc > 1 ? std::atoll(argv[1]) : 50'000'000;
    const int64_t seq_len = argc > 2 ? std::atoll(argv[2]) : 8192;
    const std::string dir = prism::fs::make_temp_dir("prism_bench_loader_");
    const int64_t vocab = 50000;
    const char* names[3] = {"math", "code", "web"};
    const double weights[3] = {0.5, 0.3, 0.2};

    auto t0 = std::chrono::steady_clock::now();
    std::mt19937_64 rng(0);
    std::vector<int32_t> doc;
    prism::data::MixtureConfig cfg;
    cfg.seq_len = seq_len;
    cfg.eos_id = 0;
    for (int s = 0; s < 3; ++s) {
      const std::string sdir = prism::fs::join(dir, names[s]);
      prism::fs::create_directories(sdir);
      const int64_t want = static_cast<int64_t>(weights[s] * static_cast<double>(total));
      int64_t written = 0;
      for (int shard = 0; written < want; ++shard) {
        prism::data::ShardWriter w(prism::fs::join(sdir, "part-" + std::to_string(shard) + ".tok"), vocab);
        while (written < want && w.num_tokens() < 8'000'000) {
          const double u = std::uniform_real_distribution<double>(std::log(16.0), std::log(16384.0))(rng);
          doc.resize(static_cast<size_t>(std::exp(u)));
          for (auto& t : doc) t = static_cast<int32_t>(1 + rng() % static_cast<uint64_t>(vocab - 1));
          w.add_document(doc);
          written += static_cast<int64_t>(doc.size());
        }
        w.finish();
      }
      cfg.sources.push_back({names[s], prism::fs::join(sdir, "*.tok"), weights[s]});
    }
    const double write_s = seconds_since(t0);

    const int64_t measure_tokens = total;  // about one pass over the corpus per configuration
    cfg.packing = "concat";
    const double concat1 = measure(cfg, 0, 1, measure_tokens);
    const double concat8 = measure(cfg, 0, 8, measure_tokens / 8);
    const double concat128 = measure(cfg, 0, 128, measure_tokens / 128);  // the paper's DP size
    cfg.packing = "bfd";
    const double bfd1 = measure(cfg, 0, 1, measure_tokens);
    const double bfd8 = measure(cfg, 0, 8, measure_tokens / 8);
    prism::fs::remove_all(dir);

    std::printf(
        "{\"bench\": \"loader\", \"corpus_tokens\": %lld, \"seq_len\": %lld, \"batch_size\": 1, "
        "\"write_tokens_per_s\": %.3g, \"concat_tokens_per_s\": %.3g, \"concat_rank0_of_8_tokens_per_s\": %.3g, "
        "\"concat_rank0_of_128_tokens_per_s\": %.3g, "
        "\"bfd_tokens_per_s\": %.3g, \"bfd_rank0_of_8_tokens_per_s\": %.3g}\n",
        static_cast<long long>(total), static_cast<long long>(seq_len), static_cast<double>(total) / write_s, concat1,
        concat8, concat128, bfd1, bfd8);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_loader: %s\n", e.what());
    return 1;
  }
}
