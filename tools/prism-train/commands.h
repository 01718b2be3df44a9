// Subcommand registry of prism-train (one function per subcommand in commands.cpp).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

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

/// `--threads N` on a compute subcommand (N >= 1): the CPU threads ATen uses, so that users on a shared
/// machine need not reach for OMP_NUM_THREADS. The text is checked while parsing (0, -1 or "x" is a
/// one-line `prism::Error` naming --threads); `threads` stays 0 when the option is not given.
CLI::Option* add_threads_option(CLI::App* sub, int& threads, const std::string& help = "CPU threads (default: all cores)");

/// Applies a thread count (0: leave ATen's defaults) to ATen's intra-op and inter-op pools, logs the
/// effective counts, and returns the intra-op count now in effect. Call it once, before any compute:
/// ATen fixes the inter-op pool at its first use.
int apply_threads(int threads);

/// A YAML job's `--set` list with `train.threads=N` appended when --threads was given (mid, rl): the CLI
/// wins over the file, and the resolved config saved into the run directory records the count in effect.
std::vector<std::string> with_threads(std::vector<std::string> sets, int threads);

// One registration function per job family, each in its own file (tools/prism-train/cmd_*.cpp),
// called from Commands::register_all.
void register_reward_commands(CLI::App& app, Commands& cmds);  // cmd_reward.cpp: `reward`

/// `generate`: sampling with the rollout engine (cmd_generate.cpp).
void register_generate_commands(CLI::App& app, Commands& cmds);

/// `prism-train analyze weights|trajectory|cka` (cmd_analyze.cpp).
void register_analyze_commands(CLI::App& app, Commands& cmds);
void register_eval_commands(CLI::App& app, Commands& cmds);     // cmd_eval.cpp: `eval`
void register_rl_commands(CLI::App& app, Commands& cmds);       // cmd_rl.cpp: `rl`
void register_plan_commands(CLI::App& app, Commands& cmds);     // cmd_plan.cpp: `plan`
void register_merge_commands(CLI::App& app, Commands& cmds);    // cmd_merge.cpp: `merge`
void register_study_commands(CLI::App& app, Commands& cmds);    // cmd_study.cpp: `study`, `study tasks`

/// `prism-train study tasks` (cmd_study_tasks.cpp; cmd_study.cpp parses the config and calls it):
/// writes the generated task files of `cfg` under `out_dir`, prints what it wrote, returns 0.
int run_study_tasks(const study::TaskConfig& cfg, const std::string& out_dir);

/// Bytes of "5GB" (decimal, as huggingface_hub), "500MiB" (binary), "20KB" or a plain count;
/// an error naming `key` otherwise.
uint64_t parse_size(const std::string& s, const std::string& key);

}  // namespace prism::cli
