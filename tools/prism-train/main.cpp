// prism-train: the command-line front end. Each subcommand is a thin layer over the library;
// errors are caught once here and printed as a single line (exit code 1, 2 for usage errors).
#include <ATen/ATen.h>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>

#include "prism-train/commands.h"
#include "prism/core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"prism-train: mid-training and GRPO for LLMs on LibTorch.\n"
               "Load Hugging Face checkpoints (Llama 3.x, Mistral, Granite 3.3 / 4.0), inspect them, run forwards\n"
               "and generation, and save them back in the same format."};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for all subcommands");
  prism::cli::Commands commands;
  commands.register_all(app);
  // Option callbacks (e.g. --threads) throw prism::Error during parsing: one handler for both phases.
  try {
    app.parse(argc, argv);
    return commands.run_selected();
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::string msg = e.what();
    // c10::Error carries a multi-line backtrace: keep the first line.
    if (auto nl = msg.find('\n'); nl != std::string::npos) msg = msg.substr(0, nl);
    std::fprintf(stderr, "prism-train: error: %s\n", msg.c_str());
    return 1;
  }
}
