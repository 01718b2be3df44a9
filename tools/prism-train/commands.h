// Subcommand registry of prism-train (one function per subcommand in commands.cpp).
#pragma once

#include <CLI/CLI.hpp>

namespace prism::cli {
void register_commands(CLI::App& app);
int run_selected(CLI::App& app);
}  // namespace prism::cli
