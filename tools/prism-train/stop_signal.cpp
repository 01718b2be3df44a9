#include "prism-train/stop_signal.h"

#include <csignal>
#include <iostream>

namespace prism::cli {

namespace {
// The one piece of process-global state prism has: a signal handler can only reach a global, and
// it only records that SIGTERM/SIGINT arrived; the trainers poll it once per step, checkpoint and
// exit.
volatile std::sig_atomic_t g_stop_signal = 0;
extern "C" void prism_on_stop_signal(int sig) { g_stop_signal = sig; }
}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = prism_on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

bool stop_requested() { return g_stop_signal != 0; }
int stop_signal() { return static_cast<int>(g_stop_signal); }

int run_training_job(const std::string& job, train::RunOptions ro,
                     const std::function<train::RunResult(const train::RunOptions&)>& run) {
  install_stop_handlers();
  ro.should_stop = [] { return stop_requested(); };
  const auto r = run(ro);
  if (r.stopped) {
    std::cerr << job << ": stopped by signal " << stop_signal() << " at step " << r.step << "; checkpoint "
              << r.last_checkpoint << "; continue with --resume auto (exit status " << train::kExitStopped << ")\n";
    return train::kExitStopped;
  }
  std::cerr << job << ": done, " << r.step << " steps, last loss " << r.last_loss << "; checkpoint "
            << r.last_checkpoint << (r.final_export.empty() ? std::string() : "; HF export " + r.final_export) << "\n";
  return 0;
}

}  // namespace prism::cli
