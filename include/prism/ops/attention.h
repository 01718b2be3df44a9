// Attention op: one entry point for every attention in prism (dense, sliding-window, packed,
// cached decode), dispatching to a fused kernel when one is built for the device and to the
// plain ATen reference otherwise. The reference mirrors transformers' eager attention
// (scores in the input dtype, softmax in fp32, probabilities cast back), so it is also the
// oracle the kernels are held to.
//
// The fused CUDA kernels (kernels/attention: FlashAttention-2 style forward/backward, split-KV
// decode) are used automatically under Impl::kAuto when they cover the call; Impl::kReference
// forces attention_ref. See docs/kernels/attention.md.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "prism/ops/dispatch.h"

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
  Impl impl = Impl::kAuto;     ///< kAuto: fused kernel when it applies, else SDPA/reference; kReference: attention_ref
};

/// q [B, Hq, Lq, d], k/v [B, Hkv, Lk, d] with Hq % Hkv == 0 (GQA: query head h reads kv head
/// h / (Hq/Hkv)) -> [B, Hq, Lq, d] in q's dtype. A query with no visible key (padding) attends to
/// nothing but gets a finite output (never NaN), as in transformers.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionParams& p);

/// The plain ATen reference (any device, fp32/fp64/bf16/fp16, autograd).
at::Tensor attention_ref(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionParams& p);

/// The boolean visibility mask the reference uses: [B or 1, 1, Lq, Lk], true = visible.
at::Tensor attention_mask(int64_t batch, int64_t lq, int64_t lk, const AttentionParams& p, const at::Device& device);

/// True when the fused CUDA kernels cover this call: prism built with CUDA kernels, CUDA tensors,
/// q/k/v bf16 or fp16 of one dtype, head dim 64/128/256 (64/128 when a gradient is needed),
/// Hq % Hkv == 0, q_offset >= 0, every query row sees at least one key, and either no key_mask or
/// the decode case (no gradient, (Hq/Hkv) * Lq <= 32, head dim 64/128). cu_seqlens needs B == 1,
/// Lq == Lk, q_offset == 0. Any strides are accepted (layouts the kernels cannot read are copied).
bool attention_fused_supported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionParams& p);

/// The fused kernels with autograd (forward saves q, k, v, out and the logsumexp; backward runs
/// the fused backward), or the decode kernel when no gradient is needed and Lq is small. Throws
/// prism::Error when !attention_fused_supported.
at::Tensor attention_fused(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionParams& p);

/// Lower-level kernel entry points (no autograd), for tests and benchmarks. Throw prism::Error
/// (naming the failed check) on unsupported inputs or in builds without CUDA kernels.
struct AttentionFusedOutput {
  at::Tensor out;  ///< [B, Hq, Lq, d], q's dtype
  at::Tensor lse;  ///< [B, Hq, Lq] fp32, natural-log softmax denominator (+inf for a row with no key)
};
AttentionFusedOutput attention_fused_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                             const AttentionParams& p);
struct AttentionFusedGrads {
  at::Tensor dq, dk, dv;
};
AttentionFusedGrads attention_fused_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                             const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                             const AttentionParams& p);
/// Split-KV decode kernel (few query tokens against a long cache; supports key_mask). A row with
/// no visible key returns 0.
at::Tensor attention_fused_decode(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const AttentionParams& p);

}  // namespace prism::ops
