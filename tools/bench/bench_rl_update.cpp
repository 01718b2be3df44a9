// Where the time of a GRPO update goes on CPU: synthetic rollouts (R samples of P prompt + C
// completion tokens, random ids) packed into rows of `capacity` tokens, then per row the packed
// training forward up to the final norm, ops::linear_logprobs on the labelled rows, a policy-loss
// stand-in (-sum advantage * logp) and backward; separately the lm-head op alone (forward +
// backward on a detached hidden) so the body's share follows by difference. Prints one JSON line
// with seconds per phase, the process CPU seconds of the update (update_cpu_s: on a shared machine
// the wall clock measures the neighbours too) and the FLOPs: body 6 * non-embedding params *
// tokens, head 8 * V * D * labelled tokens (4 GEMMs; on CPU token_logprobs keeps the logits and
// runs 3). PRISM_BENCH_PROFILE=<trace.json> writes a Kineto CPU trace of the last iteration's
// update (per-op times: aggregate by name).
//
//   bench_rl_update <hf_dir> [threads=2] [rollouts=32] [prompt=12] [completion=128] [capacity=4096] [iters=2]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <torch/csrc/autograd/profiler_kineto.h>

#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "prism/models/causal_lm.h"
#include "prism/ops/linear_logprobs.h"
#include "prism/rl/rollout_batch.h"

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
// Process CPU seconds: on a shared machine the wall clock measures the neighbours too.
double cpu_now() { return static_cast<double>(std::clock()) / CLOCKS_PER_SEC; }
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: bench_rl_update <hf_dir> [threads=2] [rollouts=32] [prompt=12] [completion=128] "
                 "[capacity=4096] [iters=2]\n");
    return 2;
  }
  auto arg = [&](int i, int64_t d) { return argc > i ? std::atoll(argv[i]) : d; };
  const int64_t threads = arg(2, 2), R = arg(3, 32), P = arg(4, 12), C = arg(5, 128), cap = arg(6, 4096),
                iters = arg(7, 2);
  at::set_num_threads(static_cast<int>(threads));
  auto model = prism::models::CausalLM::from_pretrained(argv[1]);
  for (auto& [n, p] : model->named_parameters()) p.requires_grad_(true);
  const auto& cfg = model->config();
  const int64_t V = model->lm_head_weight().size(0), D = model->lm_head_weight().size(1);

  at::manual_seed(0);
  std::vector<prism::rl::Rollout> rs(static_cast<size_t>(R));
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < R; ++i) {
    auto ids = at::randint(3, V, {P + C}, at::kLong);
    auto* p = ids.data_ptr<int64_t>();
    rs[static_cast<size_t>(i)].prompt.assign(p, p + P);
    rs[static_cast<size_t>(i)].completion.assign(p + P, p + P + C);
    rs[static_cast<size_t>(i)].sampler_logprobs.assign(static_cast<size_t>(C), -1.f);
    rs[static_cast<size_t>(i)].advantage = (i % 2 == 0) ? 1.0 : -1.0;
    idx.push_back(i);
  }
  auto rows = prism::rl::pack_rollouts(rs, idx, cap);
  int64_t tokens = 0, labelled = 0;
  for (const auto& mb : rows) {
    tokens += mb.input_ids.numel();
    labelled += mb.labels.ne(-100).sum().item<int64_t>();
  }

  double fwd = 0, bwd = 0, head = 0, zero = 0, cpu_update = 0;
  // PRISM_BENCH_PROFILE=<trace.json>: a Kineto CPU trace of the last iteration's update (op times).
  const char* trace = std::getenv("PRISM_BENCH_PROFILE");
  namespace prof = torch::autograd::profiler;
  const torch::profiler::impl::ProfilerConfig pcfg(torch::profiler::impl::ProfilerState::KINETO, false, false, false,
                                                   false, false);
  const std::set<torch::profiler::impl::ActivityType> acts{torch::profiler::impl::ActivityType::CPU};
  for (int64_t it = 0; it < iters; ++it) {
    if (trace && it + 1 == iters) {
      prof::prepareProfiler(pcfg, acts);
      prof::enableProfiler(pcfg, acts);
    }
    const double c0 = cpu_now();
    for (const auto& mb : rows) {
      auto t0 = Clock::now();
      auto lp = prism::rl::token_logprobs(*model, mb, at::kCPU);
      auto loss = -(lp.logp * mb.advantages).sum();
      fwd += since(t0);
      t0 = Clock::now();
      loss.backward();
      bwd += since(t0);
    }
    cpu_update += cpu_now() - c0;
    if (trace && it + 1 == iters) prof::disableProfiler()->save(trace);
    auto t0 = Clock::now();
    for (auto& [n, p] : model->named_parameters()) p.mutable_grad() = at::Tensor();
    zero += since(t0);
    // The lm-head op alone on the labelled rows' shape.
    auto h = at::randn({labelled, D}).mul_(0.5).requires_grad_(true);
    auto w = model->lm_head_weight().detach().clone().requires_grad_(true);
    auto labels = at::randint(0, V, {labelled}, at::kLong);
    t0 = Clock::now();
    prism::ops::LinearLogprobsOptions lo;
    lo.logits_scaling = cfg.logits_scaling;
    auto r = prism::ops::linear_logprobs(h, w, labels, lo);
    (-r.logprobs.sum()).backward();
    head += since(t0);
  }
  const double n = static_cast<double>(iters);
  const double body_params = static_cast<double>(model->num_parameters()) - static_cast<double>(V * D);
  const double body_flop = 6.0 * body_params * static_cast<double>(tokens);
  const double head_flop = 8.0 * static_cast<double>(V * D) * static_cast<double>(labelled);
  const double update = (fwd + bwd) / n;
  std::printf(
      "{\"rows\": %zu, \"tokens\": %lld, \"labelled\": %lld, \"capacity\": %lld, \"threads\": %lld, "
      "\"forward_s\": %.3f, \"backward_s\": %.3f, \"head_fwd_bwd_s\": %.3f, \"body_fwd_bwd_s\": %.3f, "
      "\"zero_grad_s\": %.4f, \"body_gflop\": %.1f, \"head_gflop\": %.1f, \"gflops_per_s\": %.1f, "
      "\"head_gflops_per_s\": %.1f, \"update_cpu_s\": %.3f}\n",
      rows.size(), static_cast<long long>(tokens), static_cast<long long>(labelled), static_cast<long long>(cap),
      static_cast<long long>(threads), fwd / n, bwd / n, head / n, update - head / n, zero / n, body_flop / 1e9,
      head_flop / 1e9, (body_flop + head_flop) / 1e9 / update, head_flop / 1e9 / (head / n), cpu_update / n);
  return 0;
}
