// Attention dispatch. Order of preference:
//   1. a fused prism kernel (kernels/attention, CUDA builds; added by the kernels issue),
//   2. at::scaled_dot_product_attention when the mask is expressible without fully-masked rows
//      (no key padding): same math as the reference up to fp32 summation order,
//   3. the reference (padding masks, fp64, anything unusual).
#include <ATen/ATen.h>

#include "prism/core/error.h"
#include "prism/ops/attention.h"

namespace prism::ops {

at::Tensor repeat_kv(const at::Tensor& x, int64_t n_rep);  // attention_ref.cpp

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionParams& p) {
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
  if (!p.causal && p.window == 0 && !p.cu_seqlens.defined()) {
    return at::scaled_dot_product_attention(q, kr, vr, {}, 0.0, false, p.scale);
  }
  // Every query sees at least itself here (causal, aligned positions), so no row is empty.
  auto mask = attention_mask(q.size(0), lq, lk, p, q.device());
  return at::scaled_dot_product_attention(q, kr, vr, mask, 0.0, false, p.scale);
}

}  // namespace prism::ops
