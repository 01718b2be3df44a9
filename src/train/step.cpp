// StepRunner (include/prism/train/step.h).
#include "prism/train/step.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "prism/core/error.h"
#include "prism/train/optimizer.h"
#include "prism/train/run_context.h"

namespace prism::train {

StepRunner::StepRunner(RunContext& ctx, DistributedAdamW& opt, StepOptions options)
    : ctx_(ctx), opt_(opt), options_(options) {}

void StepRunner::begin(int64_t micro_batches, double normaliser) {
  PRISM_CHECK(micro_batches > 0, "StepRunner::begin: a step needs at least one micro-batch");
  micro_batches_ = micro_batches;
  done_ = 0;
  normaliser_ = std::max(1.0, normaliser);
  loss_local_ = 0;
  opt_.zero_grad();
}

void StepRunner::backward(const at::Tensor& objective, double loss_sum) {
  PRISM_CHECK(done_ < micro_batches_, "StepRunner::backward: more micro-batches than begin() announced (",
              micro_batches_, ")");
  opt_.set_sync(++done_ == micro_batches_);  // reduce while the last micro-batch's backward runs
  (objective / normaliser_).backward();
  opt_.end_backward();
  loss_local_ += loss_sum;
}

StepResult StepRunner::finish(double lr, bool stop_vote, const std::vector<double>& sums) {
  PRISM_CHECK(done_ == micro_batches_, "StepRunner::finish: ", done_, " of ", micro_batches_,
              " micro-batches were run");
  opt_.finish_grad_sync();
  StepResult r;
  r.grad_norm = opt_.grad_norm();
  std::vector<double> agg{loss_local_, stop_vote ? 1.0 : 0.0};
  agg.insert(agg.end(), sums.begin(), sums.end());
  agg = ctx_.all_reduce_sum(std::move(agg));
  r.loss = agg[0] / normaliser_;
  r.stop = agg[1] > 0;
  r.sums.assign(agg.begin() + 2, agg.end());
  r.update_ratio = std::numeric_limits<double>::quiet_NaN();
  if (!std::isfinite(r.loss)) {
    r.skip_reason = "non-finite loss";
  } else if (!std::isfinite(r.grad_norm)) {
    r.skip_reason = "non-finite gradient norm";
  } else {
    opt_.clip_grads(r.grad_norm, options_.max_grad_norm);
    if (options_.max_update_ratio > 0) {
      r.update_ratio = opt_.update_ratio(lr);
      // `!(a <= b)` also catches NaN.
      if (!(r.update_ratio <= options_.max_update_ratio))
        r.skip_reason = str("update too large (||delta w|| / ||w|| = ", r.update_ratio, " > train.max_update_ratio ",
                            options_.max_update_ratio, ")");
    }
  }
  r.applied = r.skip_reason.empty();
  if (r.applied) {
    opt_.step(lr);
    consecutive_skipped_ = 0;
  } else {
    ++consecutive_skipped_;
  }
  r.consecutive_skipped = consecutive_skipped_;
  micro_batches_ = done_ = 0;
  return r;
}

}  // namespace prism::train
