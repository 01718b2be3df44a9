// RMSNorm bandwidth on one GPU: the fused kernels (kernels/rmsnorm, ops::Impl::kAuto) against the
// ATen reference (ops::rms_norm_ref: several elementwise/reduction kernels), bf16, [tokens, D].
//   forward   : no grad; bytes = read x + read w + write y                       = (2 N D + D) * 2
//   backward  : (forward + backward under autograd) - forward; bytes = read x, dy, w + write dx
//               (+ dw)                                                          = (3 N D + 2 D) * 2
// GB/s = bytes / time, against the H100 HBM3 peak of 3350 GB/s (goal for memory-bound kernels:
// >= 85-90% of it, docs/performance-anchors.md #6). One JSON object per line (and --json FILE).
//
//   bench_rmsnorm [--tokens 8192] [--cols 2048,4096,5120,8192] [--iters 50] [--json F]
#include <ATen/ATen.h>
#include <ATen/DeviceAccelerator.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "prism/ops/rmsnorm.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr c10::DeviceIndex kDev = 0;

struct Args {
  int64_t tokens = 8192;
  std::vector<int64_t> cols = {2048, 4096, 5120, 8192};
  int iters = 50;
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
    else if (k == "--iters")
      a.iters = std::stoi(next());
    else if (k == "--json")
      a.json = next();
    else if (k == "--cols") {
      a.cols.clear();
      std::stringstream ss(next());
      std::string v;
      while (std::getline(ss, v, ',')) a.cols.push_back(std::stoll(v));
    } else {
      throw std::runtime_error("unknown argument " + k +
                               " (usage: bench_rmsnorm [--tokens N] [--cols D1,D2] [--iters K] [--json FILE])");
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

// Mean milliseconds of `f` over `iters` back-to-back calls (one sync at each end), best of 3.
double time_ms(const std::function<void()>& f, int iters) {
  f();
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    at::accelerator::synchronizeDevice(kDev);
    const auto t0 = Clock::now();
    for (int i = 0; i < iters; ++i) f();
    at::accelerator::synchronizeDevice(kDev);
    best = std::min(best, std::chrono::duration<double, std::milli>(Clock::now() - t0).count() / iters);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = parse(argc, argv);
    if (!at::hasCUDA()) {
      std::fprintf(stderr, "bench_rmsnorm: no CUDA device, nothing to measure\n");
      return 0;
    }
    const auto opt = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
    const double peak_gbs = 3350.0;
    for (const int64_t D : a.cols) {
      at::manual_seed(0);
      const int64_t N = a.tokens;
      auto x = at::randn({N, D}, opt);
      auto w = (1 + 0.1 * at::randn({D}, opt.dtype(at::kFloat))).to(at::kBFloat16);
      auto dy = at::randn({N, D}, opt);
      auto xg = x.clone().requires_grad_(true);
      auto wg = w.clone().requires_grad_(true);
      const double fwd_bytes = (2.0 * N * D + D) * 2, bwd_bytes = (3.0 * N * D + 2.0 * D) * 2;
      for (auto impl : {prism::ops::Impl::kAuto, prism::ops::Impl::kReference}) {
        const bool kernel = impl == prism::ops::Impl::kAuto && prism::ops::rms_norm_uses_kernel(xg, wg, impl);
        double fwd_ms = 0;
        {
          at::NoGradGuard ng;
          fwd_ms = time_ms([&] { prism::ops::rms_norm(x, w, 1e-5, impl); }, a.iters);
        }
        const double fwd_grad_ms = time_ms([&] { prism::ops::rms_norm(xg, wg, 1e-5, impl); }, a.iters);
        const double train_ms = time_ms(
            [&] {
              xg.mutable_grad() = at::Tensor();
              wg.mutable_grad() = at::Tensor();
              prism::ops::rms_norm(xg, wg, 1e-5, impl).backward(dy);
            },
            a.iters);
        const double bwd_ms = std::max(1e-6, train_ms - fwd_grad_ms);
        char buf[512];
        std::snprintf(
            buf, sizeof(buf),
            "{\"bench\": \"rmsnorm\", \"impl\": \"%s\", \"uses_kernel\": %s, \"tokens\": %lld, \"cols\": "
            "%lld, \"dtype\": \"bf16\", \"fwd_ms\": %.4f, \"fwd_gbs\": %.1f, \"bwd_ms\": %.4f, "
            "\"bwd_gbs\": %.1f, \"fwd_bwd_ms\": %.4f, \"fwd_frac_of_peak\": %.3f, \"bwd_frac_of_peak\": %.3f}",
            impl == prism::ops::Impl::kAuto ? "kernel" : "reference", kernel ? "true" : "false",
            static_cast<long long>(N), static_cast<long long>(D), fwd_ms, fwd_bytes / fwd_ms / 1e6, bwd_ms,
            bwd_bytes / bwd_ms / 1e6, train_ms, fwd_bytes / fwd_ms / 1e6 / peak_gbs,
            bwd_bytes / bwd_ms / 1e6 / peak_gbs);
        emit(a, buf);
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_rmsnorm: error: %s\n", e.what());
    return 1;
  }
}
