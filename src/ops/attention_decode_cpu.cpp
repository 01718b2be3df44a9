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

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "prism/core/error.h"
#include "prism/ops/attention.h"

namespace prism::ops {

#if defined(__x86_64__)
namespace {

// The two inner loops, in AVX2 + FMA (the library is compiled for baseline x86-64, and at -O2 GCC
// does not vectorise these short reductions); the CPU is checked at run time.
#define PRISM_AVX2 __attribute__((target("avx2,fma")))

PRISM_AVX2 inline float dot(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  if (i + 8 <= n) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    i += 8;
  }
  const __m256 s = _mm256_add_ps(s0, s1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  float r = _mm_cvtss_f32(h);
  for (; i < n; ++i) r += a[i] * b[i];
  return r;
}

PRISM_AVX2 inline void axpy(float w, const float* x, float* y, int64_t n) {
  const __m256 wv = _mm256_set1_ps(w);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += w * x[i];
}

// Pass 1 for the (row, kv head) pairs [i0, i1): scores [n_rep, Lk] each, lowest where invisible.
PRISM_AVX2 void scores_pairs(int64_t i0, int64_t i1, const float* qp, const float* kp, const bool* mp, float* sp,
                              int64_t Hq, int64_t Hkv, int64_t n_rep, int64_t Lk, int64_t d, int64_t ks0, int64_t ks1,
                              int64_t ks2, int64_t lo, int64_t hi, float scale) {
  constexpr float kLowest = std::numeric_limits<float>::lowest();
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t b = i / Hkv, g = i % Hkv;
    const float* kb = kp + b * ks0 + g * ks1;
    const float* qg = qp + (b * Hq + g * n_rep) * d;
    float* s = sp + i * n_rep * Lk;
    const bool* mb = mp ? mp + b * Lk : nullptr;
    for (int64_t t = 0; t < Lk; ++t) {
      const bool visible = t >= lo && t < hi && (!mb || mb[t]);
      for (int64_t j = 0; j < n_rep; ++j) s[j * Lk + t] = visible ? dot(qg + j * d, kb + t * ks2, d) * scale : kLowest;
    }
  }
}

// Pass 2: out [n_rep, d] += probs[j, t] v[t] for each pair (out zeroed by the caller).
PRISM_AVX2 void values_pairs(int64_t i0, int64_t i1, const float* pp, const float* vp, float* op, int64_t Hq,
                              int64_t Hkv, int64_t n_rep, int64_t Lk, int64_t d, int64_t vs0, int64_t vs1,
                              int64_t vs2) {
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t b = i / Hkv, g = i % Hkv;
    const float* vb = vp + b * vs0 + g * vs1;
    const float* pr = pp + i * n_rep * Lk;
    float* o = op + (b * Hq + g * n_rep) * d;
    for (int64_t t = 0; t < Lk; ++t)
      for (int64_t j = 0; j < n_rep; ++j) {
        const float w = pr[j * Lk + t];
        if (w != 0.0f) axpy(w, vb + t * vs2, o + j * d, d);  // 0: an invisible key (exp underflows exactly)
      }
  }
}

bool cpu_has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

}  // namespace
#endif

bool attention_decode_cpu_supported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const AttentionParams& p) {
#if defined(__x86_64__)
  if (!cpu_has_avx2_fma()) return false;
#else
  return false;  // the kernel is written for x86-64 (AVX2); other CPUs keep the ATen composite
#endif
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

  // Pass 1: scores [B, Hkv, n_rep, Lk] (query head h = kv head h / n_rep, as repeat_kv).
  auto scores = at::empty({B, Hkv, n_rep, Lk}, q.options());
  float* sp = scores.data_ptr<float>();
#if defined(__x86_64__)
  at::parallel_for(0, B * Hkv, 1, [&](int64_t i0, int64_t i1) {
    scores_pairs(i0, i1, qp, kp, mp, sp, Hq, Hkv, n_rep, Lk, d, ks0, ks1, ks2, lo, hi, scale);
  });
#endif
  const auto probs = at::softmax(scores, -1);

  // Pass 2: out[b, h] = sum_t probs[b, h, t] v[b, h / n_rep, t]. Stored [B, 1, Hq, d] so that the
  // caller's transpose(1, 2).reshape(B, 1, Hq * d) is a view.
  auto out = at::zeros({B, 1, Hq, d}, q.options());
#if defined(__x86_64__)
  const float* pp = probs.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, B * Hkv, 1, [&](int64_t i0, int64_t i1) {
    values_pairs(i0, i1, pp, vp, op, Hq, Hkv, n_rep, Lk, d, vs0, vs1, vs2);
  });
#endif
  return out.transpose(1, 2);
}

}  // namespace prism::ops
