// prism-train study: the PRISM study in miniature (or at scale), every stage in this process
// (include/prism/study/study.h; docs/study.md).
#include <CLI/CLI.hpp>

#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "prism-train/commands.h"
#include "prism-train/stop_signal.h"
#include "prism/core/config.h"
#include "prism/core/error.h"
#include "prism/study/study.h"
#include "prism/train/trainer.h"

namespace prism::cli {

namespace {

struct StudyCliOptions {
  std::string config_path;
  std::vector<std::string> sets;
  bool resume = false;
  bool print_config = false;
  std::string tasks_out;  // `study tasks -o`
};

// `prism-train study tasks`: only the generated task data of a study config (run_study_tasks).
int cmd_study_tasks(const StudyCliOptions& o) {
  auto cfg = config::load_config<study::StudyConfig>(o.config_path, o.sets);
  return run_study_tasks(cfg.tasks, o.tasks_out.empty() ? cfg.output_dir + "/tasks" : o.tasks_out);
}

int cmd_study(const StudyCliOptions& o) {
  config::Origins origins;  // a stage error in a `set:` entry names that entry's line
  auto cfg = config::load_config<study::StudyConfig>(o.config_path, o.sets, &origins);
  if (o.print_config) {
    std::cout << config::dump_config(cfg);
    return 0;
  }
  install_stop_handlers();
  study::StudyOptions so;
  so.resume = o.resume;
  so.config_file = o.config_path;
  so.config_origins = std::move(origins);
  so.should_stop = [] { return stop_requested(); };
  so.progress = [](const std::string& line) { std::cerr << "study: " << line << "\n"; };
  auto res = study::run_study(cfg, so);
  if (res.stopped) {
    std::cerr << "study: stopped; continue with: prism-train study --config " << o.config_path << " --resume\n";
    return train::kExitStopped;
  }
  std::cerr << "study: " << res.ran.size() << " stages run, " << res.skipped.size() << " skipped, "
            << static_cast<long long>(res.seconds) << " s; report " << res.report_md << " and " << res.report_json
            << "\n";
  return 0;
}

}  // namespace

void register_study_commands(CLI::App& app, Commands& cmds) {
  auto o = std::make_shared<StudyCliOptions>();
  auto* s = app.add_subcommand("study",
                               "The PRISM study end to end (configs/study/): base -> mid-training -> GRPO "
                               "vs GRPO on the base -> eval -> analysis -> report.md");
  s->footer(
      "Exit status: 0 report written, 1 error, 2 usage error, 3 stopped by SIGTERM/SIGINT (continue with --resume).");
  s->add_option("--config,-c", o->config_path, "study YAML (configs/study/*.yaml) (required)");
  s->add_option("--set", o->sets, "Override a study key: --set output_dir=out/s --set 'rl.set=[train.steps=5]'");
  s->add_flag("--resume", o->resume, "continue output_dir: finished stages are skipped, a killed one resumes");
  s->add_flag("--print-config", o->print_config, "Print the resolved study config and exit");
  auto t = std::make_shared<StudyCliOptions>();
  auto* ts = s->add_subcommand("tasks",
                               "Only write the generated task data of a study config (general text, worked "
                               "solutions, RL and test prompts) to inspect or run stages by hand");
  ts->add_option("--config,-c", t->config_path, "study YAML (configs/study/*.yaml); its `tasks:` section")->required();
  ts->add_option("--set", t->sets, "Override a study key: --set tasks.seed=3");
  ts->add_option("-o,--output", t->tasks_out, "directory (default <output_dir>/tasks)");
  cmds.add(ts, [t] { return cmd_study_tasks(*t); });
  // `study` itself needs --config; checked here, not by CLI11, so that `study tasks` does not.
  cmds.add(s, [o] {
    if (o->config_path.empty()) throw Error("study: --config is required (a study YAML, configs/study/*.yaml)");
    return cmd_study(*o);
  });
}

}  // namespace prism::cli
