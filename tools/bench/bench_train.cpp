// Throughput of one prism mid-training step on an HF checkpoint directory (tokens/s, and on a GPU
// MFU and peak memory), the prism side of tools/bench/run_train_bench.sh (CPU) and
// tools/bench/run_train_bench_gpu.sh (CUDA); the baseline side is bench_train_hf.py on the same
// weights and ids.
//
//     bench_train <hf_dir> <threads> <batch> <seq> <iters> [label] [--packed]
//                 [--device cpu|cuda] [--dtype fp32|bf16] [--ckpt] [--fused-loss] [--warmup N]
//                 [--peak-tflops X] [--shard-size N]
//
// One step is what `prism-train mid` does for one micro-batch, with the same components
// (RunContext, make_optimizer, StepRunner): zero_grad, forward, token cross-entropy (sum over
// label tokens / label tokens), backward, finish_grad_sync, grad_norm, clip to 1.0, AdamW step
// (DistributedAdamW, "local" communicator, fused, lr 1e-4, weight decay 0.1 except the parameter
// kinds norm / bias / ssm; fp32 master weights and moments whatever the parameter dtype). Ids are at::randint(V, [batch, seq]) after at::manual_seed(0) (drawn on the
// CPU, then moved); labels are the ids shifted left, -100 at each row's last position.
// Plain: input [batch, seq], causal. --packed: input [1, batch * seq] with cu_seqlens marking one
// document per row and positions restarting per document, as the trainer feeds packed batches.
// --device / --dtype: where the model lives and its parameter dtype (LoadOptions; default cpu,
// fp32). --ckpt: per-layer activation checkpointing (ForwardOptions::activation_checkpointing, the
// trainer's model.activation_checkpointing). --fused-loss: the trainer's loss path (skip_lm_head +
// ops::linear_cross_entropy, the [tokens, V] logits never materialised; the lm_head backward then
// runs inside the "forward" phase) instead of full logits + ops::cross_entropy.
// `--warmup` untimed steps (default 2), then `iters` timed ones. On CUDA every phase boundary is a
// device synchronisation, so the phase times add up to the step time.
//
// The last stdout line is one JSON object: tokens_per_s (input tokens), step_ms (mean),
// step_ms_min (fastest timed step), the mean forward / backward / optimizer split, loss0 (first
// step's loss: equals the baseline's), params and flops_per_token (metrics.h: 6 N + 12 L H Q T, N
// without the input embedding unless tied), mfu (tokens/s * flops_per_token / peak: the H100 dense
// bf16 peak on CUDA, --peak-tflops overrides; null on CPU without it) and peak_mem_gib (the CUDA
// caching allocator's peak allocated bytes since the model was loaded, the number the trainer
// logs; null on CPU).
// --shard-size N: a distributed step under tools/launch.sh (the torchrun variables are read, the
// tcp transport on CPU) with dist.shard_size = N (1: ZeRO-1, > 1: parameter sharding); without it
// the run is one process. The JSON then also has rank, world_size, shard_size and rss_step_gib:
// the largest resident set (CPU) seen after the forward and the backward of the timed steps.
// PRISM_BENCH_VERBOSE=1 prints the optimizer part of every step (StepRunner::finish) to stderr.
#include <ATen/ATen.h>
#include <ATen/DeviceAccelerator.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "prism/models/causal_lm.h"
#include "prism/ops/cross_entropy.h"
#include "prism/ops/linear_cross_entropy.h"
#include "prism/runtime/runtime.h"
#include "prism/train/metrics.h"
#include "prism/train/model_setup.h"
#include "prism/train/optimizer.h"
#include "prism/train/run_context.h"
#include "prism/train/step.h"

namespace {
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

constexpr const char* kUsage =
    "usage: bench_train <hf_dir> <threads> <batch> <seq> <iters> [label] [--packed] [--device cpu|cuda]\n"
    "                   [--dtype fp32|bf16] [--ckpt] [--fused-loss] [--warmup N] [--peak-tflops X]\n"
    "                   [--shard-size N]\n";

std::string json_number(double v, const char* fmt) {
  if (!(v == v)) return "null";  // NaN: unknown
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, v);
  return buf;
}
}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> pos;
  bool packed = false, ckpt = false, fused_loss = false;
  std::string device = "cpu", dtype = "fp32";
  int warmup = 2;
  int shard_size = 0;  // 0: one process
  double peak_tflops = 0;
  const bool verbose = std::getenv("PRISM_BENCH_VERBOSE") != nullptr;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_train: %s needs a value\n%s", a.c_str(), kUsage);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--packed")
      packed = true;
    else if (a == "--ckpt")
      ckpt = true;
    else if (a == "--fused-loss")
      fused_loss = true;
    else if (a == "--device")
      device = value();
    else if (a == "--dtype")
      dtype = value();
    else if (a == "--warmup")
      warmup = std::atoi(value().c_str());
    else if (a == "--peak-tflops")
      peak_tflops = std::atof(value().c_str());
    else if (a == "--shard-size")
      shard_size = std::atoi(value().c_str());
    else if (a.rfind("--", 0) == 0) {
      std::fprintf(stderr, "bench_train: unknown option %s\n%s", a.c_str(), kUsage);
      return 2;
    } else
      pos.emplace_back(a);
  }
  if (pos.size() < 5) {
    std::fprintf(stderr, "%s", kUsage);
    return 2;
  }
  if ((device != "cpu" && device.rfind("cuda", 0) != 0) || (dtype != "fp32" && dtype != "bf16") || warmup < 0) {
    std::fprintf(stderr, "bench_train: --device cpu|cuda[:i], --dtype fp32|bf16, --warmup >= 0\n%s", kUsage);
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
    // One process ("local" communicator) whatever the environment says, unless --shard-size asks
    // for a distributed step.
    if (shard_size == 0)
      for (const char* v : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"}) ::unsetenv(v);
    prism::train::DistSection ds;
    ds.shard_size = std::max(1, shard_size);
    auto ctx = prism::train::RunContext::create(device, ds, threads, "--device");
    const bool cuda = device != "cpu";
    const c10::Device dev(device);
    const c10::DeviceIndex dev_index = cuda && dev.index() >= 0 ? dev.index() : 0;
    // Every phase boundary on CUDA: wait for the queued kernels so wall-clock times are the GPU's.
    auto sync = [&] {
      if (cuda) at::accelerator::synchronizeDevice(dev_index);
    };

    prism::train::ModelSection ms;
    ms.path = dir;
    ms.dtype = dtype == "bf16" ? prism::train::Dtype::kBf16 : prism::train::Dtype::kFp32;
    auto model = prism::train::load_model(ms, ctx->device());
    const auto& mc = model->config();
    sync();
    if (cuda) at::accelerator::resetPeakStats(dev_index);  // the loader's transient host/device copies

    prism::train::OptimizerConfig oc;
    oc.lr = 1e-4;
    oc.weight_decay = 0.1;
    oc.fused = true;
    oc.max_grad_norm = 1.0;
    auto opt = prism::train::make_optimizer(*model, *ctx, oc);
    prism::train::StepRunner runner(*ctx, *opt, {oc.max_grad_norm, 0.0});

    at::manual_seed(0);
    auto ids = at::randint(mc.vocab_size, {batch, seq}, at::kLong);
    auto labels = at::full({batch, seq}, -100, at::kLong);
    labels.narrow(1, 0, seq - 1).copy_(ids.narrow(1, 1, seq - 1));
    const auto flat_labels = labels.reshape({-1}).to(dev);
    const double tokens = static_cast<double>(batch * (seq - 1));

    prism::models::ForwardOptions fo;
    at::Tensor input = ids.to(dev);
    if (packed) {
      input = input.reshape({1, batch * seq});
      fo.cu_seqlens = at::arange(0, (batch + 1) * seq, seq, at::kLong);
      fo.position_ids = at::arange(seq, at::kLong).repeat({batch}).reshape({1, -1});
    }
    fo.activation_checkpointing = ckpt;
    fo.skip_lm_head = fused_loss;

    double fwd_ms = 0, bwd_ms = 0, opt_ms = 0, loss0 = 0, last_loss = 0, gnorm = 0;
    int64_t rss_max = 0;
    auto sample_rss = [&] {
      if (!cuda) rss_max = std::max(rss_max, prism::runtime::cpu_rss_bytes());
    };
    auto one_step = [&](bool first) {
      auto t0 = Clock::now();
      runner.begin(1, tokens * ctx->world_size());  // every rank runs the same ids: the loss equals one process's
      auto out = model->forward(input, fo);
      at::Tensor objective, loss_sum;
      if (fused_loss) {
        prism::ops::LinearCrossEntropyOptions lco;
        lco.logits_scaling = mc.logits_scaling;
        auto ce = prism::ops::linear_cross_entropy(out.last_hidden.reshape({-1, out.last_hidden.size(-1)}),
                                                   model->lm_head_weight(), flat_labels, lco, fo.impl);
        objective = ce.loss;
        loss_sum = ce.loss_sum;
      } else {
        auto ce = prism::ops::cross_entropy(out.logits.reshape({-1, out.logits.size(-1)}), flat_labels);
        objective = ce.loss_sum;
        loss_sum = ce.loss_sum.detach();
      }
      sync();
      sample_rss();
      const double f = ms_since(t0);
      auto t1 = Clock::now();
      runner.backward(objective, loss_sum.item<double>());
      sync();
      sample_rss();
      const double b = ms_since(t1);
      auto t2 = Clock::now();
      const auto r = runner.finish(oc.lr);
      sync();
      const double o = ms_since(t2);
      if (verbose) std::fprintf(stderr, "  optimizer (sync, grad_norm, clip, step) %.1f ms\n", o);
      gnorm = r.grad_norm;
      last_loss = r.loss;
      if (first) loss0 = last_loss;
      return std::array<double, 3>{f, b, o};
    };
    // Warm-up (the first also records the initial loss, a cross-check against the baseline).
    for (int w = 0; w < warmup; ++w) one_step(w == 0);
    rss_max = 0;
    double min_ms = 1e300;
    auto t0 = Clock::now();
    for (int i = 0; i < iters; ++i) {
      auto ts = Clock::now();
      auto s = one_step(warmup == 0 && i == 0);
      min_ms = std::min(min_ms, ms_since(ts));
      fwd_ms += s[0];
      bwd_ms += s[1];
      opt_ms += s[2];
    }
    sync();
    const double total_ms = ms_since(t0);
    const double tps = static_cast<double>(batch * seq) * iters / (total_ms / 1000.0);

    int64_t num_params = 0;
    const double fpt = prism::train::training_flops_per_token(*model, seq, &num_params);
    const double peak = peak_tflops > 0 ? peak_tflops * 1e12 : (cuda ? prism::train::kH100Bf16PeakFlops : 0.0);
    const double mfu = peak > 0 ? prism::train::mfu(tps, fpt, peak) : std::numeric_limits<double>::quiet_NaN();
    double peak_gib = std::numeric_limits<double>::quiet_NaN();
    if (cuda) peak_gib = static_cast<double>(prism::runtime::peak_memory_bytes(ctx->device())) / (1 << 30);
    std::printf(
        "{\"impl\": \"prism\", \"config\": \"%s\", \"device\": \"%s\", \"dtype\": \"%s\", \"threads\": %d, "
        "\"batch\": %lld, \"seq\": %lld, \"packed\": %s, \"ckpt\": %s, \"fused_loss\": %s, \"iters\": %d, "
        "\"step_ms\": %.1f, \"step_ms_min\": %.1f, \"fwd_ms\": %.1f, \"bwd_ms\": %.1f, \"opt_ms\": %.1f, "
        "\"loss0\": %.6f, \"loss\": %.6f, \"grad_norm\": %.6f, \"params\": %lld, \"flops_per_token\": %.6g, "
        "\"mfu\": %s, \"peak_mem_gib\": %s, \"rank\": %d, \"world_size\": %d, \"shard_size\": %d, "
        "\"rss_step_gib\": %.3f, \"tokens_per_s\": %.1f}\n",
        label.c_str(), device.c_str(), dtype.c_str(), threads, static_cast<long long>(batch),
        static_cast<long long>(seq), packed ? "true" : "false", ckpt ? "true" : "false", fused_loss ? "true" : "false",
        iters, total_ms / iters, min_ms, fwd_ms / iters, bwd_ms / iters, opt_ms / iters, loss0, last_loss, gnorm,
        static_cast<long long>(num_params), fpt, json_number(mfu, "%.4f").c_str(),
        json_number(peak_gib, "%.3f").c_str(), ctx->rank(), ctx->world_size(), ctx->shard_size(),
        static_cast<double>(rss_max) / (1 << 30), tps);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train: error: %s\n", e.what());
    return 1;
  }
}
