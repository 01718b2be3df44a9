// Decode attention: Lq is 1 (or a few speculative tokens) and Lk is a long KV cache, so the work is
// reading the cache once, as fast as memory allows ("flash-decoding"):
//   - one block per (KV split, kv head, batch) takes all Hq/Hkv query heads of the GQA group and
//     all Lq tokens as rows (<= kFlashDecodeMaxRows), so every cached K/V byte is read once;
//   - the cache is split along Lk over enough blocks to fill the GPU (num_splits, chosen by the
//     caller); each split writes its normalised partial output and log2-sum-exp, and
//     FlashDecodeCombine merges them (a single split writes the output directly);
//   - 64-key tiles are double-buffered with cp.async; scores, softmax and P V run on CUDA cores in
//     fp32 (the rows are few, so tensor cores would idle on padding).
// Supports the padding key mask of batched generation; a row with no visible key outputs 0.
#pragma once

#include "../common/kernel_abi.h"

#include "flash_common.cuh"

namespace prism::kernels::attn {
PRISM_KERNEL_ABI_BEGIN

template <class T, int D_>
struct FlashDecodeKernel {
  static constexpr int D = D_;
  static constexpr int kThreads = 128;
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kTile = kFlashDecodeTileKeys;
  static constexpr int kMaxRows = kFlashDecodeMaxRows;
  static constexpr int kPitch = D + 8;
  static constexpr int kSPitch = kTile + 4;  // fp32 score rows
  static_assert(kThreads % D == 0 || D % kThreads == 0, "head dim vs block size");
  static_assert(kTile == 64 && kThreads % kTile == 0, "softmax reads 2 keys per lane");
  static constexpr int kRowGroups = kThreads / D;                // P V: thread = (column, row group)
  static constexpr int kRowsPV = kMaxRows / kRowGroups;
  static constexpr int kKeyGroups = kThreads / kTile;            // scores: thread = (key, row group)
  static constexpr int kRowsS = kMaxRows / kKeyGroups;
  static constexpr int kRowsSoftmax = kMaxRows / kWarps;         // softmax: warp = rows w, w + kWarps, ...
  static_assert(D <= kThreads, "decode kernel handles head dims up to the block size");

  static constexpr size_t kQBytes = static_cast<size_t>(kMaxRows) * D * 4;
  static constexpr size_t kKVBytes = static_cast<size_t>(4) * kTile * kPitch * 2;  // K, V double-buffered
  static constexpr size_t kSBytes = static_cast<size_t>(kMaxRows) * kSPitch * 4;
  static constexpr size_t kSmemBytes = kQBytes + kKVBytes + kSBytes + static_cast<size_t>(5) * kMaxRows * 4;
  static_assert(kQBytes % 16 == 0 && kKVBytes % 16 == 0 && kSBytes % 16 == 0, "16-byte aligned sections");

  static size_t smem_bytes(const FlashDecodeParams&) { return kSmemBytes; }

  PF_INLINE static void run(const FlashDecodeParams& p, char* smem, const BlockCtx& c) {
    const int split = c.bx, hk = c.by, b = c.bz;
    const int tid = c.tid, warp = tid / 32, lane = tid % 32;
    const int group = p.heads_q / p.heads_kv, Lq = p.len_q, Lk = p.len_k;
    const int R = group * Lq;  // rows: r = (head in group) * Lq + query token

    float* sQ = reinterpret_cast<float*>(smem);                     // [kMaxRows][D], pre-scaled
    uint16_t* sK = reinterpret_cast<uint16_t*>(smem + kQBytes);     // [2][kTile][kPitch]
    uint16_t* sV = sK + 2 * kTile * kPitch;                         // [2][kTile][kPitch]
    float* sS = reinterpret_cast<float*>(smem + kQBytes + kKVBytes);  // [kMaxRows][kSPitch]
    float* sAlpha = sS + kMaxRows * kSPitch;
    float* sM = sAlpha + kMaxRows;
    float* sL = sM + kMaxRows;
    int* sLo = reinterpret_cast<int*>(sL + kMaxRows);
    int* sHi = sLo + kMaxRows;

    const float scale_log2 = p.scale * kLog2e;
    for (int x = tid; x < R * D; x += kThreads) {
      const int r = x / D, d = x % D;
      const int hq = hk * group + r / Lq, qi = r % Lq;
      const uint16_t* q = static_cast<const uint16_t*>(p.q) + b * p.q_stride_b + hq * p.q_stride_h + qi * p.q_stride_l;
      sQ[r * D + d] = T::to_float(ld_global(q + d)) * scale_log2;
    }
    for (int r = tid; r < kMaxRows; r += kThreads) {
      const RowRange rr = r < R ? row_range(p.mask, r % Lq, Lq, Lk) : RowRange{1, 0};
      sLo[r] = rr.lo;
      sHi[r] = rr.hi;
    }

    // Keys of this split that some row sees (rows of the same token share an interval, and the
    // intervals are monotone in the token).
    const int kb = split * p.keys_per_split;
    const int ke = (kb + p.keys_per_split < Lk ? kb + p.keys_per_split : Lk);  // exclusive
    const RowRange first = row_range(p.mask, 0, Lq, Lk), last = row_range(p.mask, Lq - 1, Lq, Lk);
    int lo = kb, hi = ke - 1;
    if (first.lo <= first.hi && first.lo > lo) lo = first.lo;
    const int last_hi = last.lo <= last.hi ? last.hi : -1;
    if (last_hi < hi) hi = last_hi;
    const int t_begin = lo / kTile;
    const int t_end = hi >= lo ? hi / kTile + 1 : t_begin;

    const uint16_t* k = static_cast<const uint16_t*>(p.k) + b * p.k_stride_b + hk * p.k_stride_h;
    const uint16_t* v = static_cast<const uint16_t*>(p.v) + b * p.v_stride_b + hk * p.v_stride_h;
    const uint8_t* key_mask = p.key_mask ? p.key_mask + b * p.key_mask_stride : nullptr;

    if (t_begin < t_end) {
      load_tile_async<kTile, D, kThreads>(sK, k, p.k_stride_l, t_begin * kTile, ke, tid);
      load_tile_async<kTile, D, kThreads>(sV, v, p.v_stride_l, t_begin * kTile, ke, tid);
    }
    cp_async_commit();

    float m_row[kRowsSoftmax], l_row[kRowsSoftmax];
PF_UNROLL
    for (int i = 0; i < kRowsSoftmax; ++i) {
      m_row[i] = -pf_inf();
      l_row[i] = 0.f;
    }
    const int col = tid % D, rg = tid / D;         // P V role
    const int key_j = tid % kTile, kg = tid / kTile;  // score role
    float acc_o[kRowsPV];
PF_UNROLL
    for (int i = 0; i < kRowsPV; ++i) acc_o[i] = 0.f;

    for (int it = t_begin; it < t_end; ++it) {
      const int buf = (it - t_begin) & 1;
      if (it + 1 < t_end) {
        load_tile_async<kTile, D, kThreads>(sK + (buf ^ 1) * kTile * kPitch, k, p.k_stride_l, (it + 1) * kTile, ke, tid);
        load_tile_async<kTile, D, kThreads>(sV + (buf ^ 1) * kTile * kPitch, v, p.v_stride_l, (it + 1) * kTile, ke, tid);
      }
      cp_async_commit();
      cp_async_wait<1>();
      sync_block();
      const uint16_t* tK = sK + buf * kTile * kPitch;
      const uint16_t* tV = sV + buf * kTile * kPitch;
      const int n0 = it * kTile;

      // Scores (log2 domain) of key n0 + key_j for rows kg, kg + kKeyGroups, ...
      float acc[kRowsS];
PF_UNROLL
      for (int i = 0; i < kRowsS; ++i) acc[i] = 0.f;
PF_UNROLL4
      for (int d8 = 0; d8 < D / 8; ++d8) {
        uint32_t kv[4];
        ld_shared_16(kv, tK + key_j * kPitch + d8 * 8);
        float kf[8];
PF_UNROLL
        for (int e = 0; e < 4; ++e) unpack2<T>(kv[e], kf[2 * e], kf[2 * e + 1]);
PF_UNROLL
        for (int i = 0; i < kRowsS; ++i) {
          const int r = kg + kKeyGroups * i;
          if (r < R) {
            const float* qr = sQ + r * D + d8 * 8;
PF_UNROLL
            for (int e = 0; e < 8; ++e) acc[i] += qr[e] * kf[e];
          }
        }
      }
      const int key = n0 + key_j;
      const bool key_ok = key < ke && (key_mask == nullptr || ld_global(key_mask + key) != 0);
PF_UNROLL
      for (int i = 0; i < kRowsS; ++i) {
        const int r = kg + kKeyGroups * i;
        if (r < R) sS[r * kSPitch + key_j] = key_ok && sLo[r] <= key && key <= sHi[r] ? acc[i] : -pf_inf();
      }
      sync_block();

      // Online softmax, one warp per row.
PF_UNROLL
      for (int i = 0; i < kRowsSoftmax; ++i) {
        const int r = warp + kWarps * i;
        if (r < R) {  // warp-uniform
          float* srow = sS + r * kSPitch;
          const float s0 = srow[lane], s1 = srow[lane + 32];
          const float tmax = warp_max(pf_max(s0, s1));
          const float m_new = pf_max(m_row[i], tmax);
          const float base = m_new == -pf_inf() ? 0.f : m_new;
          const float p0 = fast_exp2(s0 - base), p1 = fast_exp2(s1 - base);
          srow[lane] = p0;
          srow[lane + 32] = p1;
          const float sum = warp_sum(p0 + p1);
          const float alpha = fast_exp2(m_row[i] - base);
          l_row[i] = l_row[i] * alpha + sum;
          m_row[i] = m_new;
          if (lane == 0) sAlpha[r] = alpha;
        }
      }
      sync_block();

      // O = alpha O + P V for this thread's column.
PF_UNROLL
      for (int i = 0; i < kRowsPV; ++i) {
        const int r = rg + kRowGroups * i;
        if (r < R) acc_o[i] *= sAlpha[r];
      }
PF_UNROLL4
      for (int jj = 0; jj < kTile; ++jj) {
        const float vj = T::to_float(tV[jj * kPitch + col]);
PF_UNROLL
        for (int i = 0; i < kRowsPV; ++i) {
          const int r = rg + kRowGroups * i;
          if (r < R) acc_o[i] += sS[r * kSPitch + jj] * vj;
        }
      }
      sync_block();
    }
    cp_async_wait<0>();

PF_UNROLL
    for (int i = 0; i < kRowsSoftmax; ++i) {
      const int r = warp + kWarps * i;
      if (r < R && lane == 0) {
        sM[r] = m_row[i];
        sL[r] = l_row[i];
      }
    }
    sync_block();
PF_UNROLL
    for (int i = 0; i < kRowsPV; ++i) {
      const int r = rg + kRowGroups * i;
      if (r >= R) continue;
      const int hq = hk * group + r / Lq, qi = r % Lq;
      const float l = sL[r];
      const float val = l > 0.f ? acc_o[i] / l : 0.f;
      if (p.num_splits == 1) {
        uint16_t* o = static_cast<uint16_t*>(p.out) + b * p.o_stride_b + hq * p.o_stride_h + qi * p.o_stride_l;
        st_global(o + col, T::from_float(val));
      } else {
        const int64_t idx = ((static_cast<int64_t>(split) * p.batch + b) * p.heads_q + hq) * Lq + qi;
        st_global(p.o_partial + idx * D + col, val);
        if (col == 0) st_global(p.lse_partial + idx, l > 0.f ? sM[r] + pf_log2(l) : -pf_inf());
      }
    }
  }
};

/// Merges the splits: out = sum_s 2^(lse_s - lse) o_s with lse = log2 sum_s 2^lse_s.
template <class T, int D_>
struct FlashDecodeCombine {
  static constexpr int D = D_;
  static constexpr int kThreads = D;
  static size_t smem_bytes(const FlashDecodeParams&) { return 0; }

  PF_INLINE static void run(const FlashDecodeParams& p, char*, const BlockCtx& c) {
    const int64_t idx = c.bx;  // (b * Hq + hq) * Lq + qi
    const int qi = static_cast<int>(idx % p.len_q);
    const int hq = static_cast<int>((idx / p.len_q) % p.heads_q);
    const int b = static_cast<int>(idx / (static_cast<int64_t>(p.len_q) * p.heads_q));
    const int64_t rows = static_cast<int64_t>(p.batch) * p.heads_q * p.len_q;
    float lmax = -pf_inf();
    for (int s = 0; s < p.num_splits; ++s) lmax = pf_max(lmax, ld_global(p.lse_partial + s * rows + idx));
    float val = 0.f;
    if (lmax != -pf_inf()) {
      float wsum = 0.f, acc = 0.f;
      for (int s = 0; s < p.num_splits; ++s) {
        const float w = fast_exp2(ld_global(p.lse_partial + s * rows + idx) - lmax);
        wsum += w;
        acc += w * ld_global(p.o_partial + (s * rows + idx) * D + c.tid);
      }
      val = acc / wsum;
    }
    uint16_t* o = static_cast<uint16_t*>(p.out) + b * p.o_stride_b + hq * p.o_stride_h + qi * p.o_stride_l;
    st_global(o + c.tid, T::from_float(val));
  }
};

PRISM_KERNEL_ABI_END
}  // namespace prism::kernels::attn
