// SIGTERM/SIGINT -> "stop after the next step with a checkpoint", shared by every training job
// (`mid`, `rl`): Slurm sends SIGTERM before preemption and time limits.
#pragma once

#include <functional>
#include <string>

#include "prism/train/trainer.h"

namespace prism::cli {

/// Installs the handlers (idempotent). The handler only records the signal.
void install_stop_handlers();
/// Whether SIGTERM/SIGINT arrived since install_stop_handlers().
bool stop_requested();
/// The signal that arrived (0: none).
int stop_signal();

/// Runs a training job (`job`: "mid", "rl") with SIGTERM/SIGINT wired to options.should_stop and
/// reports the outcome on stderr; returns the exit status: 0 done, train::kExitStopped stopped.
int run_training_job(const std::string& job, train::RunOptions options,
                     const std::function<train::RunResult(const train::RunOptions&)>& run);

}  // namespace prism::cli
