// Peak memory and time of the LM loss, forward + backward, on one GPU: ops::linear_cross_entropy
// (chunked, fused kernel) against
//   naive     : logits = hidden @ W^T (bf16), at::cross_entropy_loss(logits.float(), sum) — what a
//               plain PyTorch training loop does;
//   prism_ce  : the same logits, then the chunked fp32 ops::cross_entropy (prism's path before
//               linear_cross_entropy; it never holds fp32 logits whole, but holds bf16 logits and
//               their gradient).
// and also times ops::linear_logprobs with the same summed loss (-sum of log-probs; its backward
// recomputes the chunk logits: 4 GEMMs per chunk instead of 3).
// Peak memory is the caching allocator's peak of allocated bytes during one forward + backward,
// minus what was allocated before (hidden, W, labels); the gradients of hidden and W are included
// for every method. Goals (docs/performance-anchors.md style, H100): linear-CE peak <= 25% of
// naive at V = 128K, time <= 1.1x naive. Allocator statistics come through at::accelerator (no
// CUDA headers here). Prints one JSON object per line (and appends them to --json FILE).
//
//   bench_linear_ce [--tokens 8192] [--hidden 4096] [--vocab 32000,128256] [--iters 10] [--json F]
#include <ATen/ATen.h>
#include <ATen/DeviceAccelerator.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "prism/ops/cross_entropy.h"
#include "prism/ops/linear_cross_entropy.h"
#include "prism/ops/linear_logprobs.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  int64_t tokens = 8192, hidden = 4096;
  std::vector<int64_t> vocabs = {32000, 128256};
  int iters = 10;
  std::string json;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("missing value after " + k);
      return argv[++i];
    };
    if (k == "--tokens")
      a.tokens = std::stoll(next());
    else if (k == "--hidden")
      a.hidden = std::stoll(next());
    else if (k == "--iters")
      a.iters = std::stoi(next());
    else if (k == "--json")
      a.json = next();
    else if (k == "--vocab") {
      a.vocabs.clear();
      std::stringstream ss(next());
      std::string v;
      while (std::getline(ss, v, ',')) a.vocabs.push_back(std::stoll(v));
    } else {
      throw std::runtime_error("unknown argument " + k +
                               " (usage: bench_linear_ce [--tokens N] [--hidden D] [--vocab V1,V2] [--iters K] "
                               "[--json FILE])");
    }
  }
  return a;
}

void emit(const Args& a, const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  if (!a.json.empty()) {
    if (FILE* f = std::fopen(a.json.c_str(), "a")) {
      std::fprintf(f, "%s\n", line.c_str());
      std::fclose(f);
    }
  }
}

constexpr c10::DeviceIndex kDev = 0;

int64_t allocated_now() {
  return at::accelerator::getDeviceStats(kDev)
      .allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
      .current;
}
int64_t allocated_peak() {
  return at::accelerator::getDeviceStats(kDev)
      .allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
      .peak;
}

struct Result {
  double ms = 0;        // median forward + backward
  double peak_mib = 0;  // above the inputs, gradients included
  double loss = 0;
};

// One method: a function of (hidden, W, labels) returning the scalar to backpropagate.
Result measure(const std::function<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>& loss_fn,
               const at::Tensor& h, const at::Tensor& w, const at::Tensor& labels, int iters) {
  auto step = [&]() {
    h.mutable_grad() = at::Tensor();
    w.mutable_grad() = at::Tensor();
    auto loss = loss_fn(h, w, labels);
    loss.backward();
    return loss.detach();
  };
  Result r;
  r.loss = step().item<double>();  // warm-up (cuBLAS handles, allocator blocks)
  // Memory: one step from a clean slate.
  h.mutable_grad() = at::Tensor();
  w.mutable_grad() = at::Tensor();
  at::accelerator::synchronizeDevice(kDev);
  at::accelerator::emptyCache();
  const int64_t base = allocated_now();
  at::accelerator::resetPeakStats(kDev);
  step();
  at::accelerator::synchronizeDevice(kDev);
  r.peak_mib = static_cast<double>(allocated_peak() - base) / (1 << 20);
  // Time.
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    at::accelerator::synchronizeDevice(kDev);
    const auto t0 = Clock::now();
    step();
    at::accelerator::synchronizeDevice(kDev);
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  r.ms = ms[ms.size() / 2];
  h.mutable_grad() = at::Tensor();
  w.mutable_grad() = at::Tensor();
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = parse(argc, argv);
    if (!at::hasCUDA()) {
      std::fprintf(stderr, "bench_linear_ce: no CUDA device, nothing to measure\n");
      return 0;
    }
    const auto opt = at::TensorOptions().device(at::kCUDA);
    for (const int64_t V : a.vocabs) {
      at::manual_seed(0);
      auto h = at::randn({a.tokens, a.hidden}, opt.dtype(at::kBFloat16)).requires_grad_(true);
      auto w = (at::randn({V, a.hidden}, opt.dtype(at::kFloat)) * (1.0 / std::sqrt(static_cast<double>(a.hidden))))
                   .to(at::kBFloat16)
                   .requires_grad_(true);
      auto labels = at::randint(0, V, {a.tokens}, opt.dtype(at::kLong));
      labels.masked_fill_(at::rand({a.tokens}, opt.dtype(at::kFloat)).lt(0.05), -100);

      const bool kernel = prism::ops::linear_cross_entropy_uses_kernel(h, w);
      auto naive = measure(
          [](const at::Tensor& hh, const at::Tensor& ww, const at::Tensor& ll) {
            auto logits = at::matmul(hh, ww.t());
            return at::cross_entropy_loss(logits.to(at::kFloat), ll, {}, at::Reduction::Sum, -100);
          },
          h, w, labels, a.iters);
      auto prism_ce = measure(
          [](const at::Tensor& hh, const at::Tensor& ww, const at::Tensor& ll) {
            auto r = prism::ops::cross_entropy(at::matmul(hh, ww.t()), ll);
            return r.loss_sum;
          },
          h, w, labels, a.iters);
      auto lce = measure([](const at::Tensor& hh, const at::Tensor& ww,
                            const at::Tensor& ll) { return prism::ops::linear_cross_entropy(hh, ww, ll).loss; },
                         h, w, labels, a.iters);
      // Per-token log-probs (what a policy-gradient loss uses), here with the all-ones upstream
      // gradient of the same summed loss: the price of recomputing the logits in backward.
      auto llp = measure(
          [](const at::Tensor& hh, const at::Tensor& ww, const at::Tensor& ll) {
            return -prism::ops::linear_logprobs(hh, ww, ll).logprobs.sum();
          },
          h, w, labels, a.iters);

      const double grads_mib = static_cast<double>((a.tokens + V) * a.hidden * 2) / (1 << 20);
      auto line = [&](const char* method, const Result& r) {
        char buf[512];
        std::snprintf(buf, sizeof(buf),
                      "{\"bench\": \"linear_ce\", \"method\": \"%s\", \"tokens\": %lld, \"hidden\": %lld, "
                      "\"vocab\": %lld, \"dtype\": \"bf16\", \"ms\": %.3f, \"peak_mib\": %.1f, "
                      "\"grads_mib\": %.1f, \"loss\": %.6e, \"uses_kernel\": %s}",
                      method, static_cast<long long>(a.tokens), static_cast<long long>(a.hidden),
                      static_cast<long long>(V), r.ms, r.peak_mib, grads_mib, r.loss,
                      std::string(method).rfind("linear_", 0) == 0 && kernel ? "true" : "false");
        emit(a, buf);
      };
      line("naive", naive);
      line("prism_ce", prism_ce);
      line("linear_ce", lce);
      line("linear_logprobs", llp);
      const double mem_ratio = lce.peak_mib / naive.peak_mib, time_ratio = lce.ms / naive.ms;
      const double rel_loss = std::abs(lce.loss - naive.loss) / std::max(1e-30, std::abs(naive.loss));
      char buf[512];
      std::snprintf(buf, sizeof(buf),
                    "{\"bench\": \"linear_ce_summary\", \"vocab\": %lld, \"mem_ratio_vs_naive\": %.3f, "
                    "\"time_ratio_vs_naive\": %.3f, \"mem_ratio_vs_prism_ce\": %.3f, \"time_ratio_vs_prism_ce\": "
                    "%.3f, \"loss_rel_diff_vs_naive\": %.2e, \"goal_mem_le_0.25\": %s, \"goal_time_le_1.1\": %s}",
                    static_cast<long long>(V), mem_ratio, time_ratio, lce.peak_mib / prism_ce.peak_mib,
                    lce.ms / prism_ce.ms, rel_loss, mem_ratio <= 0.25 ? "true" : "false",
                    time_ratio <= 1.1 ? "true" : "false");
      emit(a, buf);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_linear_ce: error: %s\n", e.what());
    return 1;
  }
}
