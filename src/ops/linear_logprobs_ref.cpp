// Linear log-probs reference: the full logits from one matmul (divided by logits_scaling in their
// own dtype, as the model's lm_head path does), then log_softmax in fp32 (fp64 for fp64 inputs),
// gather at the label and the entropy, with ATen autograd through all of it. What tests hold the
// chunked version to.
#include <ATen/ATen.h>

#include "prism/ops/linear_logprobs.h"

namespace prism::ops {

void check_linear_logprobs_args(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                                const LinearLogprobsOptions& opts);  // linear_logprobs.cpp

LinearLogprobsResult linear_logprobs_ref(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& labels,
                                         const LinearLogprobsOptions& opts) {
  check_linear_logprobs_args(hidden, weight, labels, opts);
  const auto cdt = hidden.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto logits = at::matmul(hidden, weight.t());  // [N, V]
  if (opts.logits_scaling != 1.0) logits = logits / opts.logits_scaling;
  auto z = logits.to(cdt);
  if (opts.temperature != 1.0) z = z / opts.temperature;
  auto logp = at::log_softmax(z, 1);
  const auto l = labels.to(at::kLong);
  auto keep = l.ne(opts.ignore_index);
  auto safe = l.masked_fill(keep.logical_not(), 0).unsqueeze(1);
  LinearLogprobsResult r;
  // where, not a multiply by the mask: no gradient reaches ignored rows, whatever they hold.
  r.logprobs = at::where(keep, logp.gather(1, safe).squeeze(1), 0.0);
  r.entropy = at::where(keep, -(logp.exp() * logp).sum(1), 0.0);
  return r;
}

}  // namespace prism::ops
