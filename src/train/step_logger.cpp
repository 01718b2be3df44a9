// StepLogger (include/prism/train/step_logger.h).
#include "prism/train/step_logger.h"

#include <algorithm>

#include "prism/core/log.h"
#include "prism/train/run_context.h"

namespace prism::train {

StepLogger::StepLogger(RunContext& ctx, StepLoggerOptions options, int64_t resume_step)
    : ctx_(ctx), options_(std::move(options)), start_(Clock::now()), last_(start_) {
  if (!ctx_.is_main()) return;
  metrics_ = std::make_unique<MetricsWriter>(options_.output_dir, options_.tensorboard, resume_step);
  progress_ = std::make_unique<ConsoleProgress>();
}

StepLogger::~StepLogger() = default;

void StepLogger::step(int64_t step, const StepRecord& rec, const Scalars& extra, bool write) {
  if (first_step_ < 0) first_step_ = step - 1;
  tokens_since_ += rec.tokens;
  if (!write) return;
  const auto now = Clock::now();
  const double dt = std::chrono::duration<double>(now - last_).count();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double tps = dt > 0 ? tokens_since_ / dt : 0;
  const double per_step = elapsed / static_cast<double>(std::max<int64_t>(1, step - first_step_));
  Scalars sc = {{"loss", rec.loss},         {"lr", rec.lr},
                {"grad_norm", rec.grad_norm}, {"tokens_per_s", tps},
                {"tokens", rec.tokens_total}, {"skipped", rec.skipped ? 1.0 : 0.0}};
  StepStats ss;
  ss.step = step;
  ss.total_steps = options_.total_steps;
  ss.loss = rec.loss;
  ss.lr = rec.lr;
  ss.grad_norm = rec.grad_norm;
  ss.tokens_per_s = tps;
  ss.eta_s = per_step * static_cast<double>(options_.total_steps - step);
  if (options_.peak_flops > 0 && options_.flops_per_token > 0) {
    ss.mfu = mfu(tps, options_.flops_per_token, options_.peak_flops * ctx_.world_size());
    sc.emplace_back("mfu", ss.mfu);
  }
  ss.mem_bytes = static_cast<double>(ctx_.memory_bytes());
  sc.emplace_back("mem_gib", ss.mem_bytes / (1 << 30));
  sc.insert(sc.end(), extra.begin(), extra.end());
  if (ctx_.is_main()) {
    metrics_->log(step, sc);
    progress_->update(ss);
  }
  last_ = now;
  tokens_since_ = 0;
}

void StepLogger::scalars(int64_t step, const Scalars& values) {
  if (ctx_.is_main()) metrics_->log(step, values);
}

void StepLogger::info(const std::string& message) {
  if (!ctx_.is_main()) return;
  if (progress_) progress_->finish();
  log::info(message);
}

void StepLogger::warn(const std::string& message) {
  if (!ctx_.is_main()) return;
  if (progress_) progress_->finish();
  log::warn(message);
}

}  // namespace prism::train
