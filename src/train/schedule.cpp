// LR schedule factors (formulas and step convention: include/prism/train/schedule.h).
#include "prism/train/schedule.h"

#include <cmath>
#include <numbers>
#include <string>

#include "prism/core/error.h"

namespace prism::train {
namespace {

[[noreturn]] void fail(const std::string& key, const std::string& message, const std::string& expected,
                       const std::string& found) {
  throw Error(message, key_context("", key, expected, found));
}

// Length of wsd's final decay phase; 0 means 20% of the run (header).
std::int64_t wsd_decay_steps(const ScheduleConfig& cfg, std::int64_t total_steps) {
  return cfg.decay_steps > 0 ? cfg.decay_steps : total_steps / 5;
}

// Decay from 1 (x = 0) to f (x = len) with the given shape; 0 <= x < len.
double decay(DecayKind shape, double x, double len, double f) {
  const double t = x / len;
  switch (shape) {
    case DecayKind::kCosine:
      return f + (1 - f) * (1 + std::cos(std::numbers::pi * t)) / 2;
    case DecayKind::kLinear:
      return 1 - (1 - f) * t;
    case DecayKind::kSqrt:
      return f + (1 - f) * (1 - std::sqrt(t));
  }
  return f;
}

}  // namespace

void ScheduleConfig::validate() const {
  if (decay_steps != 0 && kind != ScheduleKind::kWsd) {
    fail("decay_steps", "only used by kind 'wsd' (the other kinds decay over all steps after warmup)", "0",
         std::to_string(decay_steps));
  }
}

void validate_schedule(const ScheduleConfig& cfg, std::int64_t total_steps) {
  if (total_steps <= 0) fail("total_steps", "a run needs at least one step", "> 0", std::to_string(total_steps));
  if (cfg.warmup_steps < 0) fail("warmup_steps", "must not be negative", ">= 0", std::to_string(cfg.warmup_steps));
  if (cfg.warmup_steps > total_steps) {
    fail("warmup_steps", "warmup is longer than the run", "<= total_steps (" + std::to_string(total_steps) + ")",
         std::to_string(cfg.warmup_steps));
  }
  // `!(a && b)` also rejects NaN.
  if (!(cfg.min_lr_ratio >= 0 && cfg.min_lr_ratio <= 1)) {
    fail("min_lr_ratio", "must be a fraction of the peak LR", "a number in [0, 1]", str(cfg.min_lr_ratio));
  }
  if (cfg.decay_steps < 0) fail("decay_steps", "must not be negative", ">= 0", std::to_string(cfg.decay_steps));
  cfg.validate();
  if (cfg.kind == ScheduleKind::kWsd) {
    const std::int64_t d = wsd_decay_steps(cfg, total_steps);
    if (cfg.warmup_steps + d > total_steps) {
      fail("decay_steps", "warmup plus decay is longer than the run",
           "warmup_steps + decay_steps <= total_steps (" + std::to_string(total_steps) + ")",
           std::to_string(cfg.warmup_steps) + " + " + std::to_string(d) +
               (cfg.decay_steps == 0 ? " (20% of the run)" : ""));
    }
  }
}

double lr_factor(const ScheduleConfig& cfg, std::int64_t step, std::int64_t total_steps) {
  validate_schedule(cfg, total_steps);
  if (step < 0) throw Error(str("lr_factor: negative step ", step));
  const double f = cfg.min_lr_ratio;
  if (step >= total_steps) return cfg.kind == ScheduleKind::kConstant ? 1.0 : f;
  const std::int64_t w = cfg.warmup_steps;
  if (step < w) return static_cast<double>(step) / static_cast<double>(w);

  // Decay over [w, total_steps): x in [0, len).
  const double x = static_cast<double>(step - w);
  const double len = static_cast<double>(total_steps - w);
  switch (cfg.kind) {
    case ScheduleKind::kCosine:
      return decay(DecayKind::kCosine, x, len, f);
    case ScheduleKind::kLinear:
      return decay(DecayKind::kLinear, x, len, f);
    case ScheduleKind::kConstant:
      return 1.0;
    case ScheduleKind::kExponential: {
      const double e = std::numbers::e;
      return f + (1 - f) * (e * std::exp(-x / len) - 1) / (e - 1);
    }
    case ScheduleKind::kWsd: {
      const std::int64_t d = wsd_decay_steps(cfg, total_steps);
      const std::int64_t decay_start = total_steps - d;
      if (step < decay_start) return 1.0;
      return decay(cfg.decay_kind, static_cast<double>(step - decay_start), static_cast<double>(d), f);
    }
  }
  return f;
}

}  // namespace prism::train
