// SIGTERM/SIGINT -> "stop after the next step with a checkpoint", shared by every training job
// (`mid`, `rl`): Slurm sends SIGTERM before preemption and time limits.
#pragma once

namespace prism::cli {

/// Installs the handlers (idempotent). The handler only records the signal.
void install_stop_handlers();
/// Whether SIGTERM/SIGINT arrived since install_stop_handlers().
bool stop_requested();
/// The signal that arrived (0: none).
int stop_signal();

}  // namespace prism::cli
