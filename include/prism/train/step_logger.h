// StepLogger: what a training loop shows and records per step, on rank 0 only.
//
// Console progress line (redrawn on a TTY), `<output_dir>/metrics.jsonl` and TensorBoard events
// (MetricsWriter), with tokens/s over the logging interval, MFU (when a peak is known), memory
// (peak device memory on CUDA, RSS on CPU) and ETA computed here, plus any extra scalars a loop
// adds (eval losses, rewards, KL ...). metrics.jsonl holds one row per step: a fresh run starts
// a fresh file, a resumed one drops the rows past its checkpoint's step first.
//
// **Example**:
//
//     StepLogger logger(*ctx, {cfg.output_dir, cfg.log.tensorboard, cfg.train.steps, fpt, peak}, resume_step);
//     logger.step(step, {loss, lr, gnorm, input_tokens, tokens_total, skipped}, {{"reward", r}});
//     logger.info("eval ...");   // a log line that does not tear the progress line
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "prism/train/metrics.h"

namespace prism::train {

class RunContext;

struct StepLoggerOptions {
  std::string output_dir;
  bool tensorboard = true;
  int64_t total_steps = 0;
  double flops_per_token = 0;  ///< training FLOPs per token (0: no MFU)
  double peak_flops = 0;       ///< per device (0: no MFU)
};

/// One step's standard numbers.
struct StepRecord {
  double loss = 0;
  double lr = 0;
  double grad_norm = 0;
  double tokens = 0;        ///< tokens processed by this step, all ranks (for tokens/s)
  double tokens_total = 0;  ///< tokens trained on since the run began (logged as "tokens")
  bool skipped = false;
};

class StepLogger {
 public:
  /// `resume_step` < 0: a fresh run (metrics.jsonl truncated); else rows past it are dropped.
  StepLogger(RunContext& ctx, StepLoggerOptions options, int64_t resume_step);
  ~StepLogger();

  /// Accumulates the step's tokens; when `write` (the loop's log_every), writes a row and a
  /// console line with tokens/s over the steps since the previous row.
  void step(int64_t step, const StepRecord& rec, const Scalars& extra = {}, bool write = true);
  /// Extra scalars at a step (eval losses): a row of their own in metrics.jsonl.
  void scalars(int64_t step, const Scalars& values);
  /// A log line from rank 0 that ends a redrawn progress line first.
  void info(const std::string& message);
  void warn(const std::string& message);

 private:
  using Clock = std::chrono::steady_clock;
  RunContext& ctx_;
  StepLoggerOptions options_;
  std::unique_ptr<MetricsWriter> metrics_;
  std::unique_ptr<ConsoleProgress> progress_;
  Clock::time_point start_, last_;
  int64_t first_step_ = -1;
  double tokens_since_ = 0;
};

}  // namespace prism::train
