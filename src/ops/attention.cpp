// Attention dispatch. Order of preference under Impl::kAuto:
//   1. the fused prism kernels (kernels/attention via attention_cuda.cpp, CUDA builds) when they
//      cover the call (attention_fused_supported),
//   2. at::scaled_dot_product_attention when the mask is expressible without fully-masked rows
//      (no key padding): same math as the reference up to fp32 summation order,
//   3. single-query decode with a key mask (ragged decode rows) or grouped KV heads: the reference's
//      math with the query heads of a KV group folded together (no repeat_kv copy of the cache),
//   4. packed documents (cu_seqlens) without a window: one causal SDPA per document, block-diagonal
//      work instead of a dense [L, L] mask over the packed row (a row of 32 rollouts of ~130 tokens
//      is 4,096 wide: the masked call does ~30x the arithmetic of the per-document ones),
//   5. the reference (padding masks, fp64, anything unusual).
// Impl::kReference always runs the reference.
#include <ATen/ATen.h>

#include <vector>

#include "prism/core/error.h"
#include "prism/ops/attention.h"

namespace prism::ops {

at::Tensor repeat_kv(const at::Tensor& x, int64_t n_rep);  // attention_ref.cpp
std::vector<int64_t> packed_boundaries(const at::Tensor& cu_seqlens, int64_t L);  // attention_ref.cpp
at::Tensor attention_ref_grouped(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const AttentionParams& p);  // attention_ref.cpp

#ifndef PRISM_HAS_CUDA_KERNELS
// Builds without nvcc: the fused kernels do not exist (attention_cuda.cpp is not compiled).
bool attention_fused_supported(const at::Tensor&, const at::Tensor&, const at::Tensor&, const AttentionParams&) {
  return false;
}
namespace {
[[noreturn]] void no_kernels(const char* fn) {
  throw Error(prism::str(fn, ": prism was built without CUDA kernels (no nvcc at configure time, or PRISM_WITH_CUDA=OFF)"));
}
}  // namespace
at::Tensor attention_fused(const at::Tensor&, const at::Tensor&, const at::Tensor&, const AttentionParams&) {
  no_kernels("attention_fused");
}
AttentionFusedOutput attention_fused_forward(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                             const AttentionParams&) {
  no_kernels("attention_fused_forward");
}
AttentionFusedGrads attention_fused_backward(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                             const at::Tensor&, const at::Tensor&, const AttentionParams&) {
  no_kernels("attention_fused_backward");
}
at::Tensor attention_fused_decode(const at::Tensor&, const at::Tensor&, const at::Tensor&, const AttentionParams&) {
  no_kernels("attention_fused_decode");
}
#endif

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionParams& p) {
  if (p.impl == Impl::kReference) return attention_ref(q, k, v, p);
  if (attention_fused_supported(q, k, v, p)) return attention_fused(q, k, v, p);
  // One query per row against a cache (decoding; rows of different lengths carry a key mask): the
  // reference's math without repeat_kv, which would copy the whole cache Hq/Hkv times per layer.
  if (!p.cu_seqlens.defined() && q.dim() == 4 && k.dim() == 4 && q.size(2) == 1 && q.scalar_type() != at::kDouble &&
      k.sizes() == v.sizes() && k.size(1) > 0 && q.size(1) % k.size(1) == 0 && q.size(0) == k.size(0) &&
      q.size(3) == k.size(3) && (p.key_mask.defined() || q.size(1) != k.size(1)))
    return attention_ref_grouped(q, k, v, p);
  const bool sdpa_ok = !p.key_mask.defined() && q.scalar_type() != at::kDouble && q.dim() == 4 && k.dim() == 4 &&
                       q.size(1) % k.size(1) == 0 && k.sizes() == v.sizes();
  if (!sdpa_ok) return attention_ref(q, k, v, p);
  const int64_t n_rep = q.size(1) / k.size(1);
  auto kr = repeat_kv(k, n_rep);
  auto vr = repeat_kv(v, n_rep);
  const int64_t lq = q.size(2), lk = k.size(2);
  // SDPA's is_causal is the upper-left mask: only valid when queries and keys are aligned.
  const bool plain_causal = p.causal && p.window == 0 && !p.cu_seqlens.defined() && lq == lk && p.q_offset == 0;
  if (plain_causal) {
    return at::scaled_dot_product_attention(q, kr, vr, {}, 0.0, /*is_causal=*/true, p.scale);
  }
  if (p.cu_seqlens.defined() && p.window == 0 && q.size(0) == 1 && lq == lk && p.q_offset == 0) {
    const auto cu = packed_boundaries(p.cu_seqlens, lk);
    std::vector<int64_t> sizes;
    sizes.reserve(cu.size() - 1);
    for (size_t i = 0; i + 1 < cu.size(); ++i) sizes.push_back(cu[i + 1] - cu[i]);
    // split_with_sizes, not one narrow per document: the backward of a split is one cat of the
    // documents' gradients, where each narrow's backward zero-fills a full [1, H, L, d] gradient
    // and adds it (per layer, documents x 3 full-size passes: a fifth of a 32-rollout update).
    const auto qs = q.split_with_sizes(sizes, 2), ks = kr.split_with_sizes(sizes, 2), vs = vr.split_with_sizes(sizes, 2);
    std::vector<at::Tensor> parts;
    parts.reserve(sizes.size());
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (sizes[i] == 0) continue;
      parts.push_back(at::scaled_dot_product_attention(qs[i], ks[i], vs[i], {}, 0.0, p.causal, p.scale));
    }
    return parts.size() == 1 ? parts[0] : at::cat(parts, 2);
  }
  // One query at the end of the keys (decoding a uniform batch): every key is visible, no mask.
  const bool last_query = p.causal && lq == 1 && p.q_offset == lk - 1 && (p.window == 0 || p.window >= lk);
  if ((!p.causal || last_query) && (p.window == 0 || last_query) && !p.cu_seqlens.defined()) {
    return at::scaled_dot_product_attention(q, kr, vr, {}, 0.0, false, p.scale);
  }
  // Every query sees at least itself here (causal, aligned positions), so no row is empty.
  auto mask = attention_mask(q.size(0), lq, lk, p, q.device());
  return at::scaled_dot_product_attention(q, kr, vr, mask, 0.0, false, p.scale);
}

}  // namespace prism::ops
