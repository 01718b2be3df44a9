// Subcommand registry of prism-train (one function per subcommand in commands.cpp).
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace prism::study {
struct TaskConfig;
}

namespace prism::cli {

struct Options;

/// Owns the parsed option values and the subcommand table (no globals, even in the CLI).
class Commands {
 public:
  Commands();
  ~Commands();
  void register_all(CLI::App& app);
  /// Runs the subcommand CLI11 parsed; returns the exit code.
  int run_selected();
  /// Adds a subcommand defined elsewhere (cmd_<job>.cpp keeps its own option struct alive in the
  /// closure); `run` is called when CLI11 parsed `sub`.
  void add(CLI::App* sub, std::function<int()> run) { cmds_.push_back({sub, std::move(run)}); }

 private:
  struct Registered {
    CLI::App* sub;
    std::function<int()> run;
  };
  std::unique_ptr<Options> opts_;
  std::vector<Registered> cmds_;
};

// One registration function per job family, each in its own file (tools/prism-train/cmd_*.cpp),
// called from Commands::register_all.
void register_reward_commands(CLI::App& app, Commands& cmds);  // cmd_reward.cpp: `reward`

/// `generate`: sampling with the rollout engine (cmd_generate.cpp).
void register_generate_commands(CLI::App& app, Commands& cmds);

/// `prism-train analyze weights|trajectory|cka` (cmd_analyze.cpp).
void register_analyze_commands(CLI::App& app, Commands& cmds);
void register_eval_commands(CLI::App& app, Commands& cmds);     // cmd_eval.cpp: `eval`
void register_rl_commands(CLI::App& app, Commands& cmds);       // cmd_rl.cpp: `rl`
void register_study_commands(CLI::App& app, Commands& cmds);    // cmd_study.cpp: `study`, `study tasks`

/// `prism-train study tasks` (cmd_study_tasks.cpp; cmd_study.cpp parses the config and calls it):
/// writes the generated task files of `cfg` under `out_dir`, prints what it wrote, returns 0.
int run_study_tasks(const study::TaskConfig& cfg, const std::string& out_dir);

}  // namespace prism::cli
