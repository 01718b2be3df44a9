// FlashAttention-2 style forward: one block per (BM query rows, query head, batch); each warp owns
// 16 query rows and streams the key/value tiles of its row range through shared memory
// (cp.async, double-buffered), with S = Q K^T and O += P V on tensor cores (mma.sync m16n8k16,
// fp32 accumulators) and the online softmax in fp32 registers (base-2 exponent, the running max
// and sum per row). Writes O (normalised, in the input dtype) and the logsumexp per row.
//
// Masking is one key interval per row (row_range): whole key tiles outside the block's interval
// are never loaded, a tile that is invisible to a warp's 16 rows is skipped by that warp, and only
// tiles that straddle an interval edge pay the per-element test.
//
// Fragment bookkeeping (lane = 4 * g + t): the S accumulator of key tile nt holds rows g and g + 8
// at keys 8 nt + 2t, +1; packing two adjacent S tiles gives exactly the A fragment of the P V
// product (the "C layout = A layout" identity FA2 relies on), so P never leaves registers.
#pragma once

#include "../common/kernel_abi.h"

#include "flash_common.cuh"

namespace prism::kernels::attn {
PRISM_KERNEL_ABI_BEGIN

template <class T, int D_, int BN_, int NW_, int MI_, bool QInRegs_>
struct FlashFwdKernel {
  static constexpr int D = D_;
  static constexpr int BN = BN_;  // keys per tile
  static constexpr int NW = NW_;  // warps
  static constexpr int MI = MI_;  // 16-row groups per warp: K/V fragments are reused MI times
  static constexpr int WR = 16 * MI;  // rows per warp
  static constexpr int BM = WR * NW;
  static constexpr int kThreads = 32 * NW;
  static constexpr bool kQInRegs = QInRegs_;  // Q fragments held in registers for the whole loop
  static constexpr int kPitch = D + 8;
  static constexpr int kQElems = BM * kPitch;
  static constexpr int kKVElems = BN * kPitch;
  static_assert(D % 16 == 0 && BN % 16 == 0, "tile sizes must be multiples of the mma shape");
  static constexpr size_t kSmemBytes = static_cast<size_t>(kQElems + 4 * kKVElems) * sizeof(uint16_t);

  static size_t smem_bytes(const FlashFwdParams&) { return kSmemBytes; }
  static int grid_x(const FlashFwdParams& p) { return ceil_div(p.len_q, BM); }

  PF_INLINE static void run(const FlashFwdParams& p, char* smem, const BlockCtx& c) {
    // Heaviest (causal: last) query blocks first, so the tail of the grid is short.
    const int m_block = c.gx - 1 - c.bx;
    const int h = c.by, b = c.bz;
    const int hk = h / (p.heads_q / p.heads_kv);
    const int m0 = m_block * BM;
    const int tid = c.tid, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int Lq = p.len_q, Lk = p.len_k;

    const uint16_t* q = static_cast<const uint16_t*>(p.q) + b * p.q_stride_b + h * p.q_stride_h;
    const uint16_t* k = static_cast<const uint16_t*>(p.k) + b * p.k_stride_b + hk * p.k_stride_h;
    const uint16_t* v = static_cast<const uint16_t*>(p.v) + b * p.v_stride_b + hk * p.v_stride_h;
    uint16_t* o = static_cast<uint16_t*>(p.out) + b * p.o_stride_b + h * p.o_stride_h;

    uint16_t* sQ = reinterpret_cast<uint16_t*>(smem);
    uint16_t* sK = sQ + kQElems;       // [2][BN][kPitch]
    uint16_t* sV = sK + 2 * kKVElems;  // [2][BN][kPitch]

    // Key tiles any row of the block sees (lo, hi are monotone in the row).
    const int last_row = (m0 + BM < Lq ? m0 + BM : Lq) - 1;
    const RowRange block_first = row_range(p.mask, m0, Lq, Lk);
    const RowRange block_last = row_range(p.mask, last_row, Lq, Lk);
    const int n_lo = block_first.lo <= block_first.hi ? block_first.lo : 0;
    const int n_hi = block_last.hi;
    const int t_begin = n_lo / BN;
    const int t_end = n_hi >= n_lo ? n_hi / BN + 1 : t_begin;

    // This warp's WR rows; this thread's rows are g and g + 8 of each 16-row group.
    const int wr0 = m0 + warp * WR;
    const bool warp_active = wr0 < Lq;
    const bool warp_all_rows = wr0 + WR - 1 < Lq;
    const RowRange wf = row_range(p.mask, wr0, Lq, Lk);
    const RowRange wl = row_range(p.mask, (wr0 + WR - 1 < Lq ? wr0 + WR - 1 : Lq - 1), Lq, Lk);
    // Smallest lo / largest hi over the warp's rows (empty rows report lo > hi and are ignored).
    const int w_lo_min = wf.lo <= wf.hi ? wf.lo : (wl.lo <= wl.hi ? wl.lo : Lk);
    const int w_hi_max = wl.lo <= wl.hi ? wl.hi : (wf.lo <= wf.hi ? wf.hi : -1);
    RowRange rows[MI][2];
    PF_UNROLL
    for (int mi = 0; mi < MI; ++mi) {
      rows[mi][0] = row_range(p.mask, wr0 + mi * 16 + g, Lq, Lk);
      rows[mi][1] = row_range(p.mask, wr0 + mi * 16 + g + 8, Lq, Lk);
    }

    load_tile_async<BM, D, kThreads>(sQ, q, p.q_stride_l, m0, Lq, tid);
    cp_async_commit();
    if (t_begin < t_end) {
      load_tile_async<BN, D, kThreads>(sK, k, p.k_stride_l, t_begin * BN, Lk, tid);
      load_tile_async<BN, D, kThreads>(sV, v, p.v_stride_l, t_begin * BN, Lk, tid);
    }
    cp_async_commit();

    float acc_o[MI][D / 8][4];
    float row_max[MI][2], row_sum[MI][2];  // running max of the scaled (log2) scores; sum over own columns
    PF_UNROLL
    for (int mi = 0; mi < MI; ++mi) {
      PF_UNROLL
      for (int i = 0; i < D / 8; ++i)
        PF_UNROLL
        for (int e = 0; e < 4; ++e) acc_o[mi][i][e] = 0.f;
      row_max[mi][0] = row_max[mi][1] = -pf_inf();
      row_sum[mi][0] = row_sum[mi][1] = 0.f;
    }
    uint32_t q_frag[kQInRegs ? MI : 1][kQInRegs ? D / 16 : 1][4];
    const float scale_log2 = p.scale * kLog2e;

    for (int it = t_begin; it < t_end; ++it) {
      const int buf = (it - t_begin) & 1;
      if (it + 1 < t_end) {
        load_tile_async<BN, D, kThreads>(sK + (buf ^ 1) * kKVElems, k, p.k_stride_l, (it + 1) * BN, Lk, tid);
        load_tile_async<BN, D, kThreads>(sV + (buf ^ 1) * kKVElems, v, p.v_stride_l, (it + 1) * BN, Lk, tid);
      }
      cp_async_commit();
      cp_async_wait<1>();  // Q and this tile's K, V have landed (for this thread)
      sync_block();        // ... and for every thread

      if constexpr (kQInRegs) {
        if (it == t_begin) {
          PF_UNROLL
          for (int mi = 0; mi < MI; ++mi)
            PF_UNROLL
            for (int kk = 0; kk < D / 16; ++kk)
              ldmatrix_x4(q_frag[mi][kk], sQ + (warp * WR + mi * 16 + lane % 16) * kPitch + kk * 16 + (lane / 16) * 8);
        }
      }

      const int n0 = it * BN;
      const bool skip = !warp_active || n0 > w_hi_max || n0 + BN - 1 < w_lo_min;
      if (!skip) {
        const uint16_t* tK = sK + buf * kKVElems;
        const uint16_t* tV = sV + buf * kKVElems;
        const bool full = warp_all_rows && wf.lo <= wf.hi && wl.lo <= wl.hi && wl.lo <= n0 && n0 + BN - 1 <= wf.hi;

        // S = Q K^T: [WR x BN] per warp; each K fragment feeds MI mma rows.
        float s[MI][BN / 8][4];
        PF_UNROLL
        for (int mi = 0; mi < MI; ++mi)
          PF_UNROLL
          for (int i = 0; i < BN / 8; ++i)
            PF_UNROLL
            for (int e = 0; e < 4; ++e) s[mi][i][e] = 0.f;
        PF_UNROLL
        for (int kk = 0; kk < D / 16; ++kk) {
          uint32_t a[MI][4];
          PF_UNROLL
          for (int mi = 0; mi < MI; ++mi) {
            if constexpr (kQInRegs) {
              PF_UNROLL
              for (int e = 0; e < 4; ++e) a[mi][e] = q_frag[mi][kk][e];
            } else {
              ldmatrix_x4(a[mi], sQ + (warp * WR + mi * 16 + lane % 16) * kPitch + kk * 16 + (lane / 16) * 8);
            }
          }
          PF_UNROLL
          for (int np = 0; np < BN / 16; ++np) {
            uint32_t bk[4];
            ldmatrix_x4(bk, tK + (np * 16 + lane % 8 + (lane / 16) * 8) * kPitch + kk * 16 + ((lane / 8) % 2) * 8);
            PF_UNROLL
            for (int mi = 0; mi < MI; ++mi) {
              mma<T>(s[mi][2 * np], a[mi], bk[0], bk[1]);
              mma<T>(s[mi][2 * np + 1], a[mi], bk[2], bk[3]);
            }
          }
        }

        PF_UNROLL
        for (int mi = 0; mi < MI; ++mi) {
          // Scale into the log2 domain and mask.
          float mx[2] = {-pf_inf(), -pf_inf()};
          PF_UNROLL
          for (int nt = 0; nt < BN / 8; ++nt) {
            PF_UNROLL
            for (int e = 0; e < 4; ++e) {
              float x = s[mi][nt][e] * scale_log2;
              if (!full) {
                const int col = n0 + nt * 8 + 2 * t + (e & 1);
                const RowRange& rr = rows[mi][e >> 1];
                if (col < rr.lo || col > rr.hi) x = -pf_inf();
              }
              s[mi][nt][e] = x;
            }
            mx[0] = pf_max(mx[0], pf_max(s[mi][nt][0], s[mi][nt][1]));
            mx[1] = pf_max(mx[1], pf_max(s[mi][nt][2], s[mi][nt][3]));
          }
          // Online softmax update. A row that has seen no visible key keeps max -inf; subtracting
          // 0 instead keeps exp2 at exactly 0 (no inf - inf).
          float base[2], sum[2] = {0.f, 0.f};
          PF_UNROLL
          for (int r = 0; r < 2; ++r) {
            const float new_max = pf_max(row_max[mi][r], quad_max(mx[r]));
            base[r] = new_max == -pf_inf() ? 0.f : new_max;
            const float alpha = fast_exp2(row_max[mi][r] - base[r]);
            row_max[mi][r] = new_max;
            row_sum[mi][r] *= alpha;
            PF_UNROLL
            for (int i = 0; i < D / 8; ++i) {
              acc_o[mi][i][2 * r] *= alpha;
              acc_o[mi][i][2 * r + 1] *= alpha;
            }
          }
          PF_UNROLL
          for (int nt = 0; nt < BN / 8; ++nt) {
            PF_UNROLL
            for (int e = 0; e < 4; ++e) {
              s[mi][nt][e] = fast_exp2(s[mi][nt][e] - base[e >> 1]);
              sum[e >> 1] += s[mi][nt][e];
            }
          }
          row_sum[mi][0] += sum[0];
          row_sum[mi][1] += sum[1];
        }

        // O += P V, P straight from the S accumulators (two key tiles = one k16 A fragment); each
        // V fragment feeds MI mma rows.
        PF_UNROLL
        for (int kc = 0; kc < BN / 16; ++kc) {
          uint32_t a[MI][4];
          PF_UNROLL
          for (int mi = 0; mi < MI; ++mi) {
            a[mi][0] = T::pack(s[mi][2 * kc][0], s[mi][2 * kc][1]);
            a[mi][1] = T::pack(s[mi][2 * kc][2], s[mi][2 * kc][3]);
            a[mi][2] = T::pack(s[mi][2 * kc + 1][0], s[mi][2 * kc + 1][1]);
            a[mi][3] = T::pack(s[mi][2 * kc + 1][2], s[mi][2 * kc + 1][3]);
          }
          PF_UNROLL
          for (int dp = 0; dp < D / 16; ++dp) {
            uint32_t bv[4];
            ldmatrix_x4_trans(bv, tV + (kc * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kPitch + dp * 16 + (lane / 16) * 8);
            PF_UNROLL
            for (int mi = 0; mi < MI; ++mi) {
              mma<T>(acc_o[mi][2 * dp], a[mi], bv[0], bv[1]);
              mma<T>(acc_o[mi][2 * dp + 1], a[mi], bv[2], bv[3]);
            }
          }
        }
      }
      sync_block();  // everyone is done with `buf` before the next iteration refills it
    }
    cp_async_wait<0>();
    sync_block();  // sQ is reused as the output staging buffer

    // Epilogue: full row sums, normalise, logsumexp, stage O in shared memory, 16-byte stores.
    uint16_t* sO = sQ;
    float* lse = p.lse + (static_cast<int64_t>(b) * p.heads_q + h) * Lq;
    PF_UNROLL
    for (int mi = 0; mi < MI; ++mi) {
      float inv[2];
      PF_UNROLL
      for (int r = 0; r < 2; ++r) {
        const float l = quad_sum(row_sum[mi][r]);
        inv[r] = l > 0.f ? 1.f / l : 0.f;
        const int row = wr0 + mi * 16 + g + 8 * r;
        if (t == 0 && row < Lq) st_global(lse + row, l > 0.f ? (row_max[mi][r] + pf_log2(l)) * kLn2 : pf_inf());
      }
      const int srow = warp * WR + mi * 16 + g;
      PF_UNROLL
      for (int nt = 0; nt < D / 8; ++nt) {
        st_shared_u32(sO + srow * kPitch + nt * 8 + 2 * t, T::pack(acc_o[mi][nt][0] * inv[0], acc_o[mi][nt][1] * inv[0]));
        st_shared_u32(sO + (srow + 8) * kPitch + nt * 8 + 2 * t,
                      T::pack(acc_o[mi][nt][2] * inv[1], acc_o[mi][nt][3] * inv[1]));
      }
    }
    sync_block();
    store_tile<BM, D, kThreads>(o, p.o_stride_l, sO, m0, Lq, tid);
  }
};

/// Tile configuration per head dim: FA2's shape (4 warps x 32 rows = 128 query rows, 64-key
/// tiles, Q re-read from shared memory when registers are short), no spills at -Xptxas -v.
template <class T, int D>
struct FlashFwdConfig;
template <class T>
struct FlashFwdConfig<T, 64> {
  using Kernel = FlashFwdKernel<T, 64, 64, 4, 2, false>;
};
template <class T>
struct FlashFwdConfig<T, 128> {
  using Kernel = FlashFwdKernel<T, 128, 32, 4, 2, false>;
};
template <class T>
struct FlashFwdConfig<T, 256> {
  using Kernel = FlashFwdKernel<T, 256, 32, 4, 1, false>;
};

PRISM_KERNEL_ABI_END
}  // namespace prism::kernels::attn
