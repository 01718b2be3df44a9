// Linear + cross-entropy reference: the full logits from one matmul (divided by logits_scaling in
// their own dtype, exactly as the model's lm_head path does), then the chunked ops::cross_entropy
// with ATen autograd through the matmul. What the trainer computed before linear_cross_entropy
// existed, and what tests hold the chunked version to.
#include <ATen/ATen.h>

#include "prism/ops/cross_entropy.h"
#include "prism/ops/linear_cross_entropy.h"

namespace prism::ops {

void check_linear_cross_entropy_args(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                                     const LinearCrossEntropyOptions& opts);  // linear_cross_entropy.cpp

LinearCrossEntropyResult linear_cross_entropy_ref(const at::Tensor& hidden, const at::Tensor& weight,
                                                  const at::Tensor& labels, const LinearCrossEntropyOptions& opts) {
  check_linear_cross_entropy_args(hidden, weight, labels, opts);
  auto logits = at::matmul(hidden, weight.t());  // [N, V]
  if (opts.logits_scaling != 1.0) logits = logits / opts.logits_scaling;
  CrossEntropyOptions co;
  co.ignore_index = opts.ignore_index;
  co.z_loss_weight = opts.z_loss_weight;
  auto ce = cross_entropy(logits, labels, co);
  LinearCrossEntropyResult r;
  r.loss = ce.loss_sum + ce.z_loss_sum;
  r.loss_sum = ce.loss_sum.detach();
  r.z_loss_sum = ce.z_loss_sum.detach();
  r.num_tokens = ce.num_tokens;
  return r;
}

}  // namespace prism::ops
