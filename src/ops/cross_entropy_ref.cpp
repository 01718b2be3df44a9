// Cross-entropy reference: the whole [N, V] upcast at once and ATen's own autograd. It is the
// readable definition the chunked op is held to, not something to train with at large V.
#include <ATen/ATen.h>

#include "prism/core/error.h"
#include "prism/ops/cross_entropy.h"

namespace prism::ops {

void check_cross_entropy_args(const at::Tensor& logits, const at::Tensor& labels,
                              const CrossEntropyOptions& opts);  // cross_entropy.cpp

CrossEntropyResult cross_entropy_ref(const at::Tensor& logits, const at::Tensor& labels,
                                     const CrossEntropyOptions& opts) {
  check_cross_entropy_args(logits, labels, opts);
  auto x = logits.to(logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
  auto l = labels.to(at::kLong);
  auto keep = l.ne(opts.ignore_index);
  auto lse = at::logsumexp(x, 1);
  auto picked = x.gather(1, l.masked_fill(keep.logical_not(), 0).unsqueeze(1)).squeeze(1);
  CrossEntropyResult r;
  r.loss_sum = at::where(keep, lse - picked, 0.0).sum();
  r.z_loss_sum = at::where(keep, lse.square(), 0.0).sum() * opts.z_loss_weight;
  r.num_tokens = keep.sum();
  return r;
}

}  // namespace prism::ops
