// Decode attention on the CPU (fp32): one query per row against its cache, as the rollout engine
// calls it every step. The ATen composite (attention_ref_grouped: a batched matmul of tiny
// [Hq/Hkv, d] x [d, Lk] products, scale, mask, softmax, a second batched matmul) was 27 % of a
// 64-sample SmolLM2 generation on 2 threads (docs/PERFORMANCE.md, "Generation"). Here each
// (row, kv head) reads its keys and values once, straight from the cache rows (any row stride),
// for all the query heads that share them; the softmax between the two passes is ATen's.
// Same math as attention_ref: scores = q.k * scale, an invisible key gets float's lowest (so a
// row with no visible key averages every value, as transformers), fp32 softmax.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <limits>

#include "cpu_dot.h"
#include "prism/core/error.h"
#include "prism/ops/attention.h"

namespace prism::ops {

bool attention_decode_cpu_supported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const AttentionParams& p) {
  const bool tensors = q.defined() && k.defined() && v.defined() && q.device().is_cpu() && k.device().is_cpu() &&
                       v.device().is_cpu() && q.scalar_type() == at::kFloat && k.scalar_type() == at::kFloat &&
                       v.scalar_type() == at::kFloat;
  if (!tensors || q.dim() != 4 || k.dim() != 4 || k.sizes() != v.sizes() || q.size(2) != 1) return false;
  if (k.size(1) == 0 || q.size(1) % k.size(1) != 0 || q.size(0) != k.size(0) || q.size(3) != k.size(3)) return false;
  if (p.cu_seqlens.defined()) return false;
  if (p.key_mask.defined() && (p.key_mask.dim() != 2 || p.key_mask.size(0) != q.size(0) || p.key_mask.size(1) != k.size(2)))
    return false;
  // No autograd here: the engine decodes without gradients.
  return !(at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad()));
}

at::Tensor attention_decode_cpu(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                const AttentionParams& p) {
  PRISM_CHECK(attention_decode_cpu_supported(q_in, k_in, v_in, p),
              "attention_decode_cpu: needs fp32 CPU q [B, Hq, 1, d], k/v [B, Hkv, Lk, d] with Hq % Hkv == 0, no "
              "cu_seqlens, a [B, Lk] key_mask if any, and no gradient; got q ",
              q_in.sizes(), " k ", k_in.sizes(), " v ", v_in.sizes());
  const int64_t B = q_in.size(0), Hq = q_in.size(1), d = q_in.size(3), Hkv = k_in.size(1), Lk = k_in.size(2);
  const int64_t n_rep = Hq / Hkv;
  // Rows of a key or value must be contiguous; the cache's row/head/position strides are kept.
  const auto q = q_in.contiguous();
  const auto k = k_in.stride(3) == 1 ? k_in : k_in.contiguous();
  const auto v = v_in.stride(3) == 1 ? v_in : v_in.contiguous();
  at::Tensor mask;  // [B, Lk] bool, contiguous
  if (p.key_mask.defined()) mask = p.key_mask.ne(0).contiguous();
  const bool* mp = mask.defined() ? mask.data_ptr<bool>() : nullptr;
  // Visible key positions for the query at q_offset (causal / sliding window): [lo, hi).
  int64_t lo = 0, hi = Lk;
  if (p.causal) hi = std::min(hi, std::max<int64_t>(p.q_offset + 1, 0));
  if (p.window > 0) lo = std::max<int64_t>(lo, p.q_offset - p.window + 1);

  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  const int64_t ks0 = k.stride(0), ks1 = k.stride(1), ks2 = k.stride(2);
  const int64_t vs0 = v.stride(0), vs1 = v.stride(1), vs2 = v.stride(2);
  const float scale = static_cast<float>(p.scale);
  constexpr float kLowest = std::numeric_limits<float>::lowest();

  // Pass 1: scores [B, Hkv, n_rep, Lk] (query head h = kv head h / n_rep, as repeat_kv).
  auto scores = at::empty({B, Hkv, n_rep, Lk}, q.options());
  float* sp = scores.data_ptr<float>();
  at::parallel_for(0, B * Hkv, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / Hkv, g = i % Hkv;
      const float* kb = kp + b * ks0 + g * ks1;
      const float* qg = qp + (b * Hq + g * n_rep) * d;
      float* s = sp + i * n_rep * Lk;
      const bool* mb = mp ? mp + b * Lk : nullptr;
      for (int64_t t = 0; t < Lk; ++t) {
        const bool visible = t >= lo && t < hi && (!mb || mb[t]);
        for (int64_t j = 0; j < n_rep; ++j) s[j * Lk + t] = visible ? cpu::dot(qg + j * d, kb + t * ks2, d) * scale : kLowest;
      }
    }
  });
  const auto probs = at::softmax(scores, -1);
  const float* pp = probs.data_ptr<float>();

  // Pass 2: out[b, h] = sum_t probs[b, h, t] v[b, h / n_rep, t]. Stored [B, 1, Hq, d] so that the
  // caller's transpose(1, 2).reshape(B, 1, Hq * d) is a view.
  auto out = at::zeros({B, 1, Hq, d}, q.options());
  float* op = out.data_ptr<float>();
  at::parallel_for(0, B * Hkv, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / Hkv, g = i % Hkv;
      const float* vb = vp + b * vs0 + g * vs1;
      const float* pr = pp + i * n_rep * Lk;
      float* o = op + (b * Hq + g * n_rep) * d;
      for (int64_t t = 0; t < Lk; ++t) {
        const float* vt = vb + t * vs2;
        for (int64_t j = 0; j < n_rep; ++j) {
          const float w = pr[j * Lk + t];
          if (w == 0.0f) continue;  // an invisible key (exp underflows to exactly 0)
          float* oj = o + j * d;
          for (int64_t e = 0; e < d; ++e) oj[e] += w * vt[e];
        }
      }
    }
  });
  return out.transpose(1, 2);
}

}  // namespace prism::ops
