// StepRunner: one optimizer step over micro-batches, the same for every loss.
//
// What a loop supplies: the micro-batches' objectives (already summed over their tokens, rows or
// rollouts) and one global normaliser for the whole step (e.g. label tokens over all micro-batches
// and ranks, reduced by the caller), so the update does not depend on how the batch is split
// into micro-batches and ranks. What the runner does: zero the gradients, backward each
// objective / normaliser (reduction overlapped with the last backward), the global gradient norm,
// one collective with the loss sums, the caller's extra sums and the stop vote, the non-finite
// guard, clipping, the update-size guard (DistributedAdamW::update_ratio) and the AdamW update.
//
// Skipped steps (non-finite loss or gradient norm, or an update larger than max_update_ratio x
// the weights) leave weights and optimizer state untouched; the streak is counted and the loop
// decides when a streak is too long (train.max_consecutive_nonfinite).
//
// **Example** (the GRPO step reads the same):
//
//     StepRunner runner(*ctx, *opt, {cfg.optimizer.max_grad_norm, cfg.train.max_update_ratio});
//     runner.begin(micro.size(), ctx->all_reduce_sum(local_tokens));
//     for (auto& mb : micro) {
//       auto [objective, loss_sum] = loss_of(mb);      // differentiable sum, detached sum for logging
//       runner.backward(objective, loss_sum);
//     }
//     StepResult r = runner.finish(lr, stop_requested(), {input_tokens});
//     if (r.stop) ...;   // any rank asked to stop
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace prism::train {

class RunContext;
class DistributedAdamW;

struct StepOptions {
  double max_grad_norm = 1.0;     ///< global-norm clipping (0: off)
  double max_update_ratio = 0.0;  ///< skip when ||delta w|| / ||w|| would exceed this (0: off)
};

struct StepResult {
  double loss = 0;          ///< sum of the micro-batches' loss sums over ranks / normaliser
  double grad_norm = 0;     ///< global, before clipping
  double update_ratio = 0;  ///< ||delta w|| / ||w|| of the update (NaN when not computed)
  bool applied = false;     ///< the update was applied
  std::string skip_reason;  ///< why not: "non-finite loss", "non-finite gradient norm", "update too large ..."
  int64_t consecutive_skipped = 0;  ///< streak including this step (0 when applied)
  bool stop = false;        ///< some rank voted to stop
  std::vector<double> sums; ///< the caller's extra values, summed over ranks
};

class StepRunner {
 public:
  StepRunner(RunContext& ctx, DistributedAdamW& opt, StepOptions options);

  /// Starts a step of `micro_batches` backward() calls; `normaliser` is the same on every rank.
  void begin(int64_t micro_batches, double normaliser);
  /// Backward of one micro-batch: `objective` is its differentiable sum (divided by the normaliser
  /// here); `loss_sum` its detached loss sum for the logged loss.
  void backward(const at::Tensor& objective, double loss_sum);
  /// Ends the step (collective): guards, clipping and the update at `lr`. `stop_vote`: this rank
  /// wants to stop; `sums`: values summed over ranks in the same collective.
  StepResult finish(double lr, bool stop_vote = false, const std::vector<double>& sums = {});

  /// The skip streak carried across steps (restored from a checkpoint on resume).
  int64_t consecutive_skipped() const { return consecutive_skipped_; }
  void set_consecutive_skipped(int64_t n) { consecutive_skipped_ = n; }

 private:
  RunContext& ctx_;
  DistributedAdamW& opt_;
  StepOptions options_;
  int64_t micro_batches_ = 0, done_ = 0;
  double normaliser_ = 1;
  double loss_local_ = 0;
  int64_t consecutive_skipped_ = 0;
};

}  // namespace prism::train
