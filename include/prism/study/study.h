// The study in miniature (docs/study.md): `prism-train study --config configs/study/mini.yaml` runs
// the PRISM study's method end to end in one process — task data, a base model, mid-training, GRPO
// from the mid-trained model and (the control) from the base with the same settings, evaluation of
// the four models, weight / representation analysis — and writes report.md + report.json laid out
// like the paper's Tables 6, 11, 12/22 and 14, with a verdict on each of the study's four claims.
//
// Each stage is a call into the library (run_mid_training, run_grpo, run_suite, heldout_loss, the
// analysis functions), configured by a stage YAML (configs/study/stages/*.yaml) composed with the
// study's `set:` overrides and then with the paths the orchestrator owns (output_dir, model.path,
// data). A stage whose outputs and STAGE_DONE.json exist is skipped; a killed training stage resumes
// from its newest checkpoint (`--resume auto` of mid and rl).
//
// **Example**:
//
//     auto cfg = prism::config::load_config<prism::study::StudyConfig>("configs/study/mini.yaml");
//     prism::study::StudyOptions opts;
//     opts.resume = true;
//     auto res = prism::study::run_study(cfg, opts);  // res.report_md
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "prism/core/config.h"
#include "prism/study/tasks.h"
#include "prism/train/train_config.h"

namespace prism::study {

/// One stage's job: a stage YAML plus overrides (`key=value`, as `--set` of every job).
struct StageSection {
  std::string config;
  std::vector<std::string> set;

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("config", config, required() & non_empty(), "stage YAML (configs/study/stages/*.yaml)");
    v.field("set", set, "overrides applied to it, e.g. [train.steps=40, optimizer.lr=1e-3]");
  }
};

/// Token share of one mid-training source: `general` or a task domain.
struct MixtureWeight {
  std::string source;
  double weight = 1.0;

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("source", source, required() & non_empty(), "general, or a task domain (math, code, science, ...)");
    v.field("weight", weight, positive(), "relative token share");
  }
};

/// Real data instead of the generated tasks (configs/study/study-scale.yaml): set `mixture` and the
/// generator is not run; the base must then be a checkpoint (`base:`).
struct DataSection {
  std::string mixture;                           ///< mid-training mixture YAML of token shards
  std::vector<train::EvalSourceConfig> heldout;  ///< held-out shards per source; `general` is retention
  std::vector<std::string> rl_prompts;           ///< RL prompt-record files
  std::string cka_text;                          ///< JSONL ({"text": ...}) whose hidden states CKA compares
  bool suite_benchmarks = false;                 ///< evaluate the eval stage's benchmarks as written

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("mixture", mixture, "mid-training mixture YAML (\"\": general text + the generated task documents)");
    v.field("heldout", heldout, "held-out token shards per source, one named `general` (retention)");
    v.field("rl_prompts", rl_prompts, "RL prompt-record files (empty: the generated RL prompts)");
    v.field("cka_text", cka_text, "text JSONL for CKA (\"\": the held-out general text)");
    v.field(
        "suite_benchmarks", suite_benchmarks,
        "evaluate the eval stage's benchmarks as written (false: one per task domain on the generated test prompts)");
  }
  bool real() const { return !mixture.empty(); }
};

struct AnalysisSection {
  double threshold = 0.01;     ///< "changed": |w' - w| > threshold * |w| (the paper's 1%)
  int64_t cka_inputs = 64;     ///< held-out general-text records whose hidden states are compared
  int64_t cka_resamples = 10;  ///< bootstrap resamples ...
  int64_t cka_subset = 32;     ///< ... of this many inputs
  int64_t cka_max_tokens = 256;

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("threshold", threshold, greater_than(0) & less_than(1), "relative change that counts as changed");
    v.field("cka_inputs", cka_inputs, positive(), "held-out general-text inputs for CKA");
    v.field("cka_resamples", cka_resamples, positive(), "bootstrap resamples of the CKA");
    v.field("cka_subset", cka_subset, positive(), "inputs per bootstrap resample (<= cka_inputs)");
    v.field("cka_max_tokens", cka_max_tokens, positive(), "inputs truncated to this many tokens");
  }
  void validate() const {
    PRISM_CHECK(cka_subset <= cka_inputs, "cka_subset (", cka_subset, ") must be <= cka_inputs (", cka_inputs, ")");
  }
};

/// The thresholds of the claim rules (docs/study.md "Claims"); fixed before a run, never fitted to it.
struct ClaimsSection {
  double retention_tolerance = 0.05;  ///< claim 1: general held-out loss may rise by this fraction at most
  double most_changed = 0.5;          ///< claim 3: base->mid changes more than this share of weights
  double front_fraction = 0.25;       ///< claim 3: "early" = the first checkpoint at or after this share of RL steps
  double front_loaded = 0.5;          ///< claim 3: ... holding at least this share of the final L2
  double cka_min = 0.9;               ///< claim 4: min-over-layers CKA(mid, mid+RL) at least this
  double learned_margin_se = 2.0;     ///< claim 1: pass@1(mid) must beat the constant level by this many SE

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("retention_tolerance", retention_tolerance, non_negative(),
            "claim 1: largest relative rise of the general held-out loss that still counts as 'holds'");
    v.field("most_changed", most_changed, range(0, 1), "claim 3: share of weights base->mid must exceed");
    v.field("front_fraction", front_fraction, greater_than(0) & at_most(1),
            "claim 3: the early checkpoint is the first at or after this share of the RL steps");
    v.field("front_loaded", front_loaded, range(0, 1),
            "claim 3: share of the final L2 reached at the early checkpoint");
    v.field("cka_min", cka_min, range(0, 1), "claim 4: minimum over layers of CKA(mid, mid+RL)");
    v.field("learned_margin_se", learned_margin_se, non_negative(),
            "claim 1: a domain counts as learned when pass@1(mid) exceeds its constant-answer level by this many "
            "standard errors");
  }
};

struct StudyConfig {
  std::string output_dir;
  std::string model;  ///< architecture (config.json) and tokenizer.json of the from-scratch base
  std::string base;   ///< an HF checkpoint used as the base instead (no pretraining)
  int64_t threads = 0;
  TaskConfig tasks;
  DataSection data;
  StageSection pretrain, mid, rl, eval;
  std::vector<MixtureWeight> mixture;
  AnalysisSection analysis;
  ClaimsSection claims;

  void visit(config::Visitor& v) {
    using namespace config;
    v.field("output_dir", output_dir, required() & non_empty(),
            "study directory: every stage's outputs and the report");
    v.field("model", model, "from-scratch base: directory with config.json and tokenizer.json");
    v.field("base", base, "HF checkpoint used as the base model (skips pretraining); overrides `model`");
    v.field("threads", threads, non_negative(), "CPU threads (0: all cores)");
    v.field("tasks", tasks, "procedural task data (docs/study.md)");
    v.field("data", data, "real data instead of the generated tasks (study scale)");
    v.field("pretrain", pretrain, "base-model pretraining job (a mid-training config, model.init: scratch)");
    v.field("mid", mid, "mid-training job");
    v.field("rl", rl, "GRPO job, run from the mid-trained and from the base model");
    v.field("eval", eval, "evaluation suite (its first benchmark's settings apply to every task domain)");
    v.field("mixture", mixture, "mid-training token shares (empty: general and every task domain equally)");
    v.field("analysis", analysis, "weight and representation analysis");
    v.field("claims", claims, "thresholds of the claim rules");
  }
  void validate() const {
    PRISM_CHECK(!model.empty() || !base.empty(), "one of `model` (pretrain from scratch) or `base` must be set");
    if (data.real()) {
      PRISM_CHECK(!base.empty(),
                  "data.mixture (real data) needs `base`: a checkpoint (no general text to pretrain on)");
      PRISM_CHECK(!data.rl_prompts.empty(), "data.mixture (real data) needs data.rl_prompts");
      PRISM_CHECK(!data.cka_text.empty(), "data.mixture (real data) needs data.cka_text");
      PRISM_CHECK(data.suite_benchmarks, "data.mixture (real data) needs data.suite_benchmarks: true");
      bool general = false;
      for (const auto& h : data.heldout) general = general || h.name == "general";
      PRISM_CHECK(general, "data.heldout needs a source named `general` (the retention loss)");
    }
  }
};

struct StudyOptions {
  /// Continue a study directory (skip finished stages, resume a killed one). Without it, an
  /// output_dir that already holds a study is refused.
  bool resume = false;
  std::function<bool()> should_stop;                 ///< polled by the training stages (SIGTERM/SIGINT)
  std::string config_file;                           ///< named in errors
  config::Origins config_origins;                    ///< where its keys were written (load_config)
  std::function<void(const std::string&)> progress;  ///< one line per stage event
};

struct StudyResult {
  std::vector<std::string> ran, skipped;  ///< stage names
  bool stopped = false;                   ///< a training stage stopped on request (resume later)
  std::string report_md, report_json;     ///< paths ("" when stopped)
  double seconds = 0;
};

StudyResult run_study(const StudyConfig& cfg, const StudyOptions& opts = {});

}  // namespace prism::study
