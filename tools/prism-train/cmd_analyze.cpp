// prism-train analyze: what training changed (weights, trajectory) and whether representations
// survived (cka), each writing JSON + Markdown + gnuplot plots into -o.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "prism-train/commands.h"
#include "prism/analysis/cka.h"
#include "prism/analysis/report.h"
#include "prism/analysis/weights.h"
#include "prism/core/error.h"

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
}

}  // namespace prism::cli
