// The mid-training loop (include/prism/train/trainer.h; docs/training.md).
#include "prism/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <chrono>
#include <csignal>
#include <limits>
#include <algorithm>
#include <cstring>
#include <cmath>
#include <cstdlib>
#include <thread>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/core/log.h"
#include "prism/data/mixture.h"
#include "prism/distributed/communicator.h"
#include "prism/models/causal_lm.h"
#include "prism/runtime/runtime.h"
#include "prism/ops/linear_cross_entropy.h"
#include "prism/train/checkpoint_dir.h"
#include "prism/train/metrics.h"

namespace prism::train {

namespace {

using Clock = std::chrono::steady_clock;

// A string shared by rank 0 (e.g. a temp directory name that contains its pid).
std::string broadcast_string(distributed::Communicator& comm, const std::string& s, const std::string& device) {
  if (comm.world_size() == 1) return s;
  // int64 cells: every backend reduces/broadcasts int64 (bytes are not universally supported).
  constexpr int64_t kMax = 4096;
  PRISM_CHECK(static_cast<int64_t>(s.size()) < kMax, "path too long to broadcast: ", s);
  auto t = at::zeros({kMax}, at::kLong);
  auto* p = t.data_ptr<int64_t>();
  for (size_t i = 0; i < s.size(); ++i) p[i] = static_cast<unsigned char>(s[i]);
  auto d = t.to(device);
  comm.broadcast(d, 0);
  t = d.to(at::kCPU);
  p = t.data_ptr<int64_t>();
  std::string out;
  for (int64_t i = 0; i < kMax && p[i] != 0; ++i) out += static_cast<char>(p[i]);
  return out;
}


// Fault injection for the crash/resume tests (docs/training.md "Fault injection"); read once.
struct DebugHooks {
  int64_t sigkill_after_step = -1;     // PRISM_DEBUG_SIGKILL_AFTER_STEP: raise(SIGKILL) after this step
  std::vector<int64_t> nonfinite;      // PRISM_DEBUG_NONFINITE_STEPS=3,4: these steps get a NaN loss
  int64_t checkpoint_pause_ms = 0;     // PRISM_DEBUG_CHECKPOINT_PAUSE_MS: sleep before a checkpoint commits
  static DebugHooks from_env() {
    DebugHooks h;
    if (const char* p = std::getenv("PRISM_DEBUG_SIGKILL_AFTER_STEP")) h.sigkill_after_step = std::atoll(p);
    if (const char* p = std::getenv("PRISM_DEBUG_CHECKPOINT_PAUSE_MS")) h.checkpoint_pause_ms = std::atoll(p);
    if (const char* p = std::getenv("PRISM_DEBUG_NONFINITE_STEPS")) {
      std::string s = p;
      size_t pos = 0;
      while (pos < s.size()) {
        size_t comma = s.find(',', pos);
        if (comma == std::string::npos) comma = s.size();
        if (comma > pos) h.nonfinite.push_back(std::atoll(s.substr(pos, comma - pos).c_str()));
        pos = comma + 1;
      }
    }
    return h;
  }
  bool nan_at(int64_t step) const { return std::find(nonfinite.begin(), nonfinite.end(), step) != nonfinite.end(); }
};

struct Trainer {
  const MidTrainConfig& cfg;
  const RunOptions& opts;
  distributed::DistEnv env;
  std::unique_ptr<distributed::Communicator> comm;
  std::string device = "cpu";
  std::unique_ptr<models::CausalLM> model;
  data::MixtureConfig mix;
  std::unique_ptr<data::MixtureLoader> loader;
  std::unique_ptr<DistributedAdamW> opt;
  std::unique_ptr<MetricsWriter> metrics;
  int64_t step = 0;
  int64_t tokens_seen = 0;  // label tokens trained on, all ranks
  int64_t consecutive_nonfinite = 0;
  double last_loss = 0;
  std::string last_checkpoint;
  double flops_per_tok = 0;
  double peak_flops = 0;
  DebugHooks debug = DebugHooks::from_env();
  bool rank0() const { return env.rank == 0; }
  std::unique_ptr<ConsoleProgress> progress;  // rank 0: redrawn line on a TTY, plain lines otherwise
  void print_step(const StepStats& ss) { progress->update(ss); }
  void info(const std::string& msg) {
    if (!rank0()) return;
    if (progress) progress->finish();
    log::info(msg);
  }

  Trainer(const MidTrainConfig& c, const RunOptions& o) : cfg(c), opts(o) {}

  void setup() {
    env = distributed::DistEnv::from_env();
    device = runtime::resolve_device(cfg.model.device, env.local_rank, "model.device").str();
    if (device == "cpu") {
      int64_t threads = cfg.train.threads;
      if (threads == 0)
        threads = std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()) / env.local_world_size);
      at::set_num_threads(static_cast<int>(threads));
    }
    distributed::CommOptions co;
    co.backend = env.world_size == 1 ? "local" : cfg.dist.backend;
    co.device = device;
    co.timeout = std::chrono::milliseconds(cfg.dist.timeout_s * 1000);
    comm = distributed::make_communicator(env, co);

    mix = config::load_config<data::MixtureConfig>(cfg.data.mixture);
    if (cfg.data.seq_len > 0) mix.seq_len = cfg.data.seq_len;
    if (cfg.data.micro_batch_size > 0) mix.batch_size = cfg.data.micro_batch_size;
    if (cfg.data.eos_id >= 0) mix.eos_id = cfg.data.eos_id;
    loader = std::make_unique<data::MixtureLoader>(mix, env.rank, env.world_size);
  }

  std::string resolve_resume() {
    if (opts.resume.empty()) {
      auto existing = CheckpointDir::latest_complete(cfg.output_dir);
      PRISM_CHECK(!existing, cfg.output_dir, ": already holds checkpoint ", existing.value_or(""),
                  "; pass --resume auto to continue it, or choose another output_dir");
      return "";
    }
    if (opts.resume == "auto") return CheckpointDir::latest_complete(cfg.output_dir).value_or("");
    PRISM_CHECK(fs::exists(fs::join(opts.resume, "COMPLETE")), opts.resume,
                ": not a complete checkpoint (no COMPLETE marker)");
    return opts.resume;
  }

  void build_model(const std::string& resume_dir) {
    models::LoadOptions lo;
    lo.dtype = runtime::parse_dtype(cfg.model.dtype, "model.dtype");
    lo.device = device;
    if (!resume_dir.empty()) {
      model = models::CausalLM::from_pretrained(fs::join(resume_dir, "model"), lo);
    } else if (cfg.model.init == "scratch") {
      model = models::CausalLM::from_config(models::CausalLM::read_config(cfg.model.path), lo);
      model->init_weights(static_cast<uint64_t>(cfg.model.init_seed));
    } else {
      model = models::CausalLM::from_pretrained(cfg.model.path, lo);
    }
    const auto& mc = model->config();
    std::vector<bool> decay;
    for (const auto& [name, t] : model->named_parameters()) {
      auto kind = parameter_kind(name, t.dim(), mc.embed_name, mc.tie_word_embeddings ? "" : mc.lm_head_name);
      bool nd = std::find(cfg.optimizer.no_decay.begin(), cfg.optimizer.no_decay.end(), kind) !=
                cfg.optimizer.no_decay.end();
      decay.push_back(!nd);
    }
    opt = std::make_unique<DistributedAdamW>(model->named_parameters(), decay, *comm, cfg.optimizer);
    flops_per_tok = training_flops_per_token(*model, mix.seq_len);
    peak_flops = cfg.log.peak_tflops > 0 ? cfg.log.peak_tflops * 1e12 : (device == "cpu" ? 0.0 : kH100Bf16PeakFlops);
  }

  void restore(const std::string& dir) {
    opt->load(dir);
    auto st = nlohmann::json::parse(fs::read_file(fs::join(dir, "trainer_state.json")));
    step = st.at("step").get<int64_t>();
    tokens_seen = st.at("tokens").get<int64_t>();
    consecutive_nonfinite = st.at("consecutive_nonfinite").get<int64_t>();
    last_loss = st.value("last_loss", 0.0);
    loader->restore(data::mixture_state_from_json(st.at("loader").dump()));
    runtime::restore_rng_state({st.at("rng_cpu").get<std::string>(), st.value("rng_cuda", std::string())},
                               at::Device(device));
    PRISM_CHECK(opt->steps() <= step, dir, ": optimizer state is at step ", opt->steps(), " but trainer_state at ", step);
    last_checkpoint = dir;
    if (rank0()) log::info(str("resumed from ", dir, " at step ", step, " (", tokens_seen, " tokens)"));
  }

  void save_checkpoint() {
    CheckpointDir ck(cfg.output_dir, static_cast<int>(cfg.checkpoint.keep_last));
    std::string tmp = rank0() ? ck.begin(step) : std::string();
    tmp = broadcast_string(*comm, tmp, device);
    if (rank0()) {
      model->save_pretrained(fs::join(tmp, "model"));
      nlohmann::json st;
      st["step"] = step;
      st["tokens"] = tokens_seen;
      st["consecutive_nonfinite"] = consecutive_nonfinite;
      st["last_loss"] = last_loss;
      st["world_size"] = env.world_size;
      st["loader"] = nlohmann::json::parse(data::to_json(loader->state()));
      const auto rng = runtime::save_rng_state(at::Device(device));
      st["rng_cpu"] = rng.cpu;
      if (!rng.cuda.empty()) st["rng_cuda"] = rng.cuda;
      fs::write_file_atomic(fs::join(tmp, "trainer_state.json"), st.dump(2));
      config::save_config(cfg, fs::join(tmp, "config.yaml"));
    }
    comm->barrier();  // the directory exists before other ranks write into it
    opt->save(tmp);
    if (debug.checkpoint_pause_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(debug.checkpoint_pause_ms));
    comm->barrier();
    std::string final_dir;
    if (rank0()) final_dir = ck.commit(tmp, step);
    last_checkpoint = broadcast_string(*comm, final_dir, device);
  }

  // Held-out loss per eval source: the same first `batches` micro-batches of every source each time.
  std::vector<std::pair<std::string, double>> evaluate() {
    std::vector<std::pair<std::string, double>> out;
    at::NoGradGuard no_grad;
    for (const auto& src : cfg.eval.sources) {
      data::MixtureConfig ec = mix;
      ec.sources = {{src.name, src.path, 1.0}};
      ec.seed = 0;
      ec.packing = "concat";
      data::MixtureLoader el(ec, env.rank, env.world_size);
      double sum = 0, count = 0;
      for (int64_t k = 0; k < cfg.eval.batches; ++k) {
        auto b = el.next();
        auto r = forward_loss(b, false);
        sum += r.first.item<double>();
        count += static_cast<double>(r.second);
      }
      auto t = at::tensor({sum, count}, at::kDouble).to(device);
      comm->all_reduce_sum(t);
      t = t.to(at::kCPU);
      out.emplace_back("eval/" + src.name + "/loss", t[0].item<double>() / std::max(1.0, t[1].item<double>()));
    }
    return out;
  }

  // Sum of token losses of one micro-batch (detached, for logging) and its label-token count;
  // `objective` gets the differentiable loss_sum + z_loss_sum (z-loss only when training). The
  // lm_head is fused with the loss (ops::linear_cross_entropy; with kernels: auto the [tokens, vocab]
  // logits are never materialised whole).
  std::pair<at::Tensor, int64_t> forward_loss(const data::Batch& b, bool train, at::Tensor* objective = nullptr) {
    models::ForwardOptions fo;
    fo.position_ids = b.position_ids.reshape({1, -1});
    fo.cu_seqlens = b.cu_seqlens;
    fo.activation_checkpointing = train && cfg.model.activation_checkpointing;
    fo.impl = cfg.model.kernels == "reference" ? ops::Impl::kReference : ops::Impl::kAuto;
    auto ids = b.input_ids.reshape({1, -1}).to(device);
    fo.skip_lm_head = true;
    auto out = model->forward(ids, fo);
    auto labels = b.labels.reshape({-1}).to(device);
    ops::LinearCrossEntropyOptions co;
    co.z_loss_weight = train ? cfg.train.z_loss : 0.0;
    co.logits_scaling = model->config().logits_scaling;
    auto ce = ops::linear_cross_entropy(out.last_hidden.reshape({-1, out.last_hidden.size(-1)}),
                                        model->lm_head_weight(), labels, co, fo.impl);
    if (objective) *objective = ce.loss;
    return {ce.loss_sum, (b.labels != -100).sum().item<int64_t>()};
  }

  RunResult run() {
    setup();
    const std::string resume_dir = resolve_resume();
    build_model(resume_dir);
    if (!resume_dir.empty()) restore(resume_dir);
    if (rank0()) {
      fs::create_directories(cfg.output_dir);
      config::save_config(cfg, fs::join(cfg.output_dir, "config.yaml"));
      metrics = std::make_unique<MetricsWriter>(cfg.output_dir, cfg.log.tensorboard);
      progress = std::make_unique<ConsoleProgress>();
      const int64_t global_rows = mix.batch_size * cfg.train.grad_accum * env.world_size;
      log::info(str("mid-training ", model->config().model_type, " (", model->num_parameters(), " params, ",
                    cfg.model.dtype, ") on ", device, " x", env.world_size, " ranks (", comm->backend(),
                    "); global batch ", global_rows, " x ", mix.seq_len, " = ", global_rows * mix.seq_len,
                    " tokens; optimizer state ", opt->state_bytes() >> 20, " MiB/rank; steps ", step, " -> ",
                    cfg.train.steps));
    }
    RunResult res;
    const auto t_start = Clock::now();
    const int64_t start_step = step;
    auto t_last = t_start;
    int64_t tokens_since_log = 0;
    bool stop = false;
    while (step < cfg.train.steps && !stop) {
      const double lr = cfg.optimizer.lr * lr_factor(cfg.schedule, step, cfg.train.steps);
      std::vector<data::Batch> mbs;
      int64_t local_tokens = 0, input_tokens = 0;
      for (int64_t i = 0; i < cfg.train.grad_accum; ++i) {
        mbs.push_back(loader->next());
        local_tokens += (mbs.back().labels != -100).sum().item<int64_t>();
        input_tokens += mbs.back().input_ids.numel();
      }
      // The loss is normalised by the label tokens of the whole step (all micro-batches, all
      // ranks), so the update does not depend on how the batch is split.
      const double global_tokens = comm->all_reduce_sum(static_cast<double>(local_tokens));
      opt->zero_grad();
      double loss_local = 0;
      for (int64_t i = 0; i < cfg.train.grad_accum; ++i) {
        opt->set_sync(i + 1 == cfg.train.grad_accum);
        at::Tensor total;  // loss_sum + z_loss_sum: what the gradient is taken of
        auto [ls, n] = forward_loss(mbs[i], true, &total);
        if (debug.nan_at(step + 1)) {
          ls = ls * std::numeric_limits<double>::quiet_NaN();
          total = total * std::numeric_limits<double>::quiet_NaN();
        }
        (total / std::max(1.0, global_tokens)).backward();
        loss_local += ls.item<double>();
      }
      opt->finish_grad_sync();
      const double gnorm = opt->grad_norm();
      const bool want_stop = opts.should_stop && opts.should_stop();
      auto agg = at::tensor({loss_local, want_stop ? 1.0 : 0.0, static_cast<double>(input_tokens)}, at::kDouble).to(device);
      comm->all_reduce_sum(agg);
      agg = agg.to(at::kCPU);
      const double loss = agg[0].item<double>() / std::max(1.0, global_tokens);
      stop = agg[1].item<double>() > 0;
      const bool finite = std::isfinite(loss) && std::isfinite(gnorm);
      if (finite) {
        opt->clip_grads(gnorm, cfg.optimizer.max_grad_norm);
        opt->step(lr);
        consecutive_nonfinite = 0;
        last_loss = loss;
      } else {
        ++consecutive_nonfinite;
        if (rank0())
          log::warn(str("step ", step + 1, ": non-finite ", std::isfinite(loss) ? "gradient norm" : "loss",
                        " (loss ", loss, ", grad norm ", gnorm, "); update skipped (", consecutive_nonfinite,
                        " in a row, limit ", cfg.train.max_consecutive_nonfinite, ")"));
      }
      ++step;
      tokens_seen += static_cast<int64_t>(global_tokens);
      tokens_since_log += static_cast<int64_t>(agg[2].item<double>());
      if (consecutive_nonfinite >= cfg.train.max_consecutive_nonfinite) {
        save_checkpoint();
        throw Error(str("training stopped: ", consecutive_nonfinite,
                        " consecutive steps with non-finite loss or gradients (train.max_consecutive_nonfinite = ",
                        cfg.train.max_consecutive_nonfinite, "); last checkpoint ", last_checkpoint,
                        "; lower optimizer.lr, check the data, or raise the limit"));
      }
      if (step % cfg.train.log_every == 0 || step == cfg.train.steps || stop) {
        const auto now = Clock::now();
        const double dt = std::chrono::duration<double>(now - t_last).count();
        const double elapsed = std::chrono::duration<double>(now - t_start).count();
        const double tps = dt > 0 ? static_cast<double>(tokens_since_log) / dt : 0;
        const double per_step = elapsed / static_cast<double>(step - start_step);
        std::vector<std::pair<std::string, double>> sc = {{"loss", loss}, {"lr", lr}, {"grad_norm", gnorm},
                                                          {"tokens_per_s", tps}, {"tokens", static_cast<double>(tokens_seen)},
                                                          {"skipped", finite ? 0.0 : 1.0}};
        StepStats ss;
        ss.step = step;
        ss.total_steps = cfg.train.steps;
        ss.loss = loss;
        ss.lr = lr;
        ss.grad_norm = gnorm;
        ss.tokens_per_s = tps;
        ss.eta_s = per_step * static_cast<double>(cfg.train.steps - step);
        if (peak_flops > 0) {
          ss.mfu = mfu(tps, flops_per_tok, peak_flops * env.world_size);
          sc.emplace_back("mfu", ss.mfu);
        }
        ss.mem_bytes = static_cast<double>(device == "cpu" ? runtime::cpu_rss_bytes()
                                                           : runtime::peak_memory_bytes(at::Device(device)));
        sc.emplace_back("mem_gib", ss.mem_bytes / (1 << 30));
        if (rank0()) {
          metrics->log(step, sc);
          print_step(ss);
        }
        t_last = now;
        tokens_since_log = 0;
      }
      if (cfg.eval.every > 0 && !cfg.eval.sources.empty() && (step % cfg.eval.every == 0 || step == cfg.train.steps)) {
        auto ev = evaluate();
        if (rank0()) {
          metrics->log(step, ev);
          std::string line = str("eval step ", step);
          for (const auto& [k, v] : ev) line += str(" | ", k, " ", v);
          info(line);
        }
      }
      if (step % cfg.checkpoint.every == 0 || step == cfg.train.steps || stop) save_checkpoint();
      if (step == debug.sigkill_after_step) std::raise(SIGKILL);
    }
    res.step = step;
    res.last_loss = last_loss;
    res.stopped = stop;
    res.last_checkpoint = last_checkpoint;
    if (stop) {
      if (rank0())
        log::warn(str("stop requested: checkpoint ", last_checkpoint, " written at step ", step,
                      "; continue with --resume auto"));
      return res;
    }
    if (cfg.checkpoint.export_final && rank0()) {
      res.final_export = fs::join(cfg.output_dir, "final");
      model->save_pretrained(res.final_export);
      info(str("final model (HF format) -> ", res.final_export));
    }
    comm->barrier();
    return res;
  }
};

}  // namespace

RunResult run_mid_training(const MidTrainConfig& cfg, const RunOptions& opts) {
  config::validate_config(const_cast<MidTrainConfig&>(cfg));
  Trainer t(cfg, opts);
  return t.run();
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
  m->save_pretrained(out_dir);
}

double training_flops_per_token(const models::CausalLM& m, int64_t seq, int64_t* counted_params) {
  const auto& c = m.config();
  int64_t n = m.num_parameters();
  for (const auto& [name, t] : m.named_parameters())
    if (name == c.embed_name && !c.tie_word_embeddings) n -= t.numel();
  int64_t attn_blocks = 0;
  for (const auto& l : c.layers)
    for (const auto& b : l.blocks) attn_blocks += b.kind == models::BlockKind::kAttention;
  if (counted_params) *counted_params = n;
  return flops_per_token(n, attn_blocks, c.num_heads, c.head_dim, seq);
}

}  // namespace prism::train
