// prism-train study tasks: writes the study's generated task data (prism/study/tasks.h) so it can be
// inspected or used by hand-run stages. cmd_study.cpp parses the study config and dispatches here.
#include <iostream>
#include <string>

#include "prism-train/commands.h"
#include "prism/core/fs.h"
#include "prism/study/tasks.h"

namespace prism::cli {

namespace {

// Lines of a JSONL file (one record each).
int64_t count_lines(const std::string& path) {
  int64_t n = 0;
  for (char c : fs::read_file(path)) n += c == '\n';
  return n;
}

}  // namespace

int run_study_tasks(const study::TaskConfig& cfg, const std::string& out_dir) {
  const auto files = study::write_tasks(cfg, out_dir);
  std::cout << "study tasks (seed " << cfg.seed << ") written to " << out_dir << "\n";
  std::cout << "  general text: " << count_lines(files.general_train) << " documents (" << files.general_train
            << "), held-out " << count_lines(files.general_heldout) << " (" << files.general_heldout << ")\n";
  for (size_t i = 0; i < files.domains.size(); ++i)
    std::cout << "  " << files.domains[i] << ": mid " << count_lines(files.mid_train[i]) << " worked solutions ("
              << files.mid_train[i] << "), RL " << count_lines(files.rl_prompts[i]) << " prompts ("
              << files.rl_prompts[i] << "), test " << count_lines(files.test_prompts[i]) << " prompts ("
              << files.test_prompts[i] << ")\n";
  return 0;
}

}  // namespace prism::cli
