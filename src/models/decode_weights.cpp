#include "prism/models/decode_weights.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "prism/models/causal_lm.h"

namespace prism::models {

DecodeWeights::DecodeWeights(const CausalLM& model) : model_(model) { refresh(); }

void DecodeWeights::refresh() {
  at::NoGradGuard ng;
  // The matrices forward multiplies through linear: every 2-D matrix parameter (a Mamba2 conv
  // weight is 3-D) and the lm_head, which is the embedding when tied.
  std::vector<const at::Tensor*> mats;
  const auto& named = model_.named_parameters();
  const auto& kinds = model_.parameter_kinds();
  for (size_t i = 0; i < named.size(); ++i)
    if ((kinds[i] == ParameterKind::kMatrix || kinds[i] == ParameterKind::kLmHead) && named[i].second.dim() == 2)
      mats.push_back(&named[i].second);
  mats.push_back(&model_.lm_head_weight());

  std::unordered_map<const void*, at::Tensor> next;
  bytes_ = 0;
  for (const at::Tensor* w : mats) {
    const void* key = w->unsafeGetTensorImpl();
    if (next.count(key)) continue;  // a tied lm_head is also listed as a parameter
    at::Tensor copy;
    if (auto it = copies_.find(key); it != copies_.end() && it->second.size(0) == w->size(1) &&
                                     it->second.size(1) == w->size(0) && it->second.scalar_type() == w->scalar_type() &&
                                     it->second.device() == w->device()) {
      copy = it->second;
    } else {
      copy = at::empty({w->size(1), w->size(0)}, w->options());
    }
    copy.copy_(w->t());
    bytes_ += copy.numel() * static_cast<int64_t>(copy.element_size());
    next.emplace(key, std::move(copy));
  }
  copies_ = std::move(next);
}

const at::Tensor* DecodeWeights::transposed(const at::Tensor& w) const {
  auto it = copies_.find(w.unsafeGetTensorImpl());
  return it == copies_.end() ? nullptr : &it->second;
}

}  // namespace prism::models
