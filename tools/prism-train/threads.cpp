// --threads for every compute subcommand of prism-train: one option definition, one place that
// applies it.
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "prism-train/commands.h"
#include "prism/core/error.h"
#include "prism/core/log.h"

namespace prism::cli {

CLI::Option* add_threads_option(CLI::App* sub, int& threads, const std::string& help) {
  // Parsed by hand, not by CLI11's int conversion: a bad value must read like every other prism
  // error (`prism-train: error: ...`, exit 1), and 0 must not silently mean "all cores".
  return sub
      ->add_option_function<std::string>(
          "--threads",
          [&threads](const std::string& text) {
            size_t pos = 0;
            long long v = 0;
            try {
              v = std::stoll(text, &pos);
            } catch (const std::exception&) {
              pos = 0;
            }
            if (text.empty() || pos != text.size() || v < 1 || v > 4096)
              throw Error("invalid thread count", key_context("", "--threads", "an integer >= 1", "\"" + text + "\""));
            threads = static_cast<int>(v);
          },
          help)
      ->type_name("N");
}

int apply_threads(int threads) {
  if (threads > 0) {
    at::set_num_threads(threads);
    // Inter-op work (independent ops run concurrently) gets the same budget, so that --threads 1
    // really means one busy core.
    at::set_num_interop_threads(threads);
    log::info("threads: " + std::to_string(at::get_num_threads()) + " intra-op, " +
              std::to_string(at::get_num_interop_threads()) + " inter-op (--threads)");
  }
  return at::get_num_threads();
}

std::vector<std::string> with_threads(std::vector<std::string> sets, int threads) {
  if (threads > 0) {
    apply_threads(threads);
    sets.push_back("train.threads=" + std::to_string(threads));
  }
  return sets;
}

}  // namespace prism::cli
