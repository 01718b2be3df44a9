// prism-train rl: GRPO with verifiable rewards from a YAML config (configs/rl/; docs/rl.md).
#include <CLI/CLI.hpp>

#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "prism-train/commands.h"
#include "prism-train/stop_signal.h"
#include "prism/core/config.h"
#include "prism/rl/grpo.h"

namespace prism::cli {

namespace {

struct RlOptions {
  std::string config_path;
  std::vector<std::string> sets;
  std::string resume;
  bool print_config = false;
  train::FaultInjection faults;
  int threads = 0;
};

int cmd_rl(const RlOptions& o) {
  train::RunOptions ro;
  auto cfg = config::load_config<rl::RlConfig>(o.config_path, with_threads(o.sets, o.threads), &ro.config_origins);
  if (o.print_config) {
    std::cout << config::dump_config(cfg);
    return 0;
  }
  ro.resume = o.resume;
  ro.config_file = o.config_path;
  ro.faults = o.faults;
  return run_training_job("rl", ro, [&](const train::RunOptions& r) { return rl::run_grpo(cfg, r); });
}

}  // namespace

void register_rl_commands(CLI::App& app, Commands& cmds) {
  auto o = std::make_shared<RlOptions>();
  auto* s = app.add_subcommand("rl", "GRPO with verifiable rewards from a YAML config (configs/rl/); data-parallel "
                                     "under tools/launch.sh or torchrun");
  s->footer("Exit status: 0 done (train.steps reached, final model exported), 1 error, 2 usage error,\n"
            "3 stopped by SIGTERM/SIGINT before train.steps (a checkpoint was written; continue with --resume auto).");
  s->add_option("--config,-c", o->config_path, "YAML config (configs/rl/*.yaml)")->required();
  s->add_option("--set", o->sets, "Override a key: --set optimizer.lr=1e-6 (repeatable)");
  s->add_option("--resume", o->resume, "auto: newest complete checkpoint of output_dir (fresh start if none), or a checkpoint dir");
  s->add_flag("--print-config", o->print_config, "Print the resolved config and exit");
  add_threads_option(s, o->threads, "CPU threads per rank (overrides train.threads)");
  s->add_option("--debug-sigkill-after-step", o->faults.sigkill_after_step)->group("");
  s->add_option("--debug-nonfinite-steps", o->faults.nonfinite_steps)->delimiter(',')->group("");
  s->add_option("--debug-checkpoint-pause-ms", o->faults.checkpoint_pause_ms)->group("");
  cmds.add(s, [o] { return cmd_rl(*o); });
}

}  // namespace prism::cli
