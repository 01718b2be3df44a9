// Subcommand registry of prism-train (one function per subcommand in commands.cpp).
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <memory>
#include <vector>

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

 private:
  struct Registered {
    CLI::App* sub;
    std::function<int()> run;
  };
  std::unique_ptr<Options> opts_;
  std::vector<Registered> cmds_;
};

}  // namespace prism::cli
