// Attention op: one entry point for every attention in prism (dense, sliding-window, packed,
// cached decode), dispatching to a fused kernel when one is built for the device and to the
// plain ATen reference otherwise. The reference mirrors transformers' eager attention
// (scores in the input dtype, softmax in fp32, probabilities cast back), so it is also the
// oracle the kernels are held to.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace prism::ops {

struct AttentionParams {
  double scale = 1.0;          ///< softmax scale (1/sqrt(d), or Granite's attention_multiplier)
  bool causal = true;          ///< key j visible to query i only if pos(j) <= pos(i)
  int64_t window = 0;          ///< sliding window (Mistral): also pos(i) - pos(j) < window; 0 = off
  int64_t q_offset = 0;        ///< absolute position of query 0 = number of keys before it (KV cache)
  at::Tensor cu_seqlens;       ///< packed documents, int64 [num_docs + 1] over the L axis (B == 1,
                               ///< Lq == Lk): no attention across documents. Undefined = one document.
  at::Tensor key_mask;         ///< [B, Lk] (bool or integer, nonzero = real token): padding keys are
                               ///< masked. Undefined = all keys valid.
};

/// q [B, Hq, Lq, d], k/v [B, Hkv, Lk, d] with Hq % Hkv == 0 (GQA: query head h reads kv head
/// h / (Hq/Hkv)) -> [B, Hq, Lq, d] in q's dtype. A query with no visible key (padding) attends to
/// nothing but gets a finite output (never NaN), as in transformers.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionParams& p);

/// The plain ATen reference (any device, fp32/fp64/bf16/fp16, autograd).
at::Tensor attention_ref(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionParams& p);

/// The boolean visibility mask the reference uses: [B or 1, 1, Lq, Lk], true = visible.
at::Tensor attention_mask(int64_t batch, int64_t lq, int64_t lk, const AttentionParams& p, const at::Device& device);

}  // namespace prism::ops
