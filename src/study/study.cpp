// The study orchestrator (include/prism/study/study.h; docs/study.md "Pipeline"): every stage is a
// library call configured by a composed stage YAML; the report is built from the stage JSONs only
// (report.cpp), so a resumed study reports exactly what its stages wrote.
#include "prism/study/study.h"

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <thread>
#include <tuple>

#include "prism/analysis/cka.h"
#include "prism/analysis/report.h"
#include "prism/analysis/weights.h"
#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/core/log.h"
#include "prism/data/mixture.h"
#include "prism/data/tokenize.h"
#include "prism/distributed/communicator.h"
#include "prism/eval/suite.h"
#include "prism/io/tokenizer.h"
#include "prism/models/causal_lm.h"
#include "prism/rl/grpo.h"
#include "prism/runtime/runtime.h"
#include "prism/train/trainer.h"
#include "study/report.h"

namespace prism::study {

namespace {

using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// A YAML scalar for an override value: single-quoted, so a path is never read as a number or flow.
std::string q(const std::string& s) {
  std::string o = "'";
  for (char c : s) o += c == '\'' ? std::string("''") : std::string(1, c);
  return o + "'";
}

// The models the study compares, in the order of the paper's tables.
const std::vector<std::string> kModels = {"base", "mid", "mid-rl", "base-rl"};

struct Study {
  const StudyConfig& cfg;
  const StudyOptions& opts;
  StudyResult res;
  std::string out;

  // Under a launcher (tools/launch.sh, torchrun, Slurm) every rank runs the study: the training
  // stages are data-parallel over all of them; every other stage runs on rank 0 while the other
  // ranks wait for its STAGE_DONE.json on the shared output_dir.
  const distributed::DistEnv env = distributed::DistEnv::from_env();
  const bool main_rank = env.rank == 0;

  Study(const StudyConfig& c, const StudyOptions& o) : cfg(c), opts(o), out(c.output_dir) {}

  void say(const std::string& m) {
    if (opts.progress && main_rank) opts.progress(m);
  }
  std::string dir(const std::string& name) const { return fs::join(out, name); }
  std::string tokenizer_dir() const { return cfg.base.empty() ? cfg.model : cfg.base; }
  std::string hf(const std::string& model) const {
    if (model == "base") return cfg.base.empty() ? fs::join(dir("base"), "final") : cfg.base;
    return fs::join(dir(model == "mid" ? "mid" : "rl-" + model.substr(0, model.find('-'))), "final");
  }

  // A stage is done when its STAGE_DONE.json exists; its recorded inputs (the resolved stage
  // config) must equal this run's, or the study would silently mix results of two configs.
  bool done(const std::string& name, const std::string& stage_dir, const std::string& fingerprint,
            bool all_ranks = false) {
    const std::string marker = fs::join(stage_dir, "STAGE_DONE.json");
    if (!all_ranks && !main_rank)
      while (!fs::exists(marker)) std::this_thread::sleep_for(std::chrono::seconds(2));
    if (!fs::exists(marker)) return false;
    const auto j = json::parse(fs::read_file(marker));
    if (j.value("inputs", std::string()) != fingerprint)
      throw Error(str("stage ", name, ": ", stage_dir,
                      " was produced with different inputs than this config gives (the stage config or an earlier "
                      "stage changed); remove that directory (and the later stages') to rerun it"));
    say(str("[", name, "] done (", stage_dir, "), skipped"));
    res.skipped.push_back(name);
    return true;
  }
  void mark(const std::string& name, const std::string& stage_dir, const std::string& fingerprint, double seconds) {
    json j;
    j["stage"] = name;
    j["seconds"] = seconds;
    j["inputs"] = fingerprint;
    if (main_rank) fs::write_file_atomic(fs::join(stage_dir, "STAGE_DONE.json"), j.dump(1) + "\n");
    res.ran.push_back(name);
    say(str("[", name, "] finished in ", static_cast<int64_t>(seconds), " s"));
  }

  // TorchTitan-style composition: the stage YAML, then the study's `set:` for it, then the paths the
  // orchestrator owns (last, so a stage cannot be pointed at other data by accident).
  template <class T>
  T compose(const std::string& key, const StageSection& s, const std::vector<std::string>& owned) {
    std::vector<std::string> o = s.set;
    o.insert(o.end(), owned.begin(), owned.end());
    try {
      return config::load_config<T>(s.config, o);
    } catch (const Error& e) {
      // A bad `set:` entry is named where the study config wrote it (`study.yaml:17: rl.set[0]: ...`),
      // not as the `--set` the composition turned it into.
      ErrorContext c = e.context();
      for (std::size_t i = 0; i < s.set.size(); ++i) {
        if (c.file != "--set " + s.set[i]) continue;
        const std::string entry = str(key, ".set[", i, "]");
        c.file = config::origin_of(opts.config_origins, entry, opts.config_file);
        c.key = c.key.empty() ? entry : str(entry, ": ", c.key);
        throw Error(str(e.message(), " (study stage `", key, "`)"), c);
      }
      throw Error(str(e.what(), " (study stage `", key, "` of ",
                      opts.config_file.empty() ? "the study" : opts.config_file, ")"));
    }
  }

  // ---- 1. tasks + tokenize --------------------------------------------------------------------
  TaskFiles tasks;
  std::vector<std::string> domains;                               // task domains, in TaskFiles order
  std::vector<std::pair<std::string, std::string>> heldout_text;  // source -> held-out text JSONL
  int64_t eos_id = 0;

  std::string tokens(const std::string& source, bool heldout) const {
    return fs::join(fs::join(dir("tokens"), source + (heldout ? ".heldout" : "")), "*.tok");
  }

  void stage_tasks() {
    const std::string d = dir("tasks");
    const std::string fp = config::dump_config(cfg.tasks);
    const std::string files = fs::join(d, "files.json");
    if (!done("tasks", d, fp)) {
      const auto t0 = Clock::now();
      say("[tasks] generating task data");
      auto f = write_tasks(cfg.tasks, d);
      json j;
      j["general_train"] = f.general_train;
      j["general_heldout"] = f.general_heldout;
      j["domains"] = f.domains;
      j["mid_train"] = f.mid_train;
      j["mid_heldout"] = f.mid_heldout;
      j["rl_prompts"] = f.rl_prompts;
      j["test_prompts"] = f.test_prompts;
      fs::write_file_atomic(files, j.dump(1) + "\n");
      mark("tasks", d, fp, since(t0));
    }
    const auto j = json::parse(fs::read_file(files));
    tasks.general_train = j["general_train"];
    tasks.general_heldout = j["general_heldout"];
    tasks.domains = j["domains"].get<std::vector<std::string>>();
    tasks.mid_train = j["mid_train"].get<std::vector<std::string>>();
    tasks.mid_heldout = j["mid_heldout"].get<std::vector<std::string>>();
    tasks.rl_prompts = j["rl_prompts"].get<std::vector<std::string>>();
    tasks.test_prompts = j["test_prompts"].get<std::vector<std::string>>();
    domains = tasks.domains;
  }

  void stage_tokenize() {
    const std::string d = dir("tokens");
    const auto mc = models::CausalLM::read_config(tokenizer_dir());
    eos_id = mc.eos_token_ids.empty() ? 0 : mc.eos_token_ids.front();
    std::vector<std::tuple<std::string, std::string, bool>> inputs;  // source, text file, held out
    inputs.emplace_back("general", tasks.general_train, false);
    inputs.emplace_back("general", tasks.general_heldout, true);
    heldout_text = {{"general", tasks.general_heldout}};
    for (size_t i = 0; i < domains.size(); ++i) {
      inputs.emplace_back(domains[i], tasks.mid_train[i], false);
      inputs.emplace_back(domains[i], tasks.mid_heldout[i], true);
      heldout_text.emplace_back(domains[i], tasks.mid_heldout[i]);
    }
    const std::string fp =
        str("tokenizer=", fs::absolute(tokenizer_dir()), "\n", fs::read_file(fs::join(dir("tasks"), "files.json")));
    if (done("tokenize", d, fp)) return;
    const auto t0 = Clock::now();
    fs::create_directories(d);
    for (const auto& [src, file, held] : inputs) {
      data::TokenizeOptions to;
      to.tokenizer = tokenizer_dir();
      to.inputs = {file};
      to.output_dir = fs::parent(tokens(src, held));
      to.num_threads = static_cast<int>(cfg.threads);
      fs::remove_all(to.output_dir);  // a killed earlier attempt's partial shards
      auto st = data::tokenize_corpus(to);
      say(str("[tokenize] ", src, held ? " (held out)" : "", ": ", st.documents, " documents, ", st.tokens, " tokens"));
    }
    mark("tokenize", d, fp, since(t0));
  }

  std::string write_mixture(const std::string& name, const std::vector<std::pair<std::string, double>>& weights) {
    data::MixtureConfig m;
    for (const auto& [src, w] : weights) m.sources.push_back({src, tokens(src, false), w});
    m.eos_id = eos_id;
    const std::string path = fs::join(dir("tokens"), name + "-mixture.yaml");
    const std::string text = config::dump_config(m);
    if (main_rank) {
      if (!fs::exists(path) || fs::read_file(path) != text) fs::write_file_atomic(path, text);
    } else {
      while (!fs::exists(path) || fs::read_file(path) != text) std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    return path;
  }

  // `eval.sources=[...]` of (name, token-shard glob) pairs.
  static std::string eval_sources(const std::vector<std::pair<std::string, std::string>>& srcs) {
    std::string s = "eval.sources=[";
    for (size_t i = 0; i < srcs.size(); ++i)
      s += str(i ? ", " : "", "{name: ", q(srcs[i].first), ", path: ", q(srcs[i].second), "}");
    return s + "]";
  }
  std::vector<std::pair<std::string, std::string>> heldout_shards() const {
    std::vector<std::pair<std::string, std::string>> v;
    if (cfg.data.real()) {
      for (const auto& h : cfg.data.heldout) v.emplace_back(h.name, h.path);
    } else {
      for (const auto& [src, text] : heldout_text) v.emplace_back(src, tokens(src, true));
    }
    return v;
  }
  std::string cka_text() const { return cfg.data.real() ? cfg.data.cka_text : tasks.general_heldout; }

  // ---- 2-4. training stages -------------------------------------------------------------------
  // Runs one training job (mid or GRPO) unless done; a killed run resumes from its newest checkpoint.
  template <class Cfg, class Run>
  bool train_stage(const std::string& name, const Cfg& c, Run run) {
    const std::string fp = config::dump_config(c);
    if (done(name, c.output_dir, fp, /*all_ranks=*/true)) return true;
    const auto t0 = Clock::now();
    say(str("[", name, "] ", fs::exists(c.output_dir) ? "resuming" : "starting", " (", c.output_dir, ")"));
    train::RunOptions ro;
    ro.resume = "auto";
    ro.should_stop = opts.should_stop;
    ro.config_file = opts.config_file;
    auto r = run(c, ro);
    if (r.stopped) {
      res.stopped = true;
      say(str("[", name, "] stopped at step ", r.step, "; rerun with --resume to continue"));
      return false;
    }
    mark(name, c.output_dir, fp, since(t0));
    return true;
  }

  // The mid-training mixture's (source, weight) pairs from `mixture:`.
  std::vector<std::pair<std::string, double>> mid_weights(const std::vector<std::string>& doms) const {
    std::vector<std::pair<std::string, double>> w;
    if (cfg.data.real()) {
      if (!cfg.mixture.empty())
        throw Error("`mixture` weights apply to the generated data; with data.mixture set the weights are that file's",
                    key_context(config::origin_of(opts.config_origins, "mixture", opts.config_file), "mixture"));
    } else if (cfg.mixture.empty()) {
      w.emplace_back("general", 1.0);
      for (const auto& d : doms) w.emplace_back(d, 1.0);
    } else {
      for (size_t i = 0; i < cfg.mixture.size(); ++i) {
        const auto& m = cfg.mixture[i];
        const bool known = m.source == "general" || std::count(doms.begin(), doms.end(), m.source);
        if (!known) {
          const std::string key = str("mixture[", i, "].source");
          throw Error(str("'", m.source, "' is neither general nor a task domain"),
                      key_context(config::origin_of(opts.config_origins, key, opts.config_file), key,
                                  "general or one of the task domains", m.source));
        }
        w.emplace_back(m.source, m.weight);
      }
    }
    return w;
  }

  // Every stage's config is composed (with placeholder paths) before anything runs, so a typo in
  // the RL stage fails now, not after pretraining and mid-training.
  void preflight() {
    const std::string p = q("<set by the study>");
    std::vector<std::string> mid = {"output_dir=" + p, "model.path=" + p, "model.init=pretrained", "data.mixture=" + p,
                                    "eval.sources=[]"};
    compose<train::MidTrainConfig>("mid", cfg.mid, mid);
    if (cfg.base.empty()) {
      mid.push_back("model.init=scratch");
      compose<train::MidTrainConfig>("pretrain", cfg.pretrain, mid);
    }
    compose<rl::RlConfig>("rl", cfg.rl,
                          {"output_dir=" + p, "model.path=" + p, "model.init=pretrained", "data.prompts=[" + p + "]"});
    compose<eval::SuiteConfig>("eval", cfg.eval, {});
    mid_weights(cfg.tasks.domains);
  }

  train::MidTrainConfig mid_cfg;  // the composed mid-training config (also defines the held-out loss)

  bool stage_models() {
    if (cfg.base.empty()) {
      auto pc = compose<train::MidTrainConfig>(
          "pretrain", cfg.pretrain,
          {"output_dir=" + q(dir("base")), "model.path=" + q(cfg.model), "model.init=scratch",
           "data.mixture=" + q(write_mixture("pretrain", {{"general", 1.0}})),
           eval_sources({{"general", tokens("general", true)}}), "checkpoint.export_final=true"});
      // The scratch model keeps cfg.model as its source (CausalLM::from_architecture), so the
      // export carries the tokenizer files every later stage reads.
      if (!train_stage("pretrain", pc, [](const auto& c, const auto& r) { return train::run_mid_training(c, r); }))
        return false;
    }
    const auto w = mid_weights(domains);
    mid_cfg = compose<train::MidTrainConfig>(
        "mid", cfg.mid,
        {"output_dir=" + q(dir("mid")), "model.path=" + q(hf("base")), "model.init=pretrained",
         "data.mixture=" + q(cfg.data.real() ? cfg.data.mixture : write_mixture("mid", w)),
         eval_sources(heldout_shards()), "checkpoint.export_final=true"});
    if (!train_stage("mid", mid_cfg, [](const auto& c, const auto& r) { return train::run_mid_training(c, r); }))
      return false;
    // The same GRPO job from both starting points: only output_dir and model.path differ. Every
    // checkpoint is kept: the analysis stage draws the RL trajectory from them.
    std::string prompts = "data.prompts=[";
    if (cfg.data.real()) {
      for (size_t i = 0; i < cfg.data.rl_prompts.size(); ++i) prompts += (i ? ", " : "") + q(cfg.data.rl_prompts[i]);
    } else {
      for (size_t i = 0; i < tasks.rl_prompts.size(); ++i) prompts += (i ? ", " : "") + q(tasks.rl_prompts[i]);
    }
    prompts += "]";
    for (const std::string from : {"mid", "base"}) {
      auto rc = compose<rl::RlConfig>(
          "rl", cfg.rl,
          {"output_dir=" + q(dir("rl-" + from)), "model.path=" + q(hf(from)), "model.init=pretrained", prompts,
           "checkpoint.keep_last=0", "checkpoint.export_final=true"});
      if (!train_stage("rl-" + from, rc, [](const auto& c, const auto& r) { return rl::run_grpo(c, r); })) return false;
    }
    return true;
  }

  // ---- 5. evaluation --------------------------------------------------------------------------
  void stage_eval() {
    // One benchmark per task domain on its generated test prompts, with the settings of the eval
    // stage's benchmark of that name (else of its first benchmark); the stage's paths are replaced.
    auto suite = compose<eval::SuiteConfig>("eval", cfg.eval, {});
    if (!cfg.data.suite_benchmarks) {
      std::vector<eval::BenchmarkConfig> per_domain;
      for (size_t i = 0; i < domains.size(); ++i) {
        auto b = suite.benchmarks.front();
        for (const auto& x : suite.benchmarks)
          if (x.name == domains[i]) b = x;
        b.name = domains[i];
        b.path = tasks.test_prompts[i];
        per_domain.push_back(b);
      }
      suite.benchmarks = per_domain;
    }
    const std::string d = dir("eval");
    auto held = mid_cfg;
    const std::string fp_base = config::dump_config(suite) + config::dump_config(held.eval) + held.data.mixture;
    const auto device = runtime::resolve_device(train::device_name(mid_cfg.model.device), 0, "mid.model.device");
    for (const auto& m : kModels) {
      const std::string md = fs::join(d, m);
      const std::string fp = fp_base + "\nmodel=" + hf(m) + "\n" + fs::read_file(fs::join(hf(m), "config.json"));
      if (done("eval " + m, md, fp)) continue;
      const auto t0 = Clock::now();
      models::LoadOptions lo;
      lo.device = device.str();
      auto model = models::CausalLM::from_pretrained(hf(m), lo);
      auto tok = io::Tokenizer::from_file(fs::join(hf(m), "tokenizer.json"));
      auto r = eval::run_suite(suite, *model, *tok);
      eval::write_report(r, md, "Study evaluation of " + m + " (" + hf(m) + ")");
      // Retention and per-source held-out loss: the mid-training loop's own evaluation code.
      json hl = json::object();
      for (const auto& [src, loss] : train::heldout_loss(held, *model, opts.config_file)) hl[src] = loss;
      fs::write_file_atomic(fs::join(md, "heldout_loss.json"), hl.dump(1) + "\n");
      say(str("[eval ", m, "] macro pass@1 ", r.score.macro_avg, ", general held-out loss ", hl.value("general", 0.0)));
      mark("eval " + m, md, fp, since(t0));
    }
  }

  // ---- 6. analysis ----------------------------------------------------------------------------
  void stage_analysis() {
    const std::string d = dir("analysis");
    std::vector<double> th = analysis::default_thresholds();
    if (std::find(th.begin(), th.end(), cfg.analysis.threshold) == th.end()) {
      th.push_back(cfg.analysis.threshold);
      std::sort(th.begin(), th.end());
    }
    analysis::CompareOptions co;
    co.thresholds = th;
    const std::string fp_a = config::dump_config(cfg.analysis);
    auto id = [&](const std::string& m) {
      return str(hf(m), ":", fs::read_file(fs::join(out, "eval/" + m + "/STAGE_DONE.json")));
    };
    for (const auto& [name, a, b] :
         std::vector<std::tuple<std::string, std::string, std::string>>{{"weights-base-mid", "base", "mid"},
                                                                        {"weights-mid-midrl", "mid", "mid-rl"},
                                                                        {"weights-base-baserl", "base", "base-rl"}}) {
      const std::string sd = fs::join(d, name);
      const std::string fp = fp_a + id(a) + id(b);
      if (done("analysis " + name, sd, fp)) continue;
      const auto t0 = Clock::now();
      auto cmp = analysis::compare_weights(hf(a), {hf(b)}, co);
      analysis::write_weights_report(cmp, sd, cfg.analysis.threshold);
      mark("analysis " + name, sd, fp, since(t0));
    }
    for (const auto& [name, from] : std::vector<std::pair<std::string, std::string>>{{"trajectory-mid-rl", "mid"},
                                                                                     {"trajectory-base-rl", "base"}}) {
      const std::string sd = fs::join(d, name);
      const std::string fp = fp_a + id(from) + id(from + "-rl");
      if (done("analysis " + name, sd, fp)) continue;
      const auto t0 = Clock::now();
      auto traj = analysis::trajectory(hf(from), {dir("rl-" + from)}, co);
      analysis::write_trajectory_report(traj, sd, cfg.analysis.threshold);
      mark("analysis " + name, sd, fp, since(t0));
    }
    analysis::CkaOptions ko;
    ko.num_inputs = cfg.analysis.cka_inputs;
    ko.resamples = cfg.analysis.cka_resamples;
    ko.subset = cfg.analysis.cka_subset;
    ko.max_tokens = cfg.analysis.cka_max_tokens;
    ko.device = train::device_name(mid_cfg.model.device);
    for (const auto& [name, a, b] : std::vector<std::tuple<std::string, std::string, std::string>>{
             {"cka-base-mid", "base", "mid"}, {"cka-mid-midrl", "mid", "mid-rl"}}) {
      const std::string sd = fs::join(d, name);
      const std::string fp = fp_a + id(a) + id(b) + cka_text();
      if (done("analysis " + name, sd, fp)) continue;
      const auto t0 = Clock::now();
      auto r = analysis::compare_representations(hf(a), hf(b), cka_text(), ko);
      analysis::write_cka_report(r, sd);
      mark("analysis " + name, sd, fp, since(t0));
    }
  }

  StudyResult run() {
    const auto t0 = Clock::now();
    preflight();
    const std::string saved = dir("study.yaml");
    if (main_rank) {
      if (fs::exists(saved) && !opts.resume)
        throw Error(str(out, " already holds a study (", saved,
                        "); pass --resume to continue it, or choose another "
                        "output_dir"));
      fs::create_directories(out);
      config::save_config(cfg, saved);
    }
    if (cfg.threads > 0) at::set_num_threads(static_cast<int>(cfg.threads));
    if (!cfg.data.real()) {
      stage_tasks();
      stage_tokenize();
    }
    if (!stage_models()) {
      res.seconds = since(t0);
      return res;
    }
    stage_eval();
    stage_analysis();
    if (!main_rank) {
      res.seconds = since(t0);
      return res;
    }
    auto paths = write_study_report(out, cfg.analysis.threshold, cfg.claims);
    res.report_md = paths.first;
    res.report_json = paths.second;
    res.seconds = since(t0);
    say(str("[report] ", res.report_md, " (study ", static_cast<int64_t>(res.seconds), " s)"));
    return res;
  }
};

}  // namespace

StudyResult run_study(const StudyConfig& cfg, const StudyOptions& opts) {
  config::validate_config(cfg);
  Study s(cfg, opts);
  return s.run();
}

}  // namespace prism::study
