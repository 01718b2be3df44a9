// Packing rollouts and their per-token log-probs (include/prism/rl/rollout_batch.h).
#include "prism/rl/rollout_batch.h"

#include <ATen/ATen.h>

#include "prism/core/error.h"
#include "prism/data/packing.h"
#include "prism/models/causal_lm.h"
#include "prism/ops/linear_logprobs.h"

namespace prism::rl {

std::vector<MicroBatch> pack_rollouts(const std::vector<Rollout>& rollouts, std::span<const int64_t> indices,
                                      int64_t capacity) {
  std::vector<int64_t> lengths;
  lengths.reserve(indices.size());
  for (auto i : indices) {
    const auto& r = rollouts.at(static_cast<size_t>(i));
    PRISM_CHECK(!r.prompt.empty() && !r.completion.empty(), "rollout ", i, ": empty prompt or completion");
    PRISM_CHECK(r.sampler_logprobs.size() == r.completion.size(), "rollout ", i, ": ", r.sampler_logprobs.size(),
                " sampler log-probs for ", r.completion.size(), " completion tokens");
    const auto len = static_cast<int64_t>(r.prompt.size() + r.completion.size()) - 1;
    PRISM_CHECK(len <= capacity, "rollout ", i, ": ", len, " tokens do not fit train.micro_batch_tokens = ", capacity,
                " (raise it to at least the longest prompt + rollout.max_new_tokens)");
    lengths.push_back(len);
  }
  auto rows = data::pack_best_fit_decreasing(lengths, capacity);
  std::vector<MicroBatch> out;
  out.reserve(rows.size());
  for (const auto& row : rows) {
    MicroBatch mb;
    const int64_t T = row.used;
    mb.num_seqs = static_cast<int64_t>(row.items.size());
    std::vector<int64_t> ids(T), pos(T), labels(T, -100), seq(T);
    std::vector<uint8_t> mask(T, 0);
    std::vector<float> adv(T, 0.f), slp(T, 0.f);
    int64_t t = 0;
    for (size_t s = 0; s < row.items.size(); ++s) {
      const int64_t ri = indices[static_cast<size_t>(row.items[s])];
      mb.rollouts.push_back(ri);
      const auto& r = rollouts[static_cast<size_t>(ri)];
      const auto P = static_cast<int64_t>(r.prompt.size());
      const auto C = static_cast<int64_t>(r.completion.size());
      for (int64_t j = 0; j < P + C - 1; ++j, ++t) {
        ids[t] = j < P ? r.prompt[j] : r.completion[j - P];
        pos[t] = j;
        seq[t] = static_cast<int64_t>(s);
        if (j + 1 >= P) {  // predicts completion token j + 1 - P
          const int64_t c = j + 1 - P;
          labels[t] = r.completion[c];
          mask[t] = r.counted ? 1 : 0;
          adv[t] = static_cast<float>(r.advantage);
          slp[t] = r.sampler_logprobs[c];
        }
      }
    }
    PRISM_CHECK(t == T, "pack_rollouts: row holds ", t, " tokens, the packer said ", T);
    auto i64 = at::TensorOptions().dtype(at::kLong);
    mb.input_ids = at::tensor(ids, i64).reshape({1, T});
    mb.position_ids = at::tensor(pos, i64).reshape({1, T});
    mb.cu_seqlens = at::tensor(row.cu_seqlens, i64);
    mb.labels = at::tensor(labels, i64);
    mb.seq_ids = at::tensor(seq, i64);
    mb.mask = at::tensor(std::vector<int64_t>(mask.begin(), mask.end()), i64).to(at::kBool);
    mb.advantages = at::tensor(adv, at::kFloat);
    mb.sampler_logp = at::tensor(slp, at::kFloat);
    out.push_back(std::move(mb));
  }
  return out;
}

TokenLogprobs token_logprobs(const models::CausalLM& model, const MicroBatch& mb, const c10::Device& device,
                             ops::Impl impl, bool activation_checkpointing) {
  models::ForwardOptions fo;
  fo.position_ids = mb.position_ids.to(device);
  fo.cu_seqlens = mb.cu_seqlens.to(device);
  fo.skip_lm_head = true;
  fo.impl = impl;
  fo.activation_checkpointing = activation_checkpointing && at::GradMode::is_enabled();
  auto out = model.forward(mb.input_ids.to(device), fo);
  ops::LinearLogprobsOptions lo;
  lo.logits_scaling = model.config().logits_scaling;
  // On a CPU the head's GEMMs are the cost and memory is plentiful: keep up to 2 GiB of logits
  // (32 rollouts of 128 tokens x a 49K vocab is 0.8 GB) so backward does not recompute them.
  if (device.is_cpu()) lo.keep_logits_bytes = int64_t{2} << 30;
  auto hidden = out.last_hidden.reshape({-1, out.last_hidden.size(-1)});
  // Only the rows that predict a completion token go through the [rows, vocab] head: prompt rows
  // would cost the same three GEMMs each and contribute exact zeros.
  const auto labels = mb.labels.to(device);
  const auto rows = labels.ne(-100).nonzero().squeeze(1);
  const int64_t T = labels.size(0);
  if (rows.size(0) == T) {
    auto r = ops::linear_logprobs(hidden, model.lm_head_weight(), labels, lo, impl);
    return {r.logprobs.to(at::kFloat), r.entropy.to(at::kFloat)};
  }
  auto r = ops::linear_logprobs(hidden.index_select(0, rows), model.lm_head_weight(), labels.index_select(0, rows), lo,
                                impl);
  auto scatter = [&](const at::Tensor& x) {
    return at::zeros({T}, x.options().dtype(at::kFloat)).index_copy(0, rows, x.to(at::kFloat));
  };
  return {scatter(r.logprobs), scatter(r.entropy)};
}

}  // namespace prism::rl
