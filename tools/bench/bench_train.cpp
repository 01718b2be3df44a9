// CPU throughput of one prism mid-training step on an HF checkpoint directory (tokens/s), the
// prism side of tools/bench/run_train_bench.sh (the baseline side is bench_train_hf.py on the same
// weights, ids and thread count).
//
//     bench_train <hf_dir> <threads> <batch> <seq> <iters> [label] [--packed]
//
// One step is what src/train/trainer.cpp does for one micro-batch: zero_grad, forward, token
// cross-entropy (sum over label tokens / label tokens), backward, finish_grad_sync, grad_norm,
// clip to 1.0, AdamW step (DistributedAdamW, "local" communicator, fp32, fused, lr 1e-4,
// weight decay 0.1 except norms / biases / SSM parameters). Ids are at::randint(V, [batch, seq])
// after at::manual_seed(0); labels are the ids shifted left, -100 at each row's last position.
// Plain: input [batch, seq], causal. --packed: input [1, batch * seq] with cu_seqlens marking one
// document per row and positions restarting per document, as the trainer feeds packed batches.
// 2 untimed warm-up steps, then `iters` timed ones. The last stdout line is one JSON object with
// tokens_per_s (input tokens), step_ms (mean), step_ms_min (fastest timed step), the mean
// forward / backward / optimizer split, and loss0 (first step's loss: equals the baseline's).
// PRISM_BENCH_VERBOSE=1 prints the optimizer part of every step (sync, grad_norm, clip, step) to stderr.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "prism/dist/communicator.h"
#include "prism/models/causal_lm.h"
#include "prism/ops/cross_entropy.h"
#include "prism/train/optimizer.h"

namespace {
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }
}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> pos;
  bool packed = false;
  const bool verbose = std::getenv("PRISM_BENCH_VERBOSE") != nullptr;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--packed") == 0)
      packed = true;
    else
      pos.emplace_back(argv[i]);
  }
  if (pos.size() < 5) {
    std::fprintf(stderr, "usage: bench_train <hf_dir> <threads> <batch> <seq> <iters> [label] [--packed]\n");
    return 2;
  }
  try {
    const std::string dir = pos[0];
    const int threads = std::atoi(pos[1].c_str());
    const int64_t batch = std::atoll(pos[2].c_str()), seq = std::atoll(pos[3].c_str());
    const int iters = std::atoi(pos[4].c_str());
    const std::string label = pos.size() > 5 ? pos[5] : dir;
    if (threads < 1 || batch < 1 || seq < 2 || iters < 1) {
      std::fprintf(stderr, "bench_train: threads, batch, iters must be >= 1 and seq >= 2\n");
      return 2;
    }
    at::set_num_threads(threads);
    auto model = prism::models::CausalLM::from_pretrained(dir);
    const auto& mc = model->config();

    prism::train::OptimizerConfig oc;
    oc.lr = 1e-4;
    oc.weight_decay = 0.1;
    oc.fused = true;
    oc.max_grad_norm = 1.0;
    std::vector<bool> decay;
    for (const auto& [name, t] : model->named_parameters()) {
      auto kind = prism::train::parameter_kind(name, t.dim(), mc.embed_name,
                                               mc.tie_word_embeddings ? "" : mc.lm_head_name);
      decay.push_back(std::find(oc.no_decay.begin(), oc.no_decay.end(), kind) == oc.no_decay.end());
    }
    prism::dist::DistEnv env;  // rank 0 of 1
    prism::dist::CommOptions co;
    co.backend = "local";
    auto comm = prism::dist::make_communicator(env, co);
    prism::train::DistributedAdamW opt(model->named_parameters(), decay, *comm, oc);

    at::manual_seed(0);
    auto ids = at::randint(mc.vocab_size, {batch, seq}, at::kLong);
    auto labels = at::full({batch, seq}, -100, at::kLong);
    labels.narrow(1, 0, seq - 1).copy_(ids.narrow(1, 1, seq - 1));
    const auto flat_labels = labels.reshape({-1});
    const double tokens = static_cast<double>(batch * (seq - 1));

    prism::models::ForwardOptions fo;
    at::Tensor input = ids;
    if (packed) {
      input = ids.reshape({1, batch * seq});
      fo.cu_seqlens = at::arange(0, (batch + 1) * seq, seq, at::kLong);
      fo.position_ids = at::arange(seq, at::kLong).repeat({batch}).reshape({1, -1});
    }

    double fwd_ms = 0, bwd_ms = 0, opt_ms = 0, loss0 = 0, last_loss = 0, gnorm = 0;
    auto one_step = [&](bool first) {
      auto t0 = Clock::now();
      opt.zero_grad();
      auto out = model->forward(input, fo);
      auto ce = prism::ops::cross_entropy(out.logits.reshape({-1, out.logits.size(-1)}), flat_labels);
      auto loss = ce.loss_sum / tokens;
      const double f = ms_since(t0);
      auto t1 = Clock::now();
      loss.backward();
      const double b = ms_since(t1);
      auto t2 = Clock::now();
      opt.finish_grad_sync();
      auto t3 = Clock::now();
      gnorm = opt.grad_norm();
      auto t4 = Clock::now();
      opt.clip_grads(gnorm, oc.max_grad_norm);
      auto t5 = Clock::now();
      opt.step(oc.lr);
      const double o = ms_since(t2);
      if (verbose)
        std::fprintf(stderr, "  sync %.1f ms, grad_norm %.1f ms, clip %.1f ms, step %.1f ms\n",
                     std::chrono::duration<double, std::milli>(t3 - t2).count(),
                     std::chrono::duration<double, std::milli>(t4 - t3).count(),
                     std::chrono::duration<double, std::milli>(t5 - t4).count(), ms_since(t5));
      last_loss = loss.item<double>();
      if (first) loss0 = last_loss;
      return std::array<double, 3>{f, b, o};
    };
    one_step(true);  // warm-up (also records the initial loss, a cross-check against the baseline)
    one_step(false);
    double min_ms = 1e300;
    auto t0 = Clock::now();
    for (int i = 0; i < iters; ++i) {
      auto ts = Clock::now();
      auto s = one_step(false);
      min_ms = std::min(min_ms, ms_since(ts));
      fwd_ms += s[0];
      bwd_ms += s[1];
      opt_ms += s[2];
    }
    const double total_ms = ms_since(t0);
    std::printf(
        "{\"impl\": \"prism\", \"config\": \"%s\", \"threads\": %d, \"batch\": %lld, \"seq\": %lld, \"packed\": %s, "
        "\"iters\": %d, \"step_ms\": %.1f, \"step_ms_min\": %.1f, \"fwd_ms\": %.1f, \"bwd_ms\": %.1f, \"opt_ms\": %.1f, "
        "\"loss0\": %.6f, \"loss\": %.6f, \"grad_norm\": %.6f, \"tokens_per_s\": %.1f}\n",
        label.c_str(), threads, static_cast<long long>(batch), static_cast<long long>(seq), packed ? "true" : "false",
        iters, total_ms / iters, min_ms, fwd_ms / iters, bwd_ms / iters, opt_ms / iters, loss0, last_loss, gnorm,
        static_cast<double>(batch * seq) * iters / (total_ms / 1000.0));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train: error: %s\n", e.what());
    return 1;
  }
}
