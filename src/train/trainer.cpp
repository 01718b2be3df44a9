// The mid-training loop (include/prism/train/trainer.h; docs/training.md): data and held-out
// evaluation are its own; everything else is calls into the training components.
#include "prism/train/trainer.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <csignal>
#include <limits>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/core/log.h"
#include "prism/data/mixture.h"
#include "prism/distributed/communicator.h"
#include "prism/models/causal_lm.h"
#include "prism/ops/linear_cross_entropy.h"
#include "prism/runtime/runtime.h"
#include "prism/train/checkpoint_dir.h"
#include "prism/train/checkpointer.h"
#include "prism/train/model_setup.h"
#include "prism/train/plan.h"
#include "prism/train/run_context.h"
#include "prism/train/run_lock.h"
#include "prism/train/step.h"
#include "prism/train/step_logger.h"

namespace prism::train {

namespace {

// The part of a glob before its first wildcard, up to the last '/': a directory that must exist.
std::string glob_directory(const std::string& pattern) {
  const auto wild = pattern.find_first_of("*?[");
  const std::string fixed = pattern.substr(0, wild);
  const auto slash = fixed.rfind('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : fixed.substr(0, slash));
}

std::string weights_json(const data::MixtureConfig& mix) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& s : mix.sources) j[s.name] = s.weight;
  return j.dump();
}

// The mixture of cfg.data.mixture with cfg.data's overrides applied.
data::MixtureConfig load_mixture(const MidTrainConfig& cfg) {
  auto mix = config::load_config<data::MixtureConfig>(cfg.data.mixture);
  if (cfg.data.seq_len > 0) mix.seq_len = cfg.data.seq_len;
  if (cfg.data.micro_batch_size > 0) mix.batch_size = cfg.data.micro_batch_size;
  if (cfg.data.eos_id >= 0) mix.eos_id = cfg.data.eos_id;
  return mix;
}

// Sum of token losses of one micro-batch (detached, for logging) and its label-token count;
// `objective` gets the differentiable loss_sum + z_loss_sum (z-loss only when training). The
// lm_head is fused with the loss (ops::linear_cross_entropy; with kernels: auto the [tokens, vocab]
// logits are never materialised whole).
std::pair<at::Tensor, int64_t> micro_batch_loss(const models::CausalLM& model, const MidTrainConfig& cfg,
                                                const c10::Device& device, const data::Batch& b, bool train,
                                                at::Tensor* objective = nullptr) {
  models::ForwardOptions fo;
  fo.position_ids = b.position_ids.reshape({1, -1});
  fo.cu_seqlens = b.cu_seqlens;
  fo.activation_checkpointing = train && cfg.model.activation_checkpointing;
  fo.impl = cfg.model.kernels == Kernels::kReference ? ops::Impl::kReference : ops::Impl::kAuto;
  auto ids = b.input_ids.reshape({1, -1}).to(device);
  fo.skip_lm_head = true;
  auto out = model.forward(ids, fo);
  auto labels = b.labels.reshape({-1}).to(device);
  ops::LinearCrossEntropyOptions co;
  co.z_loss_weight = train ? cfg.train.z_loss : 0.0;
  co.logits_scaling = model.config().logits_scaling;
  auto ce = ops::linear_cross_entropy(out.last_hidden.reshape({-1, out.last_hidden.size(-1)}), model.lm_head_weight(),
                                      labels, co, fo.impl);
  if (objective) *objective = ce.loss;
  return {ce.loss_sum, (b.labels != -100).sum().item<int64_t>()};
}

// The held-out sets of cfg.eval.sources: one fixed stream each (rank 0 of 1) whatever the world
// size, rewound before every evaluation, so every evaluation (in the loop, or of a finished
// model by heldout_loss) sees the same eval.batches micro-batches.
struct HeldoutSets {
  std::vector<std::unique_ptr<data::MixtureLoader>> loaders;
  std::vector<data::MixtureState> start;

  HeldoutSets(const MidTrainConfig& cfg, const data::MixtureConfig& mix, const std::string& config_file) {
    for (size_t i = 0; i < cfg.eval.sources.size(); ++i) {
      const auto& src = cfg.eval.sources[i];
      const std::string k = str("eval.sources[", i, "].path");
      const std::string dir = glob_directory(src.path);
      if (!fs::is_directory(dir))
        throw Error(str("directory ", dir, " does not exist"),
                    key_context(config_file, k, "a glob of token shard files", src.path));
      data::MixtureConfig ec = mix;
      ec.sources = {{src.name, src.path, 1.0}};
      ec.seed = 0;
      ec.packing = "concat";
      try {
        loaders.push_back(std::make_unique<data::MixtureLoader>(ec, 0, 1));
      } catch (const Error& e) {
        throw Error(e.message(), key_context(config_file, k, "a glob of token shard files", src.path));
      }
      start.push_back(loaders.back()->state());
    }
  }

  // Per source {loss sum, label tokens} of the batches k < eval.batches with k % world == rank
  // (rank r evaluates batches r, r + W, ...: summed over ranks, the same number for any W).
  // `equal_forwards`: sharded parameters are gathered collectively per layer, so every rank of a
  // shard group must run as many forwards (the extra ones are discarded).
  std::vector<std::array<double, 2>> sums(const models::CausalLM& model, const MidTrainConfig& cfg,
                                          const c10::Device& device, int64_t rank, int64_t world,
                                          bool equal_forwards = false) {
    at::NoGradGuard no_grad;
    std::vector<std::array<double, 2>> out;
    for (size_t i = 0; i < loaders.size(); ++i) {
      auto& el = *loaders[i];
      el.restore(start[i]);
      std::array<double, 2> s{0, 0};
      int64_t mine = 0;
      data::Batch last;
      for (int64_t k = 0; k < cfg.eval.batches; ++k) {
        last = el.next();
        if (k % world != rank) continue;
        auto r = micro_batch_loss(model, cfg, device, last, false);
        s[0] += r.first.item<double>();
        s[1] += static_cast<double>(r.second);
        ++mine;
      }
      const int64_t each = (cfg.eval.batches + world - 1) / world;
      for (; equal_forwards && mine < each; ++mine) micro_batch_loss(model, cfg, device, last, false);
      out.push_back(s);
    }
    return out;
  }
};

struct MidLoop {
  const MidTrainConfig& cfg;
  const RunOptions& opts;
  std::unique_ptr<RunContext> ctx;
  std::unique_ptr<RunLock> lock;
  std::unique_ptr<Checkpointer> ckpt;
  std::unique_ptr<models::CausalLM> model;
  std::unique_ptr<DistributedAdamW> opt;
  std::unique_ptr<StepRunner> runner;
  std::unique_ptr<StepLogger> logger;
  data::MixtureConfig mix;
  std::unique_ptr<data::MixtureLoader> loader;
  std::unique_ptr<HeldoutSets> heldout;
  TrainerState state;

  MidLoop(const MidTrainConfig& c, const RunOptions& o) : cfg(c), opts(o) {}

  ErrorContext key(const std::string& k, std::string expected = {}, std::string found = {}) const {
    return key_context(config::origin_of(opts.config_origins, k, opts.config_file), k, std::move(expected),
                       std::move(found));
  }

  void warn(const std::string& m) {
    if (ctx->is_main()) log::warn(m);
  }

  // Rank 0 takes the lock; every rank learns the outcome, so a refused second run fails on all
  // of its ranks at once instead of leaving them waiting in a collective.
  void take_lock() {
    std::string err;
    if (ctx->is_main()) {
      try {
        lock = std::make_unique<RunLock>(cfg.output_dir);
      } catch (const std::exception& e) {
        err = e.what();
      }
    }
    err = ctx->broadcast_string(err);
    if (!err.empty()) throw Error(err);
  }

  void setup_data() {
    mix = load_mixture(cfg);
    loader = std::make_unique<data::MixtureLoader>(mix, ctx->rank(), ctx->world_size());
    // Every eval source is opened now, not at the first evaluation `eval.every` steps in.
    heldout = std::make_unique<HeldoutSets>(cfg, mix, opts.config_file);
  }

  void check_model_fits_data() {
    const int64_t max_pos = model->config().max_position_embeddings;
    if (max_pos > 0 && mix.seq_len > max_pos)
      warn(str("data.seq_len ", mix.seq_len, " exceeds the model's max_position_embeddings ", max_pos,
               ": positions past ", max_pos, " were never trained (RoPE extrapolates); use packed documents shorter "
               "than that or a long-context model"));
  }

  // A resumed run keeps the checkpoint's weights and data position; say so when the config
  // points elsewhere, instead of silently ignoring it.
  void warn_about_resume_changes(const std::string& dir) {
    if (!ctx->is_main()) return;
    const std::string saved = Checkpointer::saved_config(dir);
    if (!saved.empty()) {
      try {
        const auto old = config::parse_config_string<MidTrainConfig>(saved, {}, fs::join(dir, "config.yaml"));
        if (old.model.path != cfg.model.path)
          log::warn(str("model.path differs from the checkpoint's (", old.model.path, " -> ", cfg.model.path,
                        "): the checkpoint's weights are resumed; model.path only matters for a fresh start"));
      } catch (const std::exception& e) {
        log::warn(str(dir, "/config.yaml: not compared with the current config (", e.what(), ")"));
      }
    }
    auto it = state.extra.find("mixture_weights");
    if (it != state.extra.end() && it->second != weights_json(mix))
      log::warn(str("mixture weights differ from the checkpoint's (", it->second, " -> ", weights_json(mix),
                    "): the current config's weights apply from step ", state.step,
                    " on; the data position is the checkpoint's"));
  }

  std::pair<at::Tensor, int64_t> forward_loss(const data::Batch& b, bool train, at::Tensor* objective = nullptr) {
    return micro_batch_loss(*model, cfg, ctx->device(), b, train, objective);
  }

  // Held-out loss per eval source, the batches split over the ranks and summed.
  Scalars evaluate() {
    Scalars out;
    const auto sums = heldout->sums(*model, cfg, ctx->device(), ctx->rank(), ctx->world_size(),
                                     ctx->shard_size() > 1);
    for (size_t i = 0; i < sums.size(); ++i) {
      const auto t = ctx->all_reduce_sum(std::vector<double>{sums[i][0], sums[i][1]});
      out.emplace_back("eval/" + cfg.eval.sources[i].name + "/loss", t[0] / std::max(1.0, t[1]));
    }
    return out;
  }

  // The benchmark suite through the caller's hook (RunOptions::periodic_eval), on rank 0 only: the
  // rollout engine samples from rank 0's full copy of the weights, so the scores do not depend
  // on the world size.
  void evaluate_benchmarks() {
    // Sharded parameters: gathered on every rank (collective) so that rank 0 alone can generate.
    const auto full = model->gather_parameters();
    if (ctx->is_main()) {
      auto sc = opts.periodic_eval(*model, state.step);
      logger->scalars(state.step, sc);
      std::string line = str("eval step ", state.step);
      for (const auto& [k, v] : sc) line += str(" | ", k, " ", v);
      logger->info(line);
    }
    ctx->barrier();
  }

  void save_checkpoint() {
    state.consecutive_skipped = runner->consecutive_skipped();
    state.extra["loader"] = data::to_json(loader->state());
    state.extra["mixture_weights"] = weights_json(mix);
    ckpt->save(*model, *opt, state, config::dump_config(cfg));
  }

  RunResult run() {
    if (cfg.eval.benchmarks.every > 0 && !opts.periodic_eval)
      throw Error("benchmark evaluation needs an evaluation hook (RunOptions::periodic_eval; prism-train mid sets it)",
                  key("eval.benchmarks.every", "0 when run without the hook", std::to_string(cfg.eval.benchmarks.every)));
    ctx = RunContext::create(device_name(cfg.model.device), cfg.dist, cfg.train.threads);
    take_lock();
    ckpt = std::make_unique<Checkpointer>(*ctx, cfg.output_dir, cfg.checkpoint,
                                          CheckpointFaults{opts.faults.checkpoint_pause_ms});
    ckpt->remove_stale_temps();
    ctx->barrier();  // no rank lists the run directory while rank 0 cleans it
    setup_data();
    const std::string resume_dir = ckpt->resolve_resume(opts.resume);
    // The memory plan before the model is loaded (config.json is all it reads).
    const std::string model_dir = resume_dir.empty() ? cfg.model.path : fs::join(resume_dir, "model");
    check_plan_fits(plan_input(cfg, models::CausalLM::read_config(model_dir), ctx->world_size(), ctx->device().str()),
                    device_memory_budget(cfg.model.device_memory, ctx->device(), "model.device_memory"),
                    opts.config_file, ctx->is_main());
    model = load_model(cfg.model, ctx->device(), resume_dir);
    // Token ids the embedding cannot hold are refused now, naming the shards, not inside step 1.
    loader->check_model_vocab(model->config().vocab_size, resume_dir.empty() ? cfg.model.path : resume_dir);
    check_model_fits_data();
    opt = make_optimizer(*model, *ctx, cfg.optimizer, trainable_mask(*model, cfg.train.trainable));
    runner = std::make_unique<StepRunner>(*ctx, *opt, StepOptions{cfg.optimizer.max_grad_norm, cfg.train.max_update_ratio});
    if (!resume_dir.empty()) {
      state = ckpt->load(resume_dir, *opt);
      runner->set_consecutive_skipped(state.consecutive_skipped);
      auto it = state.extra.find("loader");
      PRISM_CHECK(it != state.extra.end(), resume_dir, "/trainer_state.json: no loader state (extra.loader)");
      loader->restore(data::mixture_state_from_json(it->second));
      if (ctx->is_main())
        log::info(str("resumed from ", resume_dir, " at step ", state.step, " (", state.tokens, " tokens)"));
      warn_about_resume_changes(resume_dir);
    }
    ckpt->check_space(*model);
    const double peak =
        cfg.log.peak_tflops > 0 ? cfg.log.peak_tflops * 1e12 : (ctx->on_cpu() ? 0.0 : kH100Bf16PeakFlops);
    if (ctx->is_main()) {
      config::save_config(cfg, fs::join(cfg.output_dir, "config.yaml"));
      const int64_t global_rows = mix.batch_size * cfg.train.grad_accum * ctx->world_size();
      log::info(str("mid-training ", model->config().model_type, " (", model->num_parameters(), " params, ",
                    dtype_name(cfg.model.dtype), ") on ", ctx->device().str(), " x", ctx->world_size(), " ranks (",
                    ctx->comm().backend(), "); global batch ", global_rows, " x ", mix.seq_len, " = ",
                    global_rows * mix.seq_len, " tokens; ",
                    ctx->shard_size() > 1 ? str("parameters sharded over ", ctx->shard_size(), " ranks x ",
                                                ctx->replicate_size(), " replica(s); ")
                                          : std::string(),
                    "optimizer state ", opt->state_bytes() >> 20,
                    " MiB/rank; steps ", state.step, " -> ", cfg.train.steps));
    }
    logger = std::make_unique<StepLogger>(
        *ctx,
        StepLoggerOptions{cfg.output_dir, cfg.log.tensorboard, cfg.train.steps,
                          training_flops_per_token(*model, mix.seq_len), peak},
        resume_dir.empty() ? -1 : state.step);

    RunResult res;
    bool stop = false;
    const auto& nan_steps = opts.faults.nonfinite_steps;
    while (state.step < cfg.train.steps && !stop) {
      const double lr = cfg.optimizer.lr * lr_factor(cfg.schedule, state.step, cfg.train.steps);
      std::vector<data::Batch> mbs;
      int64_t local_tokens = 0, input_tokens = 0;
      for (int64_t i = 0; i < cfg.train.grad_accum; ++i) {
        mbs.push_back(loader->next());
        local_tokens += (mbs.back().labels != -100).sum().item<int64_t>();
        input_tokens += mbs.back().input_ids.numel();
      }
      // The loss is normalised by the label tokens of the whole step (all micro-batches, all
      // ranks), so the update does not depend on how the batch is split.
      const double global_tokens = ctx->all_reduce_sum(static_cast<double>(local_tokens));
      runner->begin(cfg.train.grad_accum, global_tokens);
      const bool inject_nan = std::find(nan_steps.begin(), nan_steps.end(), state.step + 1) != nan_steps.end();
      for (int64_t i = 0; i < cfg.train.grad_accum; ++i) {
        at::Tensor total;  // loss_sum + z_loss_sum: what the gradient is taken of
        auto [ls, n] = forward_loss(mbs[i], true, &total);
        if (inject_nan) {
          ls = ls * std::numeric_limits<double>::quiet_NaN();
          total = total * std::numeric_limits<double>::quiet_NaN();
        }
        runner->backward(total, ls.item<double>());
      }
      const bool want_stop = opts.should_stop && opts.should_stop();
      const StepResult r = runner->finish(lr, want_stop, {static_cast<double>(input_tokens)});
      stop = r.stop;
      if (r.applied) {
        state.last_loss = r.loss;
      } else {
        logger->warn(str("step ", state.step + 1, ": ", r.skip_reason, " (loss ", r.loss, ", grad norm ", r.grad_norm,
                         "); update skipped (", r.consecutive_skipped, " in a row, limit ",
                         cfg.train.max_consecutive_nonfinite, ")"));
      }
      ++state.step;
      state.tokens += static_cast<int64_t>(global_tokens);
      if (r.consecutive_skipped >= cfg.train.max_consecutive_nonfinite) {
        save_checkpoint();
        throw Error(str("training stopped: ", r.consecutive_skipped,
                        " consecutive steps with non-finite loss or gradients or too large updates "
                        "(train.max_consecutive_nonfinite = ",
                        cfg.train.max_consecutive_nonfinite, "); last checkpoint ", ckpt->last(),
                        "; lower optimizer.lr (--resume auto --set optimizer.lr=...), check the data, or raise the "
                        "limit"));
      }
      const bool write = state.step % cfg.train.log_every == 0 || state.step == cfg.train.steps || stop;
      logger->step(state.step,
                   {r.loss, lr, r.grad_norm, r.sums[0], static_cast<double>(state.tokens), !r.applied}, {}, write);
      if (cfg.eval.every > 0 && !heldout->loaders.empty() &&
          (state.step % cfg.eval.every == 0 || state.step == cfg.train.steps)) {
        auto ev = evaluate();
        logger->scalars(state.step, ev);
        std::string line = str("eval step ", state.step);
        for (const auto& [k, v] : ev) line += str(" | ", k, " ", v);
        logger->info(line);
      }
      const int64_t bench_every = cfg.eval.benchmarks.every;
      if (bench_every > 0 && (state.step % bench_every == 0 || state.step == cfg.train.steps)) evaluate_benchmarks();
      if (state.step % cfg.checkpoint.every == 0 || state.step == cfg.train.steps || stop) save_checkpoint();
      if (state.step == opts.faults.sigkill_after_step) std::raise(SIGKILL);
    }
    res.step = state.step;
    res.last_loss = state.last_loss;
    res.stopped = stop && state.step < cfg.train.steps;
    res.last_checkpoint = ckpt->last();
    finish_run(res, *model, *ctx, *logger, cfg.output_dir, cfg.checkpoint.export_final);
    return res;
  }
};

}  // namespace

void finish_run(RunResult& res, const models::CausalLM& model, RunContext& ctx, StepLogger& logger,
                const std::string& output_dir, bool export_final) {
  if (res.stopped) {
    logger.warn(str("stop requested: checkpoint ", res.last_checkpoint, " written at step ", res.step,
                    "; continue with --resume auto"));
    return;
  }
  // The last checkpoint already refused non-finite weights; checked again because "done" and the
  // export are what users and pipelines trust.
  const auto full = model.gather_to_host(ctx.is_main());  // collective with sharded parameters
  const std::string bad = ctx.broadcast_string(ctx.is_main() ? first_nonfinite_parameter(model, full) : "");
  if (!bad.empty())
    throw Error(str("training ended with non-finite weights (parameter '", bad,
                    "'); no final model exported. Resume from a healthy checkpoint with a lower optimizer.lr"));
  if (export_final && ctx.is_main()) {
    res.final_export = fs::join(output_dir, "final");
    model.save_pretrained(res.final_export, full);
    logger.info(str("final model (HF format) -> ", res.final_export));
  }
  ctx.barrier();
}

void MidTrainConfig::validate() const {
  // Only when both keys are usable: the per-field checks report their own errors.
  if (train.steps <= 0) return;
  try {
    validate_schedule(schedule, train.steps);
  } catch (const Error& e) {
    ErrorContext c = e.context();
    if (c.key == "warmup_steps" && schedule.warmup_steps > train.steps) {
      c.expected = str("<= train.steps (", train.steps, ")");
    }
    c.key = c.key == "total_steps" ? "train.steps" : "schedule." + c.key;
    throw Error(e.message(), c);
  }
}

RunResult run_mid_training(const MidTrainConfig& cfg, const RunOptions& opts) {
  config::validate_config(cfg);
  MidLoop loop(cfg, opts);
  return loop.run();
}

std::vector<std::pair<std::string, double>> heldout_loss(const MidTrainConfig& cfg, const models::CausalLM& model,
                                                         const std::string& config_file) {
  const auto mix = load_mixture(cfg);
  HeldoutSets sets(cfg, mix, config_file);
  const auto sums = sets.sums(model, cfg, model.lm_head_weight().device(), 0, 1);
  std::vector<std::pair<std::string, double>> out;
  for (size_t i = 0; i < sums.size(); ++i)
    out.emplace_back(cfg.eval.sources[i].name, sums[i][0] / std::max(1.0, sums[i][1]));
  return out;
}

void export_checkpoint(const std::string& checkpoint_dir, const std::string& out_dir, const std::string& dtype) {
  std::string dir = checkpoint_dir;
  if (!fs::exists(fs::join(dir, "COMPLETE"))) {
    auto latest = CheckpointDir::latest_complete(checkpoint_dir);
    PRISM_CHECK(latest, checkpoint_dir, ": neither a complete checkpoint (COMPLETE marker) nor a run directory with one");
    dir = *latest;
  }
  models::LoadOptions lo;
  if (!dtype.empty()) {
    PRISM_CHECK(dtype == "bf16" || dtype == "fp32", "export: dtype must be bf16 or fp32, got '", dtype, "'");
    lo.dtype = runtime::parse_dtype(dtype, "export dtype");
  } else {
    auto cfg = models::CausalLM::read_config(fs::join(dir, "model"));
    lo.dtype = cfg.torch_dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
  }
  auto m = models::CausalLM::from_pretrained(fs::join(dir, "model"), lo);
  const std::string bad = first_nonfinite_parameter(*m);
  PRISM_CHECK(bad.empty(), dir, ": parameter '", bad, "' holds NaN/inf; refusing to export a diverged model");
  m->save_pretrained(out_dir);
}

}  // namespace prism::train
