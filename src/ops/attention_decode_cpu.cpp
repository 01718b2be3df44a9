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
#include <vector>

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

// Scores of NJ query heads (q + j * d) against key t for t in [0, Lk), d % 8 == 0: each key row is
// loaded once for all NJ heads (the heads of a group share their keys).
template <int NJ>
PRISM_AVX2 inline void scores_block(const float* q, const float* kb, int64_t ks2, const bool* visible, int64_t Lk,
                                    int64_t d, float scale, float* s) {
  constexpr float kLowest = std::numeric_limits<float>::lowest();
  for (int64_t t = 0; t < Lk; ++t) {
    if (!visible[t]) {
      for (int j = 0; j < NJ; ++j) s[j * Lk + t] = kLowest;
      continue;
    }
    const float* kt = kb + t * ks2;
    __m256 acc[NJ];
    for (int j = 0; j < NJ; ++j) acc[j] = _mm256_setzero_ps();
    for (int64_t c = 0; c < d; c += 8) {
      const __m256 kv = _mm256_loadu_ps(kt + c);
      for (int j = 0; j < NJ; ++j) acc[j] = _mm256_fmadd_ps(kv, _mm256_loadu_ps(q + j * d + c), acc[j]);
    }
    for (int j = 0; j < NJ; ++j) {
      __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc[j]), _mm256_extractf128_ps(acc[j], 1));
      h = _mm_add_ps(h, _mm_movehl_ps(h, h));
      h = _mm_add_ss(h, _mm_movehdup_ps(h));
      s[j * Lk + t] = _mm_cvtss_f32(h) * scale;
    }
  }
}

// out[j] (d floats, d % 16 == 0) = sum_t p[j * Lk + t] v[t] for NJ heads: 16 output columns of
// every head stay in registers while the value rows stream by.
template <int NJ>
PRISM_AVX2 inline void values_block(const float* p, const float* vb, int64_t vs2, int64_t Lk, int64_t d, float* out) {
  for (int64_t c = 0; c < d; c += 16) {
    __m256 acc[NJ][2];
    for (int j = 0; j < NJ; ++j) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
    for (int64_t t = 0; t < Lk; ++t) {
      bool any = false;  // an invisible key has probability exactly 0: skip it (its cache slot may hold anything)
      for (int j = 0; j < NJ; ++j) any = any || p[j * Lk + t] != 0.0f;
      if (!any) continue;
      const float* vt = vb + t * vs2 + c;
      const __m256 v0 = _mm256_loadu_ps(vt), v1 = _mm256_loadu_ps(vt + 8);
      for (int j = 0; j < NJ; ++j) {
        const __m256 w = _mm256_set1_ps(p[j * Lk + t]);
        acc[j][0] = _mm256_fmadd_ps(w, v0, acc[j][0]);
        acc[j][1] = _mm256_fmadd_ps(w, v1, acc[j][1]);
      }
    }
    for (int j = 0; j < NJ; ++j) {
      _mm256_storeu_ps(out + j * d + c, acc[j][0]);
      _mm256_storeu_ps(out + j * d + c + 8, acc[j][1]);
    }
  }
}

// Pass 1 for the (row, kv head) pairs [i0, i1): scores [n_rep, Lk] each, lowest where invisible.
PRISM_AVX2 void scores_pairs(int64_t i0, int64_t i1, const float* qp, const float* kp, const bool* mp, float* sp,
                              int64_t Hq, int64_t Hkv, int64_t n_rep, int64_t Lk, int64_t d, int64_t ks0, int64_t ks1,
                              int64_t ks2, int64_t lo, int64_t hi, float scale) {
  std::vector<char> vis_buf(static_cast<size_t>(Lk));
  bool* visible = reinterpret_cast<bool*>(vis_buf.data());
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t b = i / Hkv, g = i % Hkv;
    const bool* mb = mp ? mp + b * Lk : nullptr;
    for (int64_t t = 0; t < Lk; ++t) visible[t] = t >= lo && t < hi && (!mb || mb[t]);
    const float* kb = kp + b * ks0 + g * ks1;
    const float* qg = qp + (b * Hq + g * n_rep) * d;
    float* s = sp + i * n_rep * Lk;
    int64_t j = 0;
    for (; j + 4 <= n_rep; j += 4) scores_block<4>(qg + j * d, kb, ks2, visible, Lk, d, scale, s + j * Lk);
    switch (n_rep - j) {
      case 3: scores_block<3>(qg + j * d, kb, ks2, visible, Lk, d, scale, s + j * Lk); break;
      case 2: scores_block<2>(qg + j * d, kb, ks2, visible, Lk, d, scale, s + j * Lk); break;
      case 1: scores_block<1>(qg + j * d, kb, ks2, visible, Lk, d, scale, s + j * Lk); break;
      default: break;
    }
  }
}

// Pass 2: out [n_rep, d] = probs v for each pair.
PRISM_AVX2 void values_pairs(int64_t i0, int64_t i1, const float* pp, const float* vp, float* op, int64_t Hq,
                              int64_t Hkv, int64_t n_rep, int64_t Lk, int64_t d, int64_t vs0, int64_t vs1,
                              int64_t vs2) {
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t b = i / Hkv, g = i % Hkv;
    const float* vb = vp + b * vs0 + g * vs1;
    const float* pr = pp + i * n_rep * Lk;
    float* o = op + (b * Hq + g * n_rep) * d;
    int64_t j = 0;
    for (; j + 4 <= n_rep; j += 4) values_block<4>(pr + j * Lk, vb, vs2, Lk, d, o + j * d);
    switch (n_rep - j) {
      case 3: values_block<3>(pr + j * Lk, vb, vs2, Lk, d, o + j * d); break;
      case 2: values_block<2>(pr + j * Lk, vb, vs2, Lk, d, o + j * d); break;
      case 1: values_block<1>(pr + j * Lk, vb, vs2, Lk, d, o + j * d); break;
      default: break;
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
  if (q.size(3) % 16 != 0) return false;  // the register blocks are 16 columns wide
  if (p.cu_seqlens.defined()) return false;
  if (p.key_mask.defined() && (p.key_mask.dim() != 2 || p.key_mask.size(0) != q.size(0) || p.key_mask.size(1) != k.size(2)))
    return false;
  // No autograd here: the engine decodes without gradients.
  return !(at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad()));
}

at::Tensor attention_decode_cpu(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                const AttentionParams& p) {
  PRISM_CHECK(attention_decode_cpu_supported(q_in, k_in, v_in, p),
              "attention_decode_cpu: needs an x86-64 CPU with AVX2 + FMA, fp32 CPU q [B, Hq, 1, d] with d % 16 == 0, k/v [B, Hkv, Lk, d] with Hq % Hkv == 0, no "
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
  auto out = at::empty({B, 1, Hq, d}, q.options());
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
