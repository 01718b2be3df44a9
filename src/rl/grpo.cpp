// The GRPO loop (include/prism/rl/grpo.h; docs/rl.md).
#include "prism/rl/grpo.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <limits>
#include <map>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/core/hash.h"
#include "prism/core/log.h"
#include "prism/distributed/communicator.h"
#include "prism/eval/suite.h"
#include "prism/generate/engine.h"
#include "prism/io/tokenizer.h"
#include "prism/models/causal_lm.h"
#include "prism/rewards/registry.h"
#include "prism/rl/grpo_loss.h"
#include "prism/rl/prompts.h"
#include "prism/rl/rollout_batch.h"
#include "prism/train/checkpointer.h"
#include "prism/train/frozen_shards.h"
#include "prism/train/model_setup.h"
#include "prism/train/run_context.h"
#include "prism/train/run_lock.h"
#include "prism/train/step.h"
#include "prism/train/step_logger.h"

namespace prism::rl {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The sampling seed of a prompt draw: a sample depends only on the draw index and its sample
// index (the engine's stream), never on which rank, round or slot generated it.
uint64_t draw_seed(int64_t base, int64_t draw) {
  return splitmix64(static_cast<uint64_t>(base) ^ splitmix64(static_cast<uint64_t>(draw) + 0x5851f42d4c957f2dULL));
}

// One prompt and its G samples.
struct Group {
  Prompt prompt;
  std::vector<generate::Sample> samples;
  std::vector<rewards::Verdict> verdicts;
  std::vector<double> rewards;
  bool zero_std() const {
    return std::all_of(rewards.begin(), rewards.end(), [&](double r) { return r == rewards.front(); });
  }
};

struct GrpoLoop {
  const RlConfig& cfg;
  const train::RunOptions& opts;
  std::unique_ptr<train::RunContext> ctx;
  std::unique_ptr<train::RunLock> lock;
  std::unique_ptr<train::Checkpointer> ckpt;
  std::unique_ptr<models::CausalLM> model, ref;
  std::unique_ptr<train::FrozenShards> ref_shards;  // the reference's layout under parameter sharding
  std::unique_ptr<train::DistributedAdamW> opt;
  std::unique_ptr<train::StepRunner> runner;
  std::unique_ptr<train::StepLogger> logger;
  std::unique_ptr<io::Tokenizer> tokenizer;
  std::unique_ptr<PromptSet> prompts;
  std::unique_ptr<generate::Engine> engine;
  std::unique_ptr<rewards::Rewarder> rewarder;
  train::TrainerState state;
  ops::Impl impl = ops::Impl::kAuto;
  int64_t prompts_per_rank = 0;
  PolicyLossOptions loss_opts;
  AdvantageOptions adv_opts;
  std::unique_ptr<eval::SuiteConfig> suite;

  GrpoLoop(const RlConfig& c, const train::RunOptions& o) : cfg(c), opts(o) {}

  ErrorContext key(const std::string& k, std::string expected = {}, std::string found = {}) const {
    return key_context(config::origin_of(opts.config_origins, k, opts.config_file), k, std::move(expected),
                       std::move(found));
  }

  void take_lock() {
    std::string err;
    if (ctx->is_main()) {
      try {
        lock = std::make_unique<train::RunLock>(cfg.output_dir);
      } catch (const std::exception& e) {
        err = e.what();
      }
    }
    err = ctx->broadcast_string(err);
    if (!err.empty()) throw Error(err);
  }

  void check_layout() {
    const int64_t W = ctx->world_size();
    if (cfg.rollout.prompts_per_step % W != 0)
      throw Error(str("prompts per step must split evenly over the ", W, " ranks"),
                  key("rollout.prompts_per_step", str("a multiple of ", W), std::to_string(cfg.rollout.prompts_per_step)));
    prompts_per_rank = cfg.rollout.prompts_per_step / W;
    const int64_t rollouts = prompts_per_rank * cfg.rollout.samples_per_prompt;
    if (cfg.train.mini_batches > rollouts)
      throw Error(str("each rank has ", rollouts, " rollouts per step, fewer than the updates asked for"),
                  key("train.mini_batches", str("at most ", rollouts), std::to_string(cfg.train.mini_batches)));
  }

  void setup_objective() {
    adv_opts.mode = parse_advantage_mode(cfg.advantage.mode);
    adv_opts.ddof = cfg.advantage.ddof;
    adv_opts.eps = cfg.advantage.eps;
    loss_opts.clip_low = cfg.loss.clip_low;
    loss_opts.clip_high = cfg.loss.clip_high;
    loss_opts.dual_clip = cfg.loss.dual_clip;
    loss_opts.tis_cap = cfg.loss.tis_cap;
    loss_opts.sequence_ratio = cfg.loss.sequence_ratio;
    loss_opts.aggregation = parse_loss_aggregation(cfg.loss.aggregation);
    loss_opts.norm_constant =
        cfg.loss.norm_constant > 0 ? cfg.loss.norm_constant : static_cast<double>(cfg.rollout.max_new_tokens);
    loss_opts.entropy_coef = cfg.loss.entropy_coef;
    loss_opts.kl_estimator = parse_kl_estimator(cfg.kl.estimator);
    loss_opts.kl_beta = cfg.kl.where == "loss" ? cfg.kl.beta : 0.0;
    if (cfg.loss.dual_clip != 0 && cfg.loss.dual_clip <= 1)
      throw Error("the dual-clip constant must exceed 1", key("loss.dual_clip", "0 (off) or > 1", std::to_string(cfg.loss.dual_clip)));
  }

  void load_reference(const std::string& resume_dir) {
    if (cfg.kl.beta <= 0) return;  // beta = 0: no reference model at all
    const std::string saved = resume_dir.empty() ? "" : fs::join(resume_dir, "ref");
    if (!saved.empty() && fs::exists(fs::join(saved, "config.json"))) {
      train::ModelSection sec = cfg.model;
      sec.path = saved;
      sec.init = train::ModelInit::kPretrained;
      ref = train::load_model(sec, ctx->device(), "", /*trainable=*/false);
    } else {
      // The reference is the policy the run started from (a scratch init repeats with its seed).
      ref = train::load_model(cfg.model, ctx->device(), "", /*trainable=*/false);
    }
    for (const auto& [name, p] : ref->named_parameters()) p.requires_grad_(false);
    // Sharded like the policy (same shard group), frozen: its forwards gather layer by layer.
    if (ctx->shard_size() > 1) {
      ref_shards = std::make_unique<train::FrozenShards>(*ref, *ctx->gather_comm());
      if (ctx->is_main())
        log::info(str("reference sharded over ", ctx->shard_size(), " ranks: ", ref_shards->resident_bytes(),
                      " bytes per rank between uses (whole: ", ref->num_parameters() * c10::elementSize(ref->dtype()),
                      ")"));
    }
  }

  void setup() {
    ctx = train::RunContext::create(train::device_name(cfg.model.device), cfg.dist, cfg.train.threads);
    check_layout();
    setup_objective();
    take_lock();
    ckpt = std::make_unique<train::Checkpointer>(*ctx, cfg.output_dir, cfg.checkpoint,
                                                 train::CheckpointFaults{opts.faults.checkpoint_pause_ms});
    ckpt->remove_stale_temps();
    ctx->barrier();
    const std::string tok_path = fs::join(cfg.model.path, "tokenizer.json");
    if (!fs::exists(tok_path))
      throw Error(str(tok_path, " does not exist: prompts are rendered and completions decoded with the checkpoint's tokenizer"),
                  key("model.path", "an HF directory with tokenizer.json", cfg.model.path));
    tokenizer = io::Tokenizer::from_file(tok_path);
    const std::string resume_dir = ckpt->resolve_resume(opts.resume);
    // The memory plan before the model is loaded (config.json is all it reads).
    const std::string model_dir = resume_dir.empty() ? cfg.model.path : fs::join(resume_dir, "model");
    train::check_plan_fits(plan_input(cfg, models::CausalLM::read_config(model_dir), ctx->world_size(), ctx->device().str()),
                           train::device_memory_budget(cfg.model.device_memory, ctx->device(), "model.device_memory"),
                           opts.config_file, ctx->is_main());
    model = train::load_model(cfg.model, ctx->device(), resume_dir);
    const int64_t ctx_len = model->config().max_position_embeddings;
    const int64_t max_prompt = ctx_len > 0 ? ctx_len - cfg.rollout.max_new_tokens : std::numeric_limits<int64_t>::max();
    if (max_prompt < 1)
      throw Error(str("the model's context is ", ctx_len, " tokens"),
                  key("rollout.max_new_tokens", str("below ", ctx_len), std::to_string(cfg.rollout.max_new_tokens)));
    prompts = std::make_unique<PromptSet>(cfg.data, *tokenizer, max_prompt);
    impl = cfg.model.kernels == train::Kernels::kReference ? ops::Impl::kReference : ops::Impl::kAuto;
    opt = train::make_optimizer(*model, *ctx, cfg.optimizer, train::trainable_mask(*model, cfg.train.trainable));
    runner = std::make_unique<train::StepRunner>(*ctx, *opt,
                                                 train::StepOptions{cfg.optimizer.max_grad_norm, cfg.train.max_update_ratio});
    if (!resume_dir.empty()) {
      state = ckpt->load(resume_dir, *opt);
      runner->set_consecutive_skipped(state.consecutive_skipped);
      auto it = state.extra.find("prompts");
      PRISM_CHECK(it != state.extra.end(), resume_dir, "/trainer_state.json: no prompt cursor (extra.prompts)");
      prompts->restore(it->second);
      if (ctx->is_main()) log::info(str("resumed from ", resume_dir, " at step ", state.step));
    }
    load_reference(resume_dir);
    ckpt->check_space(*model);
    // Built after the optimizer re-pointed the parameters into its buffers: the engine reads the
    // live tensors, so every update is what the next rollout samples from.
    generate::EngineOptions eo;
    eo.slots = cfg.rollout.slots;
    engine = std::make_unique<generate::Engine>(*model, eo, tokenizer.get());
    auto rcfg = cfg.rewards;
    if (rcfg.domains.empty()) rcfg.domains = rewards::RewardsConfig::defaults().domains;
    rewarder = std::make_unique<rewards::Rewarder>(rcfg);
    if (cfg.eval.every > 0) {
      suite = std::make_unique<eval::SuiteConfig>(eval::load_suite(cfg.eval.suite, cfg.eval.limit));
    }
    for (const auto& d : prompts->domains())
      if (!rewarder->handles(d))
        throw Error(str("the prompts have domain '", d, "' but no verifier scores it"),
                    key("rewards.domains", "an entry for every prompt domain", d));
    if (ctx->is_main()) {
      config::save_config(cfg, fs::join(cfg.output_dir, "config.yaml"));
      log::info(str("GRPO ", model->config().model_type, " (", model->num_parameters(), " params, ",
                    train::dtype_name(cfg.model.dtype), ") on ", ctx->device().str(), " x", ctx->world_size(),
                    " ranks; ", cfg.rollout.prompts_per_step, " prompts x ", cfg.rollout.samples_per_prompt,
                    " samples per step, ", cfg.train.mini_batches, " update(s) per step; ", prompts->size(),
                    " prompts in ", prompts->domains().size(), " domain(s); reference ",
                    ref ? (cfg.kl.ref_update_every > 0 ? "Polyak-updated" : "frozen") : "none (kl.beta = 0)",
                    "; steps ", state.step, " -> ", cfg.train.steps));
    }
    logger = std::make_unique<train::StepLogger>(
        *ctx, train::StepLoggerOptions{cfg.output_dir, cfg.log.tensorboard, cfg.train.steps, 0.0, 0.0},
        resume_dir.empty() ? -1 : state.step);
  }

  // Draws `n_global` prompts (identical on every rank), generates and scores this rank's slice.
  std::vector<Group> rollout_round(int64_t n_global, double& gen_s, double& reward_s, int64_t& gen_tokens) {
    auto drawn = prompts->take(n_global);
    const int64_t per = n_global / ctx->world_size();
    std::vector<Group> groups;
    std::vector<generate::Request> reqs;
    for (int64_t i = ctx->rank() * per; i < (ctx->rank() + 1) * per; ++i) {
      Group g;
      g.prompt = std::move(drawn[static_cast<size_t>(i)]);
      generate::Request r;
      r.prompt = g.prompt.tokens;
      r.params.n = cfg.rollout.samples_per_prompt;
      r.params.temperature = cfg.rollout.temperature;
      r.params.top_p = cfg.rollout.top_p;
      r.params.top_k = cfg.rollout.top_k;
      r.params.min_p = cfg.rollout.min_p;
      r.params.max_new_tokens = cfg.rollout.max_new_tokens;
      r.params.stop = cfg.rollout.stop;
      if (cfg.rollout.ignore_eos) r.params.stop_token_ids = std::vector<int64_t>{};
      r.params.seed = draw_seed(cfg.rollout.seed, g.prompt.draw);
      reqs.push_back(std::move(r));
      groups.push_back(std::move(g));
    }
    auto t0 = Clock::now();
    std::vector<generate::Sample> samples;
    {
      at::NoGradGuard no_grad;
      samples = engine->generate(reqs);
    }
    gen_s += since(t0);
    t0 = Clock::now();
    std::vector<rewards::Sample> to_score;
    for (auto& s : samples) {
      auto& g = groups[static_cast<size_t>(s.request)];
      rewards::Sample rs = g.prompt.target;
      rs.completion = s.text;
      rs.truncated = s.finish_reason == generate::FinishReason::kLength;
      rs.metadata["completion_tokens"] = std::to_string(s.completion_length);
      to_score.push_back(std::move(rs));
      gen_tokens += s.completion_length;
    }
    auto verdicts = rewarder->score_batch(to_score);
    for (size_t i = 0; i < samples.size(); ++i) {
      auto& g = groups[static_cast<size_t>(samples[i].request)];
      g.rewards.push_back(verdicts[i].reward);
      g.verdicts.push_back(std::move(verdicts[i]));
      g.samples.push_back(std::move(samples[i]));
    }
    reward_s += since(t0);
    return groups;
  }

  // Dynamic sampling (DAPO): groups whose rewards are all equal carry no gradient; refill with
  // new prompts, every rank drawing the same global amount per round so the prompt cursor stays
  // identical. A rank still short after max_rounds tops up with dropped groups (advantage 0).
  std::vector<Group> collect_groups(double& gen_s, double& reward_s, int64_t& gen_tokens, int64_t& rounds) {
    std::vector<Group> kept, dropped;
    rounds = 0;
    for (;;) {
      auto groups = rollout_round(cfg.rollout.prompts_per_step, gen_s, reward_s, gen_tokens);
      ++rounds;
      for (auto& g : groups) {
        if (cfg.dynamic_sampling.enabled && g.zero_std()) dropped.push_back(std::move(g));
        else if (static_cast<int64_t>(kept.size()) < prompts_per_rank) kept.push_back(std::move(g));
      }
      if (!cfg.dynamic_sampling.enabled) break;
      const double short_by = static_cast<double>(prompts_per_rank - static_cast<int64_t>(kept.size()));
      if (ctx->comm().all_reduce_max(short_by) <= 0 || rounds >= cfg.dynamic_sampling.max_rounds) break;
    }
    for (size_t i = 0; static_cast<int64_t>(kept.size()) < prompts_per_rank && i < dropped.size(); ++i)
      kept.push_back(std::move(dropped[i]));
    return kept;
  }

  // Under parameter sharding every forward gathers layer by layer over the shard group, so its
  // ranks must run the same number of forwards and backwards per mini-batch. Ranks short of the
  // group's most micro-batches get padding ones: a 1-token row with nothing counted (mask false),
  // whose loss and gradient are exact zeros, so the update and the global normalisers are the
  // unpadded ones.
  void equalise_micro_batches(std::vector<std::vector<MicroBatch>>& minis) {
    if (ctx->shard_size() <= 1) return;
    for (auto& mini : minis) {
      const auto most = static_cast<size_t>(ctx->shard_comm()->all_reduce_max(static_cast<double>(mini.size())));
      while (mini.size() < most) mini.push_back(padding_micro_batch());
    }
  }

  static MicroBatch padding_micro_batch() {
    const auto i64 = at::kLong;
    MicroBatch mb;
    mb.input_ids = at::zeros({1, 1}, i64);
    mb.position_ids = at::zeros({1, 1}, i64);
    mb.cu_seqlens = at::tensor(std::vector<int64_t>{0, 1}, i64);
    mb.labels = at::zeros({1}, i64);  // a real label: the head's forward and backward run as for any row
    mb.mask = at::zeros({1}, at::kBool);
    mb.advantages = at::zeros({1}, at::kFloat);
    mb.sampler_logp = at::zeros({1}, at::kFloat);
    mb.seq_ids = at::zeros({1}, i64);
    mb.num_seqs = 1;
    return mb;
  }

  static void set_advantages(MicroBatch& mb, const std::vector<Rollout>& rollouts) {
    auto adv = at::zeros_like(mb.advantages);
    auto* a = adv.data_ptr<float>();
    const auto* seq = mb.seq_ids.data_ptr<int64_t>();
    const auto* lab = mb.labels.data_ptr<int64_t>();
    for (int64_t t = 0; t < adv.numel(); ++t)
      if (lab[t] != -100) a[t] = static_cast<float>(rollouts[static_cast<size_t>(mb.rollouts[static_cast<size_t>(seq[t])])].advantage);
    mb.advantages = adv;
  }

  // The suite on the live policy, on rank 0 (the others wait): pass@k per benchmark and domain,
  // the macro average, and the report under <output_dir>/eval/step-N.
  void evaluate() {
    train::Scalars sc;
    // Sharded parameters: gathered on every rank (collective) so that rank 0 alone can generate.
    const auto full = model->gather_parameters();
    if (ctx->is_main()) {
      sc = eval::evaluate_in_loop(*suite, *model, *tokenizer, fs::join(cfg.output_dir, str("eval/step-", state.step)),
                                  str("step ", state.step));
      logger->scalars(state.step, sc);
      logger->info(str("eval step ", state.step, ": macro average ", sc.back().second));
    }
    ctx->barrier();
  }

  void polyak_update() {
    at::NoGradGuard ng;
    const double a = cfg.kl.ref_alpha;
    if (ref_shards) {  // on the reference's pieces, from the gathered policy
      const auto full = model->gather_parameters();
      ref_shards->blend_from(*model, a);
      return;
    }
    const auto& pp = model->named_parameters();
    const auto& rp = ref->named_parameters();
    for (size_t i = 0; i < pp.size(); ++i) rp[i].second.mul_(1.0 - a).add_(pp[i].second.to(rp[i].second.scalar_type()), a);
  }

  void save_checkpoint() {
    state.consecutive_skipped = runner->consecutive_skipped();
    state.extra["prompts"] = prompts->state_json();
    std::vector<std::pair<std::string, const models::CausalLM*>> extra_models;
    // A sharded reference is gathered layer by layer by the checkpointer (CausalLM::gather_to_host).
    if (ref && cfg.kl.ref_update_every > 0) extra_models.emplace_back("ref", ref.get());
    ckpt->save(*model, *opt, state, config::dump_config(cfg), extra_models);
  }

  train::RunResult run() {
    setup();
    train::RunResult res;
    bool stop = false;
    const auto& domains = prompts->domains();
    const size_t D = domains.size();
    const auto& nan_steps = opts.faults.nonfinite_steps;
    while (state.step < cfg.train.steps && !stop) {
      const double lr = cfg.optimizer.lr * train::lr_factor(cfg.schedule, state.step, cfg.train.steps);
      double gen_s = 0, reward_s = 0;
      int64_t gen_tokens = 0, rounds = 0;
      std::vector<Group> groups;
      {
        // The engine decodes from the live parameters: under parameter sharding they are gathered
        // (full weights resident) for the whole rollout phase, since ranks decode different
        // numbers of steps and per-layer gathers would need them in lockstep; freed afterwards.
        const auto full = model->gather_parameters();
        groups = collect_groups(gen_s, reward_s, gen_tokens, rounds);
      }
      const auto t_update = Clock::now();

      // Rollouts in group order; rewards [P, G] for the advantages.
      const int64_t G = cfg.rollout.samples_per_prompt;
      std::vector<Rollout> rollouts;
      auto rew = at::zeros({static_cast<int64_t>(groups.size()), G}, at::kDouble);
      std::vector<double> dom_stats(D * 4, 0.0);  // per domain: samples, reward sum, reward^2 sum, correct
      double trunc = 0, len_sum = 0, len_max = 0, zero_std = 0;
      for (size_t gi = 0; gi < groups.size(); ++gi) {
        const auto& g = groups[gi];
        const size_t d = static_cast<size_t>(std::find(domains.begin(), domains.end(), g.prompt.target.domain) - domains.begin());
        zero_std += g.zero_std() ? 1 : 0;
        for (int64_t s = 0; s < G; ++s) {
          const auto& smp = g.samples[static_cast<size_t>(s)];
          const double r = g.rewards[static_cast<size_t>(s)];
          rew[static_cast<int64_t>(gi)][s] = r;
          dom_stats[d * 4 + 0] += 1;
          dom_stats[d * 4 + 1] += r;
          dom_stats[d * 4 + 2] += r * r;
          dom_stats[d * 4 + 3] += g.verdicts[static_cast<size_t>(s)].correct ? 1 : 0;
          const bool cut = smp.finish_reason == generate::FinishReason::kLength;
          trunc += cut ? 1 : 0;
          len_sum += static_cast<double>(smp.completion_length);
          len_max = std::max(len_max, static_cast<double>(smp.completion_length));
          Rollout ro;
          ro.prompt = g.prompt.tokens;
          ro.completion = smp.tokens;
          ro.sampler_logprobs = smp.logprobs;
          ro.counted = !(cut && cfg.train.truncated == "mask");
          rollouts.push_back(std::move(ro));
        }
      }

      // Mini-batches: contiguous shares of the rollouts, each packed into micro-batch rows.
      const int64_t N = static_cast<int64_t>(rollouts.size());
      const int64_t M = cfg.train.mini_batches;
      std::vector<std::vector<MicroBatch>> minis;
      for (int64_t k = 0; k < M; ++k) {
        std::vector<int64_t> idx;
        for (int64_t i = k * N / M; i < (k + 1) * N / M; ++i) idx.push_back(i);
        minis.push_back(pack_rollouts(rollouts, idx, cfg.train.micro_batch_tokens));
      }
      equalise_micro_batches(minis);

      // Reference log-probs (and, for later mini-batches, the pre-update policy's) before any update.
      {
        at::NoGradGuard ng;
        for (int64_t k = 0; k < M; ++k)
          for (auto& mb : minis[static_cast<size_t>(k)]) {
            if (ref) mb.ref_logp = token_logprobs(*ref, mb, ctx->device(), impl).logp.detach();
            if (k > 0) mb.old_logp = token_logprobs(*model, mb, ctx->device(), impl).logp.detach();
          }
      }
      // KL in the reward: each sample's reward loses beta * its summed k1 estimate (verl's
      // use_kl_in_reward), before the advantages are formed.
      if (ref && cfg.kl.where == "reward") {
        std::vector<double> kl_sum(static_cast<size_t>(N), 0.0);
        at::NoGradGuard ng;
        for (auto& mini : minis)
          for (auto& mb : mini) {
            auto lp = token_logprobs(*model, mb, ctx->device(), impl).logp;
            if (mb.rollouts.empty()) continue;  // padding (equalise_micro_batches)
            auto kl = (kl_estimate(lp, mb.ref_logp, KlEstimator::kK1) * mb.labels.ne(-100).to(lp.device()).to(lp.scalar_type()))
                          .to(at::kCPU, at::kDouble);
            const auto* kp = kl.data_ptr<double>();
            const auto* seq = mb.seq_ids.data_ptr<int64_t>();
            for (int64_t t = 0; t < kl.numel(); ++t) kl_sum[static_cast<size_t>(mb.rollouts[static_cast<size_t>(seq[t])])] += kp[t];
          }
        for (int64_t i = 0; i < N; ++i) rew[i / G][i % G] = rew[i / G][i % G].item<double>() - cfg.kl.beta * kl_sum[static_cast<size_t>(i)];
      }
      if (adv_opts.mode == AdvantageMode::kBatchStd) {
        auto m = reward_moments(rew);
        auto v = ctx->all_reduce_sum(std::vector<double>{m[0].item<double>(), m[1].item<double>(), m[2].item<double>()});
        adv_opts.batch_std = batch_reward_std(at::tensor(v, at::kDouble), adv_opts.ddof);
      }
      auto adv = compute_advantages(rew, adv_opts).to(at::kDouble).reshape({-1}).contiguous();
      for (int64_t i = 0; i < N; ++i) rollouts[static_cast<size_t>(i)].advantage = adv.data_ptr<double>()[i];
      for (auto& mini : minis)
        for (auto& mb : mini)
          if (!mb.rollouts.empty()) set_advantages(mb, rollouts);

      // Updates.
      PolicyLossStats st;
      double train_tokens = 0, loss_sum = 0, gnorm = 0, padding = 0;
      bool applied_all = true;
      const bool inject_nan = std::find(nan_steps.begin(), nan_steps.end(), state.step + 1) != nan_steps.end();
      for (int64_t k = 0; k < M; ++k) {
        auto& mini = minis[static_cast<size_t>(k)];
        GlobalCounts local;
        for (const auto& mb : mini) {
          auto c = local_counts(mb.mask, mb.seq_ids, mb.num_seqs);
          local.tokens += c.tokens;
          local.sequences += c.sequences;
          if (!mb.rollouts.empty()) train_tokens += static_cast<double>(mb.input_ids.numel());
          else padding += 1;
        }
        auto g = ctx->all_reduce_sum(std::vector<double>{local.tokens, local.sequences});
        GlobalCounts counts{g[0], g[1]};
        runner->begin(static_cast<int64_t>(mini.size()), 1.0);
        for (auto& mb : mini) {
          auto lp = token_logprobs(*model, mb, ctx->device(), impl, cfg.model.activation_checkpointing);
          PolicyLossInputs in;
          in.logp = lp.logp;
          // The first update starts from the weights that sampled: pi_old is the current policy
          // itself (ratio exactly 1); later updates use the log-probs taken before the first.
          in.old_logp = k == 0 ? lp.logp.detach() : mb.old_logp;
          in.advantages = mb.advantages.to(ctx->device());
          in.mask = mb.mask.to(ctx->device());
          in.seq_ids = mb.seq_ids.to(ctx->device());
          in.num_seqs = mb.num_seqs;
          in.sampler_logp = mb.sampler_logp.to(ctx->device());
          if (mb.ref_logp.defined()) in.ref_logp = mb.ref_logp;
          in.entropy = loss_opts.entropy_coef > 0 ? lp.entropy : lp.entropy.detach();
          auto r = policy_loss(in, counts, loss_opts);
          at::Tensor objective = r.loss;
          if (inject_nan) objective = objective * std::numeric_limits<double>::quiet_NaN();
          runner->backward(objective, objective.item<double>());
          st.tokens += r.stats.tokens;
          st.clipped_low += r.stats.clipped_low;
          st.clipped_high += r.stats.clipped_high;
          st.dual_clipped += r.stats.dual_clipped;
          st.ratio_sum += r.stats.ratio_sum;
          st.ratio_max = std::max(st.ratio_max, r.stats.ratio_max);
          st.kl_sum += r.stats.kl_sum;
          st.entropy_sum += r.stats.entropy_sum;
          st.tis_weight_sum += r.stats.tis_weight_sum;
        }
        const bool last = k + 1 == M;
        const bool want_stop = last && opts.should_stop && opts.should_stop();
        const auto r = runner->finish(lr, want_stop);
        if (last) stop = r.stop;
        loss_sum += r.loss;
        gnorm = r.grad_norm;
        if (!r.applied) {
          applied_all = false;
          logger->warn(str("step ", state.step + 1, " update ", k + 1, ": ", r.skip_reason, " (loss ", r.loss,
                           ", grad norm ", r.grad_norm, "); update skipped (", r.consecutive_skipped, " in a row, limit ",
                           cfg.train.max_consecutive_nonfinite, ")"));
        }
        if (r.consecutive_skipped >= cfg.train.max_consecutive_nonfinite) {
          ++state.step;
          save_checkpoint();
          throw Error(str("training stopped: ", r.consecutive_skipped,
                          " consecutive updates with non-finite loss or gradients or too large updates "
                          "(train.max_consecutive_nonfinite = ",
                          cfg.train.max_consecutive_nonfinite, "); last checkpoint ", ckpt->last(),
                          "; lower optimizer.lr (--resume auto --set optimizer.lr=...) or raise the limit"));
        }
      }
      const double update_s = since(t_update);
      if (ref && cfg.kl.ref_update_every > 0 && (state.step + 1) % cfg.kl.ref_update_every == 0) polyak_update();
      ++state.step;
      if (applied_all) state.last_loss = loss_sum / static_cast<double>(M);

      // Metrics, reduced over ranks in one collective (+ two maxima).
      std::vector<double> v = dom_stats;
      const std::vector<double> tail = {static_cast<double>(groups.size()), zero_std, trunc, len_sum,
                                        static_cast<double>(gen_tokens), train_tokens, st.tokens, st.clipped_low,
                                        st.clipped_high, st.dual_clipped, st.ratio_sum, st.kl_sum, st.entropy_sum,
                                        st.tis_weight_sum, padding};
      v.insert(v.end(), tail.begin(), tail.end());
      v = ctx->all_reduce_sum(v);
      const double lmax = ctx->comm().all_reduce_max(len_max);
      const double rmax = ctx->comm().all_reduce_max(st.ratio_max);
      const double* t = v.data() + D * 4;
      const double ngroups = t[0], nsamples = ngroups * static_cast<double>(G), toks = std::max(t[6], 1.0);
      state.tokens += static_cast<int64_t>(t[5]);
      train::Scalars sc;
      double all_n = 0, all_r = 0, all_r2 = 0, all_c = 0;
      for (size_t d = 0; d < D; ++d) {
        const double n = v[d * 4], rs = v[d * 4 + 1], r2 = v[d * 4 + 2], c = v[d * 4 + 3];
        all_n += n, all_r += rs, all_r2 += r2, all_c += c;
        if (n > 0) {
          sc.emplace_back("reward/" + domains[d] + "/mean", rs / n);
          sc.emplace_back("accuracy/" + domains[d], c / n);
        }
      }
      const double rmean = all_r / std::max(all_n, 1.0);
      sc.emplace_back("reward/mean", rmean);
      sc.emplace_back("reward/std", std::sqrt(std::max(0.0, all_r2 / std::max(all_n, 1.0) - rmean * rmean)));
      sc.emplace_back("accuracy", all_c / std::max(all_n, 1.0));
      sc.emplace_back("zero_std_frac", t[1] / std::max(ngroups, 1.0));
      sc.emplace_back("truncation_rate", t[2] / std::max(nsamples, 1.0));
      sc.emplace_back("response_len/mean", t[3] / std::max(nsamples, 1.0));
      sc.emplace_back("response_len/max", lmax);
      sc.emplace_back("clip_frac/low", t[7] / toks);
      sc.emplace_back("clip_frac/high", t[8] / toks);
      sc.emplace_back("clip_frac/dual", t[9] / toks);
      sc.emplace_back("ratio/mean", t[10] / toks);
      sc.emplace_back("ratio/max", rmax);
      sc.emplace_back("kl", t[11] / toks);
      sc.emplace_back("entropy", t[12] / toks);
      sc.emplace_back("tis_weight/mean", t[13] / toks);
      sc.emplace_back("gen_tokens_per_s", gen_s > 0 ? t[4] / gen_s : 0.0);
      sc.emplace_back("train_tokens_per_s", update_s > 0 ? t[5] / update_s : 0.0);
      sc.emplace_back("time/generate_s", gen_s);
      sc.emplace_back("time/reward_s", reward_s);
      sc.emplace_back("time/update_s", update_s);
      sc.emplace_back("rounds", static_cast<double>(rounds));
      // Forwards and backwards run only to keep a shard group in lockstep (equalise_micro_batches).
      if (ctx->shard_size() > 1) sc.emplace_back("padding_micro_batches", t[14]);
      const bool write = state.step % cfg.train.log_every == 0 || state.step == cfg.train.steps || stop;
      logger->step(state.step, {loss_sum / static_cast<double>(M), lr, gnorm, t[5], static_cast<double>(state.tokens), !applied_all},
                   sc, write);
      if (suite && (state.step % cfg.eval.every == 0 || state.step == cfg.train.steps)) evaluate();
      if (state.step % cfg.checkpoint.every == 0 || state.step == cfg.train.steps || stop) save_checkpoint();
      if (state.step == opts.faults.sigkill_after_step) std::raise(SIGKILL);
    }
    res.step = state.step;
    res.last_loss = state.last_loss;
    res.stopped = stop && state.step < cfg.train.steps;
    res.last_checkpoint = ckpt->last();
    train::finish_run(res, *model, *ctx, *logger, cfg.output_dir, cfg.checkpoint.export_final);
    return res;
  }
};

}  // namespace

train::MemoryPlanInput plan_input(const RlConfig& cfg, const models::ModelConfig& model, int64_t world_size,
                                  const std::string& device) {
  train::MemoryPlanInput in;
  in.model = model;
  in.dtype = cfg.model.dtype == train::Dtype::kBf16 ? c10::ScalarType::BFloat16 : c10::ScalarType::Float;
  in.cuda = device.rfind("cuda", 0) == 0 && cfg.model.kernels == train::Kernels::kAuto;
  in.world_size = world_size;
  in.shard_size = cfg.dist.shard_size;
  in.zero1 = cfg.optimizer.zero1;
  in.bucket_mb = cfg.optimizer.bucket_mb;
  in.activation_checkpointing = cfg.model.activation_checkpointing;
  in.micro_batch_rows = 1;
  in.seq_len = cfg.train.micro_batch_tokens;
  in.optimizer_update_check = cfg.train.max_update_ratio > 0;
  // The engine sizes its state for the longest prompt + completion (generate/engine.cpp), which a
  // packed micro-batch row must hold: micro_batch_tokens bounds it, as does the model's context.
  const int64_t ctx_len = model.max_position_embeddings;
  in.decode_length = ctx_len > 0 ? std::min(ctx_len, cfg.train.micro_batch_tokens) : cfg.train.micro_batch_tokens;
  in.decode_rows = cfg.rollout.slots + 1;
  in.reference_model = cfg.kl.beta > 0;
  in.job = "rl";
  // The prompts are not read yet when the trainer checks the plan: lengths unknown (0), so the
  // rollouts are bounded by decode_length; `prism-train plan` tokenizes them for the tighter figure.
  train::set_rl_step(in, cfg.rollout.prompts_per_step, cfg.rollout.samples_per_prompt, cfg.train.mini_batches,
                     cfg.train.trainable, cfg.rollout.max_new_tokens, 0, 0);
  return in;
}

train::RunResult run_grpo(const RlConfig& cfg, const train::RunOptions& opts) {
  config::validate_config(cfg);
  GrpoLoop loop(cfg, opts);
  return loop.run();
}

}  // namespace prism::rl
