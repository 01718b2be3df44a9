// prism-train analyze: what training changed (weights, trajectory), whether representations
// survived (cka) and how the pass rate varies between the base, mid-trained and RL weights
// (landscape), each writing JSON + Markdown + gnuplot plots into -o; `combine` writes one point of
// the landscape as an HF checkpoint.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "prism-train/commands.h"
#include "prism/analysis/cka.h"
#include "prism/analysis/combine.h"
#include "prism/analysis/landscape.h"
#include "prism/analysis/report.h"
#include "prism/analysis/weights.h"
#include "prism/core/config.h"
#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/eval/suite.h"
#include "prism/models/checkpoint_files.h"
#include "prism/runtime/runtime.h"

namespace prism::cli {
namespace {

struct AnalyzeOptions {
  std::string base, model, other, ckpt_b, inputs;
  std::vector<std::string> checkpoints;
  std::string out_dir = "analysis";
  int threads = 0;
  double plot_threshold_pct = 1.0;
  bool quiet = false;
  analysis::CkaOptions cka;
  // landscape / combine
  std::string rl, suite, alpha_spec = "0:2:5", beta_spec = "-1:1:5", dtype = "fp32", device = "cpu", tokenizer;
  std::vector<std::string> sets;
  double alpha = 1.0, beta = 0.0;
};

// Every subcommand ends in plots: fail before a long pass over the checkpoints, not after it.
void prepare(int n) {
  apply_threads(n);
  analysis::check_gnuplot();
}

analysis::CompareOptions compare_options(const AnalyzeOptions& o) {
  analysis::CompareOptions c;
  if (!o.quiet && ::isatty(STDERR_FILENO))
    c.progress = [](size_t done, size_t total, const std::string& name) {
      std::fprintf(stderr, "\r[%zu/%zu] %-60.60s", done, total, name.c_str());
      if (done == total) std::fprintf(stderr, "\n");
    };
  return c;
}

void print_written(const std::vector<std::string>& files) {
  for (const auto& f : files) std::cout << f << "\n";
}

int run_weights(const AnalyzeOptions& o) {
  prepare(o.threads);
  auto c = compare_options(o);
  std::vector<std::string> compared{o.model};
  if (!o.other.empty()) {
    compared.push_back(o.other);
    c.cosine_pairs = {{0, 1}};
  }
  auto cmp = analysis::compare_weights(o.base, compared, c);
  std::cerr << "analyze weights: " << cmp.tensors.size() << " tensors, " << cmp.bytes_read / 1e9 << " GB in "
            << cmp.seconds << " s\n";
  print_written(analysis::write_weights_report(cmp, o.out_dir, o.plot_threshold_pct / 100.0));
  return 0;
}

int run_trajectory(const AnalyzeOptions& o) {
  prepare(o.threads);
  auto t = analysis::trajectory(o.base, o.checkpoints, compare_options(o));
  std::cerr << "analyze trajectory: " << t.checkpoints.size() << " checkpoints, steps " << t.checkpoints.front().step
            << " to " << t.checkpoints.back().step << ", " << t.comparison.seconds << " s\n";
  print_written(analysis::write_trajectory_report(t, o.out_dir, o.plot_threshold_pct / 100.0));
  return 0;
}

int run_cka(const AnalyzeOptions& o) {
  prepare(o.threads);
  auto r = analysis::compare_representations(o.base, o.ckpt_b, o.inputs, o.cka);
  std::cerr << "analyze cka: " << r.full.size() << " layers, minimum " << r.min_value << " at layer " << r.min_layer
            << " (std " << r.min_std << "), " << r.seconds << " s\n";
  print_written(analysis::write_cka_report(r, o.out_dir));
  return 0;
}

int run_landscape(const AnalyzeOptions& o) {
  // The grid and the suite are checked before any checkpoint is read.
  analysis::LandscapeOptions lo;
  lo.alphas = analysis::parse_grid_axis(o.alpha_spec, "--alpha");
  lo.betas = analysis::parse_grid_axis(o.beta_spec, "--beta");
  auto suite = config::load_config<eval::SuiteConfig>(o.suite, o.sets);
  prepare(o.threads);
  lo.dtype = o.dtype;
  lo.device = o.device;
  lo.tokenizer = o.tokenizer;
  lo.points_dir = fs::join(o.out_dir, "points");
  if (!o.quiet)
    lo.progress = [](size_t done, size_t total, double a, double b) {
      std::fprintf(stderr, "analyze landscape: point %zu/%zu (alpha %g, beta %g)\n", done + 1, total, a, b);
    };
  auto land = analysis::evaluate_landscape(o.base, o.model, o.rl, suite, lo);
  std::cerr << "analyze landscape: " << land.points.size() << " points in " << land.seconds << " s\n";
  print_written(analysis::write_landscape_report(land, o.out_dir, o.suite));
  return 0;
}

int run_combine(const AnalyzeOptions& o) {
  apply_threads(o.threads);
  models::LoadOptions lo;
  lo.dtype = runtime::parse_dtype(o.dtype, "--dtype");
  const auto coeffs = analysis::landscape_coefficients(o.alpha, o.beta);
  auto model = analysis::load_combination({o.base, o.model, o.rl}, coeffs, lo);
  model->save_pretrained(o.out_dir);
  // The combination is built from config.json alone: the base's tokenizer files come along.
  models::copy_checkpoint_files(analysis::resolve_hf_dir(o.base), o.out_dir);
  std::cerr << "analyze combine: W(" << o.alpha << ", " << o.beta << ") = " << coeffs[0] << " base + " << coeffs[1]
            << " mid + " << coeffs[2] << " rl\n";
  std::cout << o.out_dir << "\n";
  return 0;
}

void common(CLI::App* s, AnalyzeOptions& o) {
  s->add_option("-o,--output", o.out_dir, "Report directory (JSON, Markdown, PNG and SVG plots)")
      ->capture_default_str();
  add_threads_option(s, o.threads);
}

}  // namespace

void register_analyze_commands(CLI::App& app, Commands& cmds) {
  auto o = std::make_shared<AnalyzeOptions>();
  auto* a = app.add_subcommand("analyze",
                               "Weight-change statistics, training trajectories and per-layer CKA (docs/analysis.md)");
  a->require_subcommand(1);
  {
    auto* s = a->add_subcommand("weights",
                                "Normalised L2, changed fractions by (sub-)component and, with --vs, delta cosine");
    s->add_option("base", o->base, "Base checkpoint (HF directory or a training checkpoint holding model/)")
        ->required()
        ->check(CLI::ExistingDirectory);
    s->add_option("new", o->model, "Trained checkpoint")->required()->check(CLI::ExistingDirectory);
    s->add_option("--vs", o->other, "A second trained checkpoint: cosine of the two deltas from the base")
        ->check(CLI::ExistingDirectory);
    s->add_option("--plot-threshold", o->plot_threshold_pct, "Threshold (%) of the bar chart: 0.1, 0.5, 1, 2, 5 or 10")
        ->capture_default_str();
    s->add_flag("--quiet,-q", o->quiet, "No progress line");
    common(s, *o);
    cmds.add(s, [o] { return run_weights(*o); });
  }
  {
    auto* s = a->add_subcommand("trajectory",
                                "Normalised L2 and share within 1% of every checkpoint of a run, against its start");
    s->add_option("start", o->base, "Starting checkpoint (HF directory)")->required()->check(CLI::ExistingDirectory);
    s->add_option("checkpoints", o->checkpoints,
                  "A run's output_dir (its checkpoints/step-*/model), a checkpoints/ directory, or HF directories")
        ->required()
        ->check(CLI::ExistingDirectory);
    s->add_option("--plot-threshold", o->plot_threshold_pct, "Threshold (%) of the 'within' curve")
        ->capture_default_str();
    s->add_flag("--quiet,-q", o->quiet, "No progress line");
    common(s, *o);
    cmds.add(s, [o] { return run_trajectory(*o); });
  }
  {
    auto* s =
        a->add_subcommand("cka", "Linear CKA per layer between two models' mean-pooled hidden states, bootstrapped");
    s->add_option("model_a", o->base, "First model (HF directory)")->required()->check(CLI::ExistingDirectory);
    s->add_option("model_b", o->ckpt_b, "Second model, same number of layers")
        ->required()
        ->check(CLI::ExistingDirectory);
    s->add_option("--inputs", o->inputs, "JSONL file of input texts")->required()->check(CLI::ExistingFile);
    s->add_option("--field", o->cka.field, "JSONL field holding the text")->capture_default_str();
    s->add_option("--num-inputs", o->cka.num_inputs, "Use the first N records (0 = all)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    s->add_option("--resamples", o->cka.resamples, "Bootstrap resamples")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    s->add_option("--subset", o->cka.subset, "Inputs per resample (drawn without replacement)")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    s->add_option("--seed", o->cka.seed, "Bootstrap seed")->capture_default_str();
    s->add_option("--max-tokens", o->cka.max_tokens, "Truncate inputs to this many tokens (0 = no limit)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    s->add_flag("!--no-special-tokens", o->cka.add_special_tokens,
                "Do not add BOS/EOS from the tokenizer's post-processor");
    s->add_option("--tokenizer", o->cka.tokenizer, "tokenizer.json to use for both models (default: each model's own)");
    s->add_option("--dtype", o->cka.dtype, "Forward dtype: fp32 | bf16")
        ->capture_default_str()
        ->check(CLI::IsMember({"fp32", "bf16"}));
    s->add_option("--device", o->cka.device, "cpu | cuda | auto")->capture_default_str();
    common(s, *o);
    cmds.add(s, [o] { return run_cka(*o); });
  }
  auto three = [&](CLI::App* s) {
    s->add_option("base", o->base, "Base checkpoint: W(0, 0) (HF directory or a training checkpoint holding model/)")
        ->required()
        ->check(CLI::ExistingDirectory);
    s->add_option("mid", o->model, "Mid-trained checkpoint: W(1, 0)")->required()->check(CLI::ExistingDirectory);
    s->add_option("rl", o->rl, "RL checkpoint: W(1, 1)")->required()->check(CLI::ExistingDirectory);
    s->add_option("--dtype", o->dtype, "Model dtype: fp32 | bf16")
        ->capture_default_str()
        ->check(CLI::IsMember({"fp32", "bf16"}));
  };
  {
    auto* s = a->add_subcommand(
        "landscape", "Evaluation suite on W(a, b) = W_base + a (W_mid - W_base) + b (W_rl - W_mid) over a grid");
    three(s);
    s->add_option("--suite", o->suite, "Evaluation suite YAML (configs/eval/*.yaml)")->required();
    s->add_option("--set", o->sets, "Override a suite key: --set benchmarks[0].limit=50 (repeatable)");
    s->add_option("--alpha", o->alpha_spec, "alpha values: a list (0,0.5,1) or start:stop:count")->capture_default_str();
    s->add_option("--beta", o->beta_spec, "beta values: a list (-1,0,1) or start:stop:count")->capture_default_str();
    s->add_option("--device", o->device, "cpu | cuda | cuda:N | auto")->capture_default_str();
    s->add_option("--tokenizer", o->tokenizer, "tokenizer.json (default: the base's)");
    s->add_flag("--quiet,-q", o->quiet, "No progress lines");
    common(s, *o);
    cmds.add(s, [o] { return run_landscape(*o); });
  }
  {
    auto* s = a->add_subcommand("combine", "Write W(a, b) of the landscape as an HF checkpoint");
    three(s);
    s->add_option("--alpha", o->alpha, "alpha (toward the mid-trained weights)")->capture_default_str();
    s->add_option("--beta", o->beta, "beta (toward the RL weights)")->capture_default_str();
    add_threads_option(s, o->threads);
    s->add_option("-o,--output", o->out_dir, "Output HF directory")->required();
    cmds.add(s, [o] { return run_combine(*o); });
  }
}

}  // namespace prism::cli
