// RlConfig: everything `prism-train rl` reads from YAML (configs/rl/*.yaml), declared once.
// Shared sections (model, checkpoint, dist, log, optimizer, schedule) are the training ones
// (prism/train/job_config.h), so a GRPO config reads like a mid-training config; the rewards
// section is prism/rewards/registry.h's. Formulas behind the advantage/loss/kl keys: docs/rl.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "prism/core/config.h"
#include "prism/rewards/registry.h"
#include "prism/train/job_config.h"
#include "prism/train/optimizer.h"
#include "prism/train/schedule.h"

namespace prism::rl {

struct DomainTemplate {
  std::string domain;
  std::string tmpl;  ///< JsonRecord::render template, e.g. "{question}\nPlease put your final answer in \\boxed{}."
  void visit(config::Visitor& v) {
    using namespace config;
    v.field("domain", domain, required() & non_empty(), "prompt records of this domain use the template");
    v.field("template", tmpl, required() & non_empty(), "{field} placeholders filled from the record");
  }
  bool operator==(const DomainTemplate&) const = default;
};

struct DomainWeight {
  std::string domain;
  double weight = 1.0;
  void visit(config::Visitor& v) {
    using namespace config;
    v.field("domain", domain, required() & non_empty(), "domain name (the records' `domain` field)");
    v.field("weight", weight, positive(), "relative share of this domain's prompts in every step");
  }
  bool operator==(const DomainWeight&) const = default;
};

struct RlDataSection {
  std::vector<std::string> prompts;  ///< JSONL(.zst) files of prompt records
  std::string prompt_field = "prompt";
  std::vector<DomainTemplate> templates;
  std::vector<DomainWeight> weights;  ///< empty: every domain in proportion to its prompts
  int64_t seed = 0;                   ///< shuffle order of every epoch

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("prompts", prompts, required() & non_empty(),
            "JSONL(.zst) files; each record has `domain`, the prompt (or template fields), and `answer` or code tests");
    v.field("prompt_field", prompt_field, non_empty(), "record field holding the prompt text when no template applies");
    v.field("templates", templates, "per-domain prompt templates (the study's styles: docs/rl.md)");
    v.field("weights", weights, "per-domain shares of each step's prompts (empty: proportional to the data)");
    v.field("seed", seed, non_negative(), "seed of the prompt order (a new shuffle every epoch)");
  }
  bool operator==(const RlDataSection&) const = default;
};

struct RolloutSection {
  int64_t prompts_per_step = 64;   ///< unique prompts per step over all ranks (the study: 64)
  int64_t samples_per_prompt = 16; ///< G (the study: 16)
  double temperature = 1.0;
  double top_p = 1.0;
  int64_t top_k = 0;
  double min_p = 0.0;
  int64_t max_new_tokens = 1024;
  std::vector<std::string> stop;   ///< stop strings (besides the checkpoint's EOS)
  bool ignore_eos = false;         ///< EOS does not stop a sample (fixed-length rollouts, for benchmarks)
  int64_t slots = 64;              ///< decode slots of the rollout engine
  int64_t seed = 0;                ///< sampling seed (each prompt draw gets its own stream)

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("prompts_per_step", prompts_per_step, positive(), "unique prompts per step, all ranks together");
    v.field("samples_per_prompt", samples_per_prompt, positive(), "G: samples per prompt (one group)");
    v.field("temperature", temperature, non_negative(), "sampling temperature (0: greedy)");
    v.field("top_p", top_p, range(0, 1), "nucleus sampling mass (1: off)");
    v.field("top_k", top_k, non_negative(), "top-k sampling (0: off)");
    v.field("min_p", min_p, range(0, 1), "min-p sampling (0: off)");
    v.field("max_new_tokens", max_new_tokens, positive(), "completion length limit");
    v.field("stop", stop, "stop strings (the checkpoint's EOS always stops unless ignore_eos)");
    v.field("ignore_eos", ignore_eos,
            "true: the checkpoint's EOS does not end a sample, every completion runs to max_new_tokens or a stop "
            "string (vLLM's ignore_eos; equal-length benchmarks)");
    v.field("slots", slots, positive(), "rows decoded together by the rollout engine");
    v.field("seed", seed, non_negative(), "sampling seed");
  }
  bool operator==(const RolloutSection&) const = default;
};

struct AdvantageSection {
  std::string mode = "centered";
  int64_t ddof = 0;
  double eps = 1e-8;
  void visit(config::Visitor& v) {
    using namespace config;
    v.field("mode", mode, one_of({"group_std", "centered", "batch_std", "leave_one_out"}),
            "group_std (GRPO), centered (Dr. GRPO, open-instruct default), batch_std, leave_one_out (RLOO)");
    v.field("ddof", ddof, range(0, 1), "std degrees of freedom: 0 population (open-instruct), 1 Bessel (verl, TRL)");
    v.field("eps", eps, non_negative(), "added to the std");
  }
  bool operator==(const AdvantageSection&) const = default;
};

struct LossSection {
  double clip_low = 0.2;
  double clip_high = 0.272;
  double dual_clip = 0.0;
  double tis_cap = 2.0;
  bool sequence_ratio = false;
  std::string aggregation = "token-mean";
  double norm_constant = 0;  ///< seq-mean-token-sum-norm (0: rollout.max_new_tokens)
  double entropy_coef = 0;

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("clip_low", clip_low, range(0, 0.999), "ratio clipped below at 1 - clip_low");
    v.field("clip_high", clip_high, non_negative(), "ratio clipped above at 1 + clip_high (clip-higher)");
    v.field("dual_clip", dual_clip, non_negative(), "dual-clip constant c > 1 for negative advantages (0: off)");
    v.field("tis_cap", tis_cap, non_negative(),
            "truncated importance sampling min(pi_old / pi_sampler, cap) (the study: 2; 0: off)");
    v.field("sequence_ratio", sequence_ratio, "GSPO: one ratio per sequence (geometric mean of token ratios)");
    v.field("aggregation", aggregation,
            one_of({"token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"}),
            "loss aggregation; normalisers are global over micro-batches and ranks");
    v.field("norm_constant", norm_constant, non_negative(), "seq-mean-token-sum-norm constant (0: max_new_tokens)");
    v.field("entropy_coef", entropy_coef, non_negative(), "entropy bonus coefficient (0: off)");
  }
  bool operator==(const LossSection&) const = default;
};

struct KlSection {
  double beta = 0.05;
  std::string estimator = "k3";
  std::string where = "loss";
  int64_t ref_update_every = 0;  ///< Polyak-update the reference every N steps (0: frozen)
  double ref_alpha = 0.6;        ///< ref <- alpha * policy + (1 - alpha) * ref

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("beta", beta, non_negative(), "KL coefficient (0: no reference model is loaded)");
    v.field("estimator", estimator, one_of({"k1", "k2", "k3"}), "KL estimator (k3: open-instruct, verl low_var_kl)");
    v.field("where", where, one_of({"loss", "reward"}), "add beta*KL to the token loss, or subtract it from the reward");
    v.field("ref_update_every", ref_update_every, non_negative(), "Polyak-update the reference every N steps (0: never)");
    v.field("ref_alpha", ref_alpha, range(0, 1), "Polyak rate: ref <- alpha * policy + (1 - alpha) * ref");
  }
  bool operator==(const KlSection&) const = default;
};

struct DynamicSamplingSection {
  bool enabled = false;
  int64_t max_rounds = 3;
  void visit(config::Visitor& v) {
    using namespace config;
    v.field("enabled", enabled, "drop groups whose rewards are all equal and refill with new prompts (DAPO)");
    v.field("max_rounds", max_rounds, positive(), "generation rounds per step at most (the last round keeps what it has)");
  }
  bool operator==(const DynamicSamplingSection&) const = default;
};

struct RlTrainSection {
  int64_t steps = 1000;
  int64_t mini_batches = 1;          ///< optimizer updates per rollout batch
  int64_t micro_batch_tokens = 8192; ///< tokens per packed micro-batch row (one sequence must fit)
  std::string truncated = "keep";    ///< keep | mask: samples cut at max_new_tokens
  int64_t max_consecutive_nonfinite = 10;
  double max_update_ratio = 0;
  int64_t log_every = 1;
  int64_t threads = 0;
  std::vector<std::string> trainable{"all"};  ///< parameters trained (train/model_setup.h trainable_mask)

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("steps", steps, required() & positive(), "rollout-and-update steps of the run");
    v.field("mini_batches", mini_batches, positive(), "optimizer updates per rollout batch (1: fully on-policy)");
    v.field("micro_batch_tokens", micro_batch_tokens, positive(),
            "packed tokens per micro-batch (prompt + completion of several samples)");
    v.field("truncated", truncated, one_of({"keep", "mask"}), "mask: samples cut at max_new_tokens carry no loss");
    v.field("max_consecutive_nonfinite", max_consecutive_nonfinite, positive(),
            "skipped updates in a row before the run stops (with a checkpoint)");
    v.field("max_update_ratio", max_update_ratio, non_negative(), "skip an update larger than this x the weights (0: off)");
    v.field("log_every", log_every, positive(), "steps between metric lines");
    v.field("threads", threads, non_negative(), "CPU threads per rank (0: cores / ranks on this node)");
    v.field("trainable", trainable, non_empty(),
            "parameters to train, the rest frozen: all, a kind (attention, mlp, mamba2, embedding, norm, lm_head) "
            "or a regex searched in parameter names; a list selects the union");
  }
  bool operator==(const RlTrainSection&) const = default;
};

struct RlConfig {
  std::string output_dir;
  train::ModelSection model;
  RlDataSection data;
  RolloutSection rollout;
  rewards::RewardsConfig rewards;  ///< no domains listed: math, mc and code without shaping
  AdvantageSection advantage;
  LossSection loss;
  KlSection kl;
  DynamicSamplingSection dynamic_sampling;
  RlTrainSection train;
  train::OptimizerConfig optimizer;
  train::ScheduleConfig schedule;
  train::CheckpointSection checkpoint;
  train::DistSection dist;
  train::LogSection log;
  train::SuiteEvalSection eval;

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("output_dir", output_dir, required() & non_empty(), "run directory: checkpoints, metrics, final export");
    v.field("model", model, "the policy (and the reference's starting point)");
    v.field("data", data, "prompt data");
    v.field("rollout", rollout, "sampling");
    v.field("rewards", rewards, "verifiers per domain and shaping");
    v.field("advantage", advantage, "group advantages");
    v.field("loss", loss, "policy loss");
    v.field("kl", kl, "KL to the reference policy");
    v.field("dynamic_sampling", dynamic_sampling, "refill groups without signal");
    v.field("train", train, "loop settings");
    v.field("optimizer", optimizer, "AdamW settings");
    v.field("schedule", schedule, "learning-rate schedule");
    v.field("checkpoint", checkpoint, "checkpointing");
    v.field("dist", dist, "data-parallel transport");
    v.field("log", log, "metrics output");
    v.field("eval", eval, "in-loop evaluation (pass@k on a suite)");
  }
};

}  // namespace prism::rl
