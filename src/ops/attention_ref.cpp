// Plain ATen attention: the reference every attention path is held to. Mirrors transformers'
// `eager_attention_forward` step by step (repeat_kv, scores in the input dtype times the scale,
// masked, softmax in fp32, cast back, times V) so bf16 rounding matches HF eager too.
#include <ATen/ATen.h>

#include <limits>
#include <vector>

#include "prism/core/error.h"
#include "prism/ops/attention.h"

namespace prism::ops {

at::Tensor attention_mask(int64_t batch, int64_t lq, int64_t lk, const AttentionParams& p, const at::Device& device) {
  auto opts = at::TensorOptions().dtype(at::kLong).device(device);
  auto qpos = at::arange(p.q_offset, p.q_offset + lq, opts).unsqueeze(1);  // [Lq, 1]
  auto kpos = at::arange(lk, opts).unsqueeze(0);                           // [1, Lk]
  auto mask = at::ones({lq, lk}, opts.dtype(at::kBool));
  if (p.causal) mask = mask & (kpos <= qpos);
  if (p.window > 0) mask = mask & ((qpos - kpos) < p.window);
  if (p.cu_seqlens.defined()) {
    PRISM_CHECK(lq == lk && p.q_offset == 0, "attention: cu_seqlens (packed documents) needs Lq == Lk and no cache, got Lq=",
                lq, " Lk=", lk, " q_offset=", p.q_offset);
    auto cu = p.cu_seqlens.to(device, at::kLong);
    PRISM_CHECK(cu.dim() == 1 && cu.size(0) >= 2, "attention: cu_seqlens must be [num_docs + 1]");
    PRISM_CHECK(cu[0].item<int64_t>() == 0 && cu[-1].item<int64_t>() == lk, "attention: cu_seqlens must start at 0 and end at L=",
                lk, ", got ", cu[0].item<int64_t>(), "..", cu[-1].item<int64_t>());
    auto pos = at::arange(lk, opts);
    // doc[t] = number of interior boundaries <= t
    auto inner = cu.slice(0, 1, cu.size(0) - 1);
    auto doc = (pos.unsqueeze(1) >= inner.unsqueeze(0)).sum(1);  // [L]
    mask = mask & (doc.unsqueeze(1) == doc.unsqueeze(0));
  }
  auto out = mask.view({1, 1, lq, lk});
  if (p.key_mask.defined()) {
    PRISM_CHECK(p.key_mask.dim() == 2 && p.key_mask.size(0) == batch && p.key_mask.size(1) == lk,
                "attention: key_mask must be [B, Lk] = [", batch, ", ", lk, "], got ", p.key_mask.sizes());
    out = out & p.key_mask.to(device).ne(0).view({batch, 1, 1, lk});
  }
  return out;
}

namespace {
// torch.finfo(dtype).min
double lowest(c10::ScalarType t) {
  switch (t) {
    case at::kDouble: return std::numeric_limits<double>::lowest();
    case at::kHalf: return -65504.0;
    case at::kBFloat16: return -3.3895313892515355e+38;
    default: return std::numeric_limits<float>::lowest();
  }
}
}  // namespace

// cu_seqlens read to the host and checked: [num_docs + 1], 0 .. L, non-decreasing.
std::vector<int64_t> packed_boundaries(const at::Tensor& cu_seqlens, int64_t L) {
  PRISM_CHECK(cu_seqlens.dim() == 1 && cu_seqlens.size(0) >= 2, "attention: cu_seqlens must be [num_docs + 1], got ",
              cu_seqlens.sizes());
  const auto cu = cu_seqlens.to(at::kCPU, at::kLong).contiguous();
  std::vector<int64_t> out(cu.data_ptr<int64_t>(), cu.data_ptr<int64_t>() + cu.numel());
  PRISM_CHECK(out.front() == 0 && out.back() == L, "attention: cu_seqlens must start at 0 and end at L=", L, ", got ",
              out.front(), "..", out.back());
  for (size_t i = 1; i < out.size(); ++i)
    PRISM_CHECK(out[i] >= out[i - 1], "attention: cu_seqlens must be non-decreasing, got ", out[i - 1], " then ", out[i],
                " at index ", i);
  return out;
}

at::Tensor repeat_kv(const at::Tensor& x, int64_t n_rep) {
  if (n_rep == 1) return x;
  auto b = x.size(0), h = x.size(1), l = x.size(2), d = x.size(3);
  return x.unsqueeze(2).expand({b, h, n_rep, l, d}).reshape({b, h * n_rep, l, d});
}

at::Tensor attention_ref(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionParams& p) {
  PRISM_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention: q, k, v must be [B, H, L, d], got q ", q.sizes(),
              " k ", k.sizes(), " v ", v.sizes());
  PRISM_CHECK(k.sizes() == v.sizes(), "attention: k and v shapes differ: ", k.sizes(), " vs ", v.sizes());
  PRISM_CHECK(q.size(0) == k.size(0) && q.size(3) == k.size(3), "attention: q ", q.sizes(), " incompatible with k ", k.sizes());
  PRISM_CHECK(q.size(1) % k.size(1) == 0, "attention: query heads (", q.size(1), ") must be a multiple of kv heads (", k.size(1), ")");
  const int64_t n_rep = q.size(1) / k.size(1);
  auto kr = repeat_kv(k, n_rep);
  auto vr = repeat_kv(v, n_rep);
  auto scores = at::matmul(q, kr.transpose(2, 3)) * p.scale;  // [B, Hq, Lq, Lk] in q's dtype
  auto mask = attention_mask(q.size(0), q.size(2), k.size(2), p, q.device());
  // HF adds finfo.min rather than -inf: a fully masked (padding) row becomes uniform, not NaN.
  scores = scores.masked_fill(mask.logical_not(), lowest(q.scalar_type()));
  auto sm_dtype = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto probs = at::softmax(scores, -1, sm_dtype).to(q.scalar_type());
  return at::matmul(probs, vr);
}

// The reference's math for a few query positions with a key mask (ragged decode): the Hq/Hkv query
// heads that share a KV head are folded into the query axis, so the cache is read in place rather
// than copied Hq/Hkv times by repeat_kv on every decode step. Same operations in the same dtypes.
at::Tensor attention_ref_grouped(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionParams& p) {
  const int64_t B = q.size(0), Hq = q.size(1), Lq = q.size(2), d = q.size(3), Hkv = k.size(1), Lk = k.size(2);
  const int64_t n_rep = Hq / Hkv;
  auto qg = q.reshape({B, Hkv, n_rep * Lq, d});                        // query head h = kv head h / n_rep
  auto scores = at::matmul(qg, k.transpose(2, 3)) * p.scale;           // [B, Hkv, n_rep*Lq, Lk]
  // The last query of a causal call without key mask or binding window sees every key: no mask.
  const bool all_visible = !p.key_mask.defined() && Lq == 1 && (!p.causal || p.q_offset >= Lk - 1) &&
                           (p.window == 0 || p.window > p.q_offset);
  if (!all_visible) {
    auto mask = attention_mask(B, Lq, Lk, p, q.device()).unsqueeze(1);  // [B or 1, 1, 1, Lq, Lk]
    scores = scores.view({B, Hkv, n_rep, Lq, Lk}).masked_fill(mask.logical_not(), lowest(q.scalar_type()));
  }
  auto probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type()).view({B, Hkv, n_rep * Lq, Lk});
  return at::matmul(probs, v).view({B, Hq, Lq, d});
}

}  // namespace prism::ops
