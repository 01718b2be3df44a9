// prism-train merge: linear interpolation of same-architecture checkpoints into a new HF checkpoint
// (the study's long-context recipe starts from 15 % base + 85 % mid-trained; configs/longctx/).
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "prism-train/commands.h"
#include "prism/analysis/combine.h"
#include "prism/core/config.h"
#include "prism/core/error.h"

namespace prism::cli {
namespace {

struct MergeCliOptions {
  std::string config_path;
  std::vector<std::string> sets;
  bool print_config = false;
  std::vector<std::string> checkpoints;
  std::string base, into;
  std::vector<double> weights;
  std::string output, shard_size;
  bool quiet = false;
};

// The merge described by the command line: a --config file, --base/--into, or positional checkpoints.
analysis::MergeConfig resolve(const MergeCliOptions& o) {
  const bool pair = !o.base.empty() || !o.into.empty();
  const int forms = (!o.config_path.empty()) + pair + (!o.checkpoints.empty());
  if (forms != 1)
    throw Error("give exactly one of --config, --base/--into, or checkpoint directories",
                key_context("", "merge", "one form", str(forms, " forms")));
  if (!o.config_path.empty()) {
    if (!o.weights.empty())
      throw Error("the weights of a --config merge are in its file", key_context(o.config_path, "--weights"));
    auto cfg = config::load_config<analysis::MergeConfig>(o.config_path, o.sets);
    if (!o.output.empty()) cfg.output = o.output;
    if (!o.shard_size.empty()) cfg.shard_size = o.shard_size;
    return cfg;
  }
  if (!o.sets.empty()) throw Error("--set needs --config", key_context("", "--set"));
  analysis::MergeConfig cfg;
  cfg.output = o.output;
  cfg.shard_size = o.shard_size;
  if (cfg.output.empty()) throw Error("no output directory", key_context("", "--output", "-o DIR", "nothing"));
  std::vector<std::string> paths = o.checkpoints;
  if (pair) {
    if (o.base.empty() || o.into.empty())
      throw Error("--base and --into go together",
                  key_context("", o.base.empty() ? "--base" : "--into", "a checkpoint", "nothing"));
    paths = {o.base, o.into};
  }
  if (o.weights.size() != paths.size())
    throw Error(str("one weight per checkpoint (", paths.size(), " checkpoints)"),
                key_context("", "--weights", str(paths.size(), " numbers, e.g. 0.15,0.85"), str(o.weights.size())));
  for (size_t i = 0; i < paths.size(); ++i) cfg.checkpoints.push_back({paths[i], o.weights[i]});
  // --base A --into B: the weights read base, into; B is the reference (the model being continued
  // keeps its tokenizer, generation config and layout).
  if (pair) std::swap(cfg.checkpoints[0], cfg.checkpoints[1]);
  return cfg;
}

int cmd_merge(const MergeCliOptions& o) {
  const analysis::MergeConfig cfg = resolve(o);
  if (o.print_config) {
    std::cout << config::dump_config(cfg);
    return 0;
  }
  std::vector<std::string> paths;
  std::vector<double> weights;
  for (const auto& c : cfg.checkpoints) {
    paths.push_back(c.path);
    weights.push_back(c.weight);
  }
  analysis::MergeOptions mo;
  if (!cfg.shard_size.empty()) mo.max_shard_bytes = parse_size(cfg.shard_size, "shard_size");
  if (!o.quiet && ::isatty(STDERR_FILENO))
    mo.progress = [](size_t done, size_t total, const std::string& name) {
      std::fprintf(stderr, "\r[%zu/%zu] %-60.60s", done, total, name.c_str());
      if (done == total) std::fprintf(stderr, "\n");
    };
  const auto r = analysis::merge_checkpoints(paths, weights, cfg.output, mo);
  std::cerr << "merge: " << r.tensors << " tensors, " << r.bytes / 1e9 << " GB (largest tensor "
            << r.largest_tensor_bytes / 1e6 << " MB) in " << r.seconds << " s -> " << r.output << "\n";
  for (const auto& f : r.files) std::cout << f << "\n";
  return 0;
}

}  // namespace

void register_merge_commands(CLI::App& app, Commands& cmds) {
  auto o = std::make_shared<MergeCliOptions>();
  auto* s = app.add_subcommand(
      "merge",
      "Linear merge of same-architecture checkpoints into a new HF checkpoint, streamed tensor by tensor\n"
      "  prism-train merge --base BASE --into MID --weights 0.15,0.85 -o OUT\n"
      "  prism-train merge A B C --weights 0.5,0.3,0.2 -o OUT      (A is the reference)\n"
      "  prism-train merge --config configs/longctx/merge-granite-3.3-8b.yaml");
  s->add_option("checkpoints", o->checkpoints,
                "Checkpoints (HF directories or training checkpoints); the first is "
                "the reference: names, dtypes, shards, tokenizer/config files")
      ->check(CLI::ExistingDirectory);
  s->add_option("--base", o->base, "Base checkpoint (first weight)")->check(CLI::ExistingDirectory);
  s->add_option("--into", o->into, "Checkpoint merged into (second weight; the reference)")
      ->check(CLI::ExistingDirectory);
  s->add_option("--weights,-w", o->weights, "One coefficient per checkpoint, comma-separated")->delimiter(',');
  s->add_option("--output,-o", o->output, "New output directory (written to a temporary one, then renamed)");
  s->add_option("--shard-size", o->shard_size, "Max shard size (5GB, 500MB …); default: the reference's layout");
  s->add_option("--config,-c", o->config_path, "YAML merge recipe (configs/longctx/merge-*.yaml)");
  s->add_option("--set", o->sets, "Override a key of --config: --set output=out/x (repeatable)");
  s->add_flag("--print-config", o->print_config, "Print the resolved recipe and exit");
  s->add_flag("--quiet,-q", o->quiet, "No progress line");
  cmds.add(s, [o] { return cmd_merge(*o); });
}

}  // namespace prism::cli
