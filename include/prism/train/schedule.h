// Learning-rate schedules: the factor of the peak LR for each optimizer step.
//
// Why a pure function of (config, step, total): a resumed run needs no scheduler state in the
// checkpoint (the step counter is enough), and the schedule can be tabulated, plotted and tested
// without an optimizer. The optimizer multiplies its peak `lr` by lr_factor().
//
// Convention (the one of dolomite-engine's LambdaLR schedulers [DE scheduler.py], which the paper's
// Table 16/17 keys come from, and of Megatron-LM's OptimizerParamScheduler): `step` is the 0-based
// index of the optimizer step about to be taken, warmup is `step / warmup_steps`, so **step 0 runs
// at LR 0** and step `warmup_steps` is the first at the peak. (torchtitan differs: it warms up with
// `(step + 1) / (warmup_steps + 1)` to avoid a zero-LR first step.) With W = warmup_steps,
// N = total_steps, f = min_lr_ratio, D = N - W and x = step - W:
//
//   step < W          step / W                                       (all kinds)
//   cosine            f + (1 - f) * (1 + cos(pi * x / D)) / 2
//   linear            1 - (1 - f) * x / D
//   exponential       f + (1 - f) * (e * exp(-x / D) - 1) / (e - 1)
//   constant          1
//   wsd               1 until step N - Dd, then decays from 1 to f over the last Dd = decay_steps
//                     steps with decay_kind: cosine / linear as above (x, D -> x - (N - Dd), Dd),
//                     sqrt: f + (1 - f) * (1 - sqrt(x / Dd))  (Hagele et al. 2024, arXiv 2405.18392)
//   step >= N         f (constant: 1)
//
// The final factor f is reached *at* step N, one past the last optimizer step (as in [DE], where
// the cosine reaches the decay factor at num_warmup + num_decay = num_training_steps). So the last
// step (N - 1) runs slightly above f: for the study's cosine (W 500, N 25,000, f 0.1) it is
// 0.1 + 0.9 * sin^2(pi / 49,000) = 0.1 + 3.7e-9.
//
// Exponential is [DE]'s `a * exp(-x / T) + b` with a = (1 - f) e / (e - 1), b = (f e - 1) / (e - 1),
// rewritten: it falls from exactly 1 at x = 0 to exactly f at x = D, so f = 0 ("exponential decay
// to factor 0", the long-context stage of the paper's Table 17) is well defined. [DE] keeps
// evaluating the exponential past D (it goes below f, negative for f = 0); here it is clamped to f.
#pragma once

#include <cstdint>

#include "prism/core/config.h"

namespace prism::train {

enum class ScheduleKind { kCosine, kWsd, kLinear, kConstant, kExponential };
/// Shape of the final decay phase of `wsd`.
enum class DecayKind { kCosine, kLinear, kSqrt };

/// Defaults are the study's mid-training schedule [P Table 16]: 500 linear warmup steps, then
/// cosine to 0.1 x peak over the rest of the run.
struct ScheduleConfig {
  ScheduleKind kind = ScheduleKind::kCosine;
  std::int64_t warmup_steps = 500;  ///< linear warmup from 0 (step 0 has LR 0); must be <= total steps
  double min_lr_ratio = 0.1;        ///< final LR / peak LR (paper: 0.1; long-context stage: 0)
  /// wsd only: length of the final decay phase. 0 = 20% of the run, the cooldown length that
  /// Hagele et al. 2024 (arXiv 2405.18392) found to match cosine.
  std::int64_t decay_steps = 0;
  DecayKind decay_kind = DecayKind::kSqrt;  ///< wsd only: shape of the final decay

  bool operator==(const ScheduleConfig&) const = default;
  void visit(config::Visitor& v) {
    using namespace config;
    v.choice("kind", kind,
             {{ScheduleKind::kCosine, "cosine"},
              {ScheduleKind::kWsd, "wsd"},
              {ScheduleKind::kLinear, "linear"},
              {ScheduleKind::kConstant, "constant"},
              {ScheduleKind::kExponential, "exponential"}},
             "LR decay after warmup: cosine | wsd (warmup-stable-decay) | linear | constant | exponential");
    v.field("warmup_steps", warmup_steps, non_negative(), "linear warmup steps (step 0 runs at LR 0)");
    v.field("min_lr_ratio", min_lr_ratio, range(0, 1), "final LR as a fraction of the peak LR");
    v.field("decay_steps", decay_steps, non_negative(), "wsd: length of the final decay; 0 = 20% of the run");
    v.choice("decay_kind", decay_kind,
             {{DecayKind::kCosine, "cosine"}, {DecayKind::kLinear, "linear"}, {DecayKind::kSqrt, "sqrt"}},
             "wsd: shape of the final decay (sqrt: 1 - sqrt, Hagele et al. 2024)");
  }
  /// decay_steps is refused for kinds that would silently ignore it.
  void validate() const;
};

/// Throws prism::Error naming the key (`warmup_steps`, `min_lr_ratio`, `decay_steps`) when `cfg`
/// cannot describe a run of `total_steps` optimizer steps (e.g. warmup longer than the run).
void validate_schedule(const ScheduleConfig& cfg, std::int64_t total_steps);

/// Multiplier of the peak LR for the optimizer step with 0-based index `step` of a run of
/// `total_steps` steps (formulas in the file comment). Validates like validate_schedule();
/// `step` >= total_steps is allowed (returns the final factor), a negative step throws.
double lr_factor(const ScheduleConfig& cfg, std::int64_t step, std::int64_t total_steps);

}  // namespace prism::train
