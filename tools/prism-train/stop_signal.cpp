#include "prism-train/stop_signal.h"

#include <csignal>

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

}  // namespace prism::cli
