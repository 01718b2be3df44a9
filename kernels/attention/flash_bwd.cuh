// FlashAttention-2 style backward.
//
//   1. FlashBwdPreprocess: D_i = rowsum(dO_i * O_i) in fp32 (the softmax-gradient correction).
//   2. FlashBwdKernel: one block per (BN keys, kv head, batch [, head split]). K and V of the block
//      stay in shared memory; the block walks every (query head of the GQA group, query tile) that
//      can see its keys, with Q, dO, lse, D double-buffered (cp.async). Each warp owns 16 keys:
//        S^T  = K Q^T                 (mma; recomputed, never stored)
//        P^T  = exp2(S^T * scale * log2e - lse * log2e)   masked to 0
//        dV  += P^T dO                (fp32 registers for the whole walk)
//        dP^T = V dO^T
//        dS^T = P^T * (dP^T - D)
//        dK  += dS^T Q                (scaled by `scale` at the end)
//      dS^T goes to shared memory (input dtype) and the block computes dQ_tile = scale * dS K,
//      added to an fp32 dq accumulator with atomicAdd (the caller converts it to the dtype).
//      GQA: dK/dV of a kv head sum over its query heads inside the block, so nothing is expanded;
//      when the grid would be too small, the group's heads are split over blocks (num_splits)
//      that write fp32 partials the caller sums.
//
// Which query tiles to visit: the rows whose key interval meets [n0, n0 + BN) form one contiguous
// range (lo and hi are monotone), found by binary search.
#pragma once

#include "../common/kernel_abi.h"

#include "flash_common.cuh"

namespace prism::kernels::attn {
PRISM_KERNEL_ABI_BEGIN

template <class T, int D_>
struct FlashBwdPreprocess {
  static constexpr int D = D_;
  static constexpr int kThreads = 128;
  static constexpr int kRowsPerWarp = 4;
  static constexpr int kRowsPerBlock = kRowsPerWarp * kThreads / 32;
  static size_t smem_bytes(const FlashBwdParams&) { return 0; }
  static int grid_x(const FlashBwdParams& p) { return ceil_div(p.len_q, kRowsPerBlock); }

  PF_INLINE static void run(const FlashBwdParams& p, char*, const BlockCtx& c) {
    const int h = c.by, b = c.bz, warp = c.tid / 32, lane = c.tid % 32;
    const uint16_t* o = static_cast<const uint16_t*>(p.out) + b * p.o_stride_b + h * p.o_stride_h;
    const uint16_t* dout = static_cast<const uint16_t*>(p.dout) + b * p.do_stride_b + h * p.do_stride_h;
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const int r = c.bx * kRowsPerBlock + warp * kRowsPerWarp + rr;
      if (r >= p.len_q) break;  // warp-uniform
      float acc = 0.f;
      for (int col = 2 * lane; col < D; col += 64) {
        float o0, o1, d0, d1;
        unpack2<T>(ld_global_u32(o + r * p.o_stride_l + col), o0, o1);
        unpack2<T>(ld_global_u32(dout + r * p.do_stride_l + col), d0, d1);
        acc += o0 * d0 + o1 * d1;
      }
      acc = warp_sum(acc);
      if (lane == 0) st_global(p.softmax_d + (static_cast<int64_t>(b) * p.heads_q + h) * p.len_q + r, acc);
    }
  }
};

template <class T, int D_, int BM_, int NW_>
struct FlashBwdKernel {
  static constexpr int D = D_;
  static constexpr int BM = BM_;  // query rows per tile
  static constexpr int NW = NW_;
  static constexpr int BN = 16 * NW;  // keys per block, 16 per warp
  static constexpr int kThreads = 32 * NW;
  static constexpr int kPitch = D + 8;
  static constexpr int kPitchS = BM + 8;  // dS^T rows (keys) x BM queries
  static constexpr int kKVElems = BN * kPitch;
  static constexpr int kQElems = BM * kPitch;
  static constexpr int kSElems = BN * kPitchS;
  static_assert(D % 16 == 0 && BM % 16 == 0, "tile sizes must be multiples of the mma shape");
  static_assert(4 * BM >= BN, "dK/dV staging reuses the Q/dO buffers");
  static_assert(BN == kFlashBwdBlockKeys, "the binding sizes the grid with kFlashBwdBlockKeys");
  // dQ = dS K: the [BM x D] tile is split into 16-row x kDqCols jobs spread over the warps.
  static constexpr int kDqRowTiles = BM / 16;
  static constexpr int kDqColGroups = NW >= kDqRowTiles ? NW / kDqRowTiles : 1;
  static constexpr int kDqJobs = kDqRowTiles * kDqColGroups;
  static constexpr int kDqCols = D / kDqColGroups;
  static_assert(kDqJobs % NW == 0 && kDqCols % 16 == 0, "dQ work must split evenly over the warps");

  static constexpr size_t kHalfBytes = static_cast<size_t>(2 * kKVElems + 4 * kQElems + kSElems) * sizeof(uint16_t);
  static_assert(kHalfBytes % 16 == 0, "fp32 section must stay 16-byte aligned");
  static constexpr size_t kSmemBytes = kHalfBytes + static_cast<size_t>(4 * 2 * BM) * 4;

  static size_t smem_bytes(const FlashBwdParams&) { return kSmemBytes; }
  static int grid_x(const FlashBwdParams& p) { return ceil_div(p.len_k, BN); }

  PF_INLINE static void run(const FlashBwdParams& p, char* smem, const BlockCtx& c) {
    const int n_block = c.bx, hk = c.by, b = c.bz / p.num_splits, split = c.bz % p.num_splits;
    const int group = p.heads_q / p.heads_kv, heads = group / p.num_splits;
    const int h_begin = hk * group + split * heads;
    const int tid = c.tid, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int Lq = p.len_q, Lk = p.len_k;
    const int n0 = n_block * BN;
    const int n_last = (n0 + BN < Lk ? n0 + BN : Lk) - 1;

    uint16_t* sK = reinterpret_cast<uint16_t*>(smem);
    uint16_t* sV = sK + kKVElems;
    uint16_t* sQ = sV + kKVElems;     // [2][BM][kPitch]
    uint16_t* sdO = sQ + 2 * kQElems;  // [2][BM][kPitch]
    uint16_t* sdS = sdO + 2 * kQElems;  // [BN][kPitchS]
    float* sLse = reinterpret_cast<float*>(smem + kHalfBytes);  // [2][BM], log2 domain
    float* sD = sLse + 2 * BM;                                   // [2][BM]
    int* sLo = reinterpret_cast<int*>(sD + 2 * BM);              // [2][BM]
    int* sHi = sLo + 2 * BM;                                     // [2][BM]

    // Query rows [r_begin, r_end) see at least one key of the block.
    int r_begin, r_end;
    {
      int a = 0, z = Lq;
      while (a < z) {  // first row with hi >= n0
        const int mid = (a + z) / 2;
        if (row_range(p.mask, mid, Lq, Lk).hi >= n0) z = mid;
        else a = mid + 1;
      }
      r_begin = a;
      a = 0;
      z = Lq;
      while (a < z) {  // first row with lo > n_last
        const int mid = (a + z) / 2;
        if (row_range(p.mask, mid, Lq, Lk).lo > n_last) z = mid;
        else a = mid + 1;
      }
      r_end = a;
    }
    const int i_begin = r_begin / BM;
    const int num_tiles = r_begin < r_end ? (r_end - 1) / BM + 1 - i_begin : 0;
    const int num_jobs = heads * num_tiles;

    const uint16_t* k = static_cast<const uint16_t*>(p.k) + b * p.k_stride_b + hk * p.k_stride_h;
    const uint16_t* v = static_cast<const uint16_t*>(p.v) + b * p.v_stride_b + hk * p.v_stride_h;

    auto issue_job = [&](int j, int buf) {
      const int hq = h_begin + j / num_tiles;
      const int r0 = (i_begin + j % num_tiles) * BM;
      const uint16_t* q = static_cast<const uint16_t*>(p.q) + b * p.q_stride_b + hq * p.q_stride_h;
      const uint16_t* dout = static_cast<const uint16_t*>(p.dout) + b * p.do_stride_b + hq * p.do_stride_h;
      load_tile_async<BM, D, kThreads>(sQ + buf * kQElems, q, p.q_stride_l, r0, Lq, tid);
      load_tile_async<BM, D, kThreads>(sdO + buf * kQElems, dout, p.do_stride_l, r0, Lq, tid);
      for (int x = tid; x < BM; x += kThreads) {
        const int r = r0 + x;
        const bool valid = r < Lq;
        const int64_t idx = (static_cast<int64_t>(b) * p.heads_q + hq) * Lq + r;
        sLse[buf * BM + x] = valid ? ld_global(p.lse + idx) * kLog2e : pf_inf();
        sD[buf * BM + x] = valid ? ld_global(p.softmax_d + idx) : 0.f;
        const RowRange rr = row_range(p.mask, r, Lq, Lk);
        sLo[buf * BM + x] = rr.lo;
        sHi[buf * BM + x] = rr.hi;
      }
    };

    load_tile_async<BN, D, kThreads>(sK, k, p.k_stride_l, n0, Lk, tid);
    load_tile_async<BN, D, kThreads>(sV, v, p.v_stride_l, n0, Lk, tid);
    cp_async_commit();
    if (num_jobs > 0) issue_job(0, 0);
    cp_async_commit();

    float acc_dk[D / 8][4], acc_dv[D / 8][4];
PF_UNROLL
    for (int i = 0; i < D / 8; ++i)
PF_UNROLL
      for (int e = 0; e < 4; ++e) acc_dk[i][e] = acc_dv[i][e] = 0.f;
    const float scale_log2 = p.scale * kLog2e;
    const int kw0 = n0 + warp * 16;  // this warp's first key
    const int key_a = kw0 + g, key_b = kw0 + g + 8;

    for (int j = 0; j < num_jobs; ++j) {
      const int buf = j & 1;
      if (j + 1 < num_jobs) issue_job(j + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
      sync_block();

      const int hq = h_begin + j / num_tiles;
      const int r0 = (i_begin + j % num_tiles) * BM;
      const uint16_t* tQ = sQ + buf * kQElems;
      const uint16_t* tdO = sdO + buf * kQElems;
      const float* lse2 = sLse + buf * BM;
      const float* dd = sD + buf * BM;
      const int* lo = sLo + buf * BM;
      const int* hi = sHi + buf * BM;
      const int valid_rows = Lq - r0 < BM ? Lq - r0 : BM;
      const int f_lo = lo[0], f_hi = hi[0], l_lo = lo[valid_rows - 1], l_hi = hi[valid_rows - 1];
      const int w_lo_min = f_lo <= f_hi ? f_lo : l_lo;
      const int w_hi_max = l_lo <= l_hi ? l_hi : f_hi;
      const bool skip = kw0 >= Lk || kw0 > w_hi_max || kw0 + 15 < w_lo_min;

      if (!skip) {
        const bool full = valid_rows == BM && kw0 + 15 < Lk && f_lo <= f_hi && l_lo <= l_hi && l_lo <= kw0 &&
                          kw0 + 15 <= f_hi;
        // S^T = K Q^T: [16 keys x BM queries] per warp.
        float s[BM / 8][4];
PF_UNROLL
        for (int i = 0; i < BM / 8; ++i)
PF_UNROLL
          for (int e = 0; e < 4; ++e) s[i][e] = 0.f;
PF_UNROLL
        for (int kk = 0; kk < D / 16; ++kk) {
          uint32_t a[4];
          ldmatrix_x4(a, sK + (warp * 16 + lane % 16) * kPitch + kk * 16 + (lane / 16) * 8);
PF_UNROLL
          for (int mp = 0; mp < BM / 16; ++mp) {
            uint32_t bq[4];
            ldmatrix_x4(bq, tQ + (mp * 16 + lane % 8 + (lane / 16) * 8) * kPitch + kk * 16 + ((lane / 8) % 2) * 8);
            mma<T>(s[2 * mp], a, bq[0], bq[1]);
            mma<T>(s[2 * mp + 1], a, bq[2], bq[3]);
          }
        }
        // P^T, masked to exactly 0.
PF_UNROLL
        for (int nt = 0; nt < BM / 8; ++nt)
PF_UNROLL
          for (int e = 0; e < 4; ++e) {
            const int qc = nt * 8 + 2 * t + (e & 1);
            const int key = e < 2 ? key_a : key_b;
            const bool vis = full || (lo[qc] <= key && key <= hi[qc]);
            s[nt][e] = vis ? fast_exp2(s[nt][e] * scale_log2 - lse2[qc]) : 0.f;
          }
        // dV += P^T dO.
PF_UNROLL
        for (int kc = 0; kc < BM / 16; ++kc) {
          uint32_t a[4];
          a[0] = T::pack(s[2 * kc][0], s[2 * kc][1]);
          a[1] = T::pack(s[2 * kc][2], s[2 * kc][3]);
          a[2] = T::pack(s[2 * kc + 1][0], s[2 * kc + 1][1]);
          a[3] = T::pack(s[2 * kc + 1][2], s[2 * kc + 1][3]);
PF_UNROLL
          for (int dp = 0; dp < D / 16; ++dp) {
            uint32_t bo[4];
            ldmatrix_x4_trans(bo, tdO + (kc * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kPitch + dp * 16 + (lane / 16) * 8);
            mma<T>(acc_dv[2 * dp], a, bo[0], bo[1]);
            mma<T>(acc_dv[2 * dp + 1], a, bo[2], bo[3]);
          }
        }
        // dP^T = V dO^T.
        float dpt[BM / 8][4];
PF_UNROLL
        for (int i = 0; i < BM / 8; ++i)
PF_UNROLL
          for (int e = 0; e < 4; ++e) dpt[i][e] = 0.f;
PF_UNROLL
        for (int kk = 0; kk < D / 16; ++kk) {
          uint32_t a[4];
          ldmatrix_x4(a, sV + (warp * 16 + lane % 16) * kPitch + kk * 16 + (lane / 16) * 8);
PF_UNROLL
          for (int mp = 0; mp < BM / 16; ++mp) {
            uint32_t bo[4];
            ldmatrix_x4(bo, tdO + (mp * 16 + lane % 8 + (lane / 16) * 8) * kPitch + kk * 16 + ((lane / 8) % 2) * 8);
            mma<T>(dpt[2 * mp], a, bo[0], bo[1]);
            mma<T>(dpt[2 * mp + 1], a, bo[2], bo[3]);
          }
        }
        // dS^T = P^T (dP^T - D).
PF_UNROLL
        for (int nt = 0; nt < BM / 8; ++nt)
PF_UNROLL
          for (int e = 0; e < 4; ++e) s[nt][e] = s[nt][e] * (dpt[nt][e] - dd[nt * 8 + 2 * t + (e & 1)]);
        // dK += dS^T Q.
PF_UNROLL
        for (int kc = 0; kc < BM / 16; ++kc) {
          uint32_t a[4];
          a[0] = T::pack(s[2 * kc][0], s[2 * kc][1]);
          a[1] = T::pack(s[2 * kc][2], s[2 * kc][3]);
          a[2] = T::pack(s[2 * kc + 1][0], s[2 * kc + 1][1]);
          a[3] = T::pack(s[2 * kc + 1][2], s[2 * kc + 1][3]);
PF_UNROLL
          for (int dp = 0; dp < D / 16; ++dp) {
            uint32_t bq[4];
            ldmatrix_x4_trans(bq, tQ + (kc * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kPitch + dp * 16 + (lane / 16) * 8);
            mma<T>(acc_dk[2 * dp], a, bq[0], bq[1]);
            mma<T>(acc_dk[2 * dp + 1], a, bq[2], bq[3]);
          }
        }
PF_UNROLL
        for (int nt = 0; nt < BM / 8; ++nt) {
          st_shared_u32(sdS + (warp * 16 + g) * kPitchS + nt * 8 + 2 * t, T::pack(s[nt][0], s[nt][1]));
          st_shared_u32(sdS + (warp * 16 + g + 8) * kPitchS + nt * 8 + 2 * t, T::pack(s[nt][2], s[nt][3]));
        }
      } else {
PF_UNROLL
        for (int nt = 0; nt < BM / 8; ++nt) {
          st_shared_u32(sdS + (warp * 16 + g) * kPitchS + nt * 8 + 2 * t, 0u);
          st_shared_u32(sdS + (warp * 16 + g + 8) * kPitchS + nt * 8 + 2 * t, 0u);
        }
      }
      sync_block();  // dS^T of all warps is in shared memory

      // dQ[r0 : r0 + BM] += scale * dS K (dS = (dS^T)^T read with ldmatrix.trans).
      float* dq = p.dq_accum + (static_cast<int64_t>(b) * p.heads_q + hq) * Lq * D;
      for (int job = warp; job < kDqJobs; job += NW) {
        const int rt = job % kDqRowTiles, cg = job / kDqRowTiles;
        float acc[kDqCols / 8][4];
PF_UNROLL
        for (int i = 0; i < kDqCols / 8; ++i)
PF_UNROLL
          for (int e = 0; e < 4; ++e) acc[i][e] = 0.f;
PF_UNROLL
        for (int kc = 0; kc < BN / 16; ++kc) {
          uint32_t a[4];
          ldmatrix_x4_trans(a, sdS + (kc * 16 + lane % 8 + (lane / 16) * 8) * kPitchS + rt * 16 + ((lane / 8) % 2) * 8);
PF_UNROLL
          for (int dp = 0; dp < kDqCols / 16; ++dp) {
            uint32_t bk[4];
            ldmatrix_x4_trans(bk, sK + (kc * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kPitch + cg * kDqCols + dp * 16 +
                                      (lane / 16) * 8);
            mma<T>(acc[2 * dp], a, bk[0], bk[1]);
            mma<T>(acc[2 * dp + 1], a, bk[2], bk[3]);
          }
        }
        const int ra = r0 + rt * 16 + g, rb = ra + 8;
PF_UNROLL
        for (int nt = 0; nt < kDqCols / 8; ++nt) {
          const int col = cg * kDqCols + nt * 8 + 2 * t;
          if (ra < Lq) {
            atomic_add_f32(dq + static_cast<int64_t>(ra) * D + col, acc[nt][0] * p.scale);
            atomic_add_f32(dq + static_cast<int64_t>(ra) * D + col + 1, acc[nt][1] * p.scale);
          }
          if (rb < Lq) {
            atomic_add_f32(dq + static_cast<int64_t>(rb) * D + col, acc[nt][2] * p.scale);
            atomic_add_f32(dq + static_cast<int64_t>(rb) * D + col + 1, acc[nt][3] * p.scale);
          }
        }
      }
      // No barrier needed here: the next iteration's prefetch only touches this job's Q/dO/lse/D
      // buffers, which nobody reads after the dS^T barrier above, and its first barrier orders
      // the next dS^T stores after every warp's dQ reads (the CPU emulation checks both).
    }
    cp_async_wait<0>();
    sync_block();

PF_UNROLL
    for (int i = 0; i < D / 8; ++i)
PF_UNROLL
      for (int e = 0; e < 4; ++e) acc_dk[i][e] *= p.scale;

    if (p.num_splits == 1) {
      uint16_t* stage = sQ;  // BN rows fit in the Q + dO buffers (static_assert above)
      uint16_t* dk = static_cast<uint16_t*>(p.dk) + b * p.dk_stride_b + hk * p.dk_stride_h;
      uint16_t* dv = static_cast<uint16_t*>(p.dv) + b * p.dv_stride_b + hk * p.dv_stride_h;
PF_UNROLL
      for (int nt = 0; nt < D / 8; ++nt) {
        st_shared_u32(stage + (warp * 16 + g) * kPitch + nt * 8 + 2 * t, T::pack(acc_dk[nt][0], acc_dk[nt][1]));
        st_shared_u32(stage + (warp * 16 + g + 8) * kPitch + nt * 8 + 2 * t, T::pack(acc_dk[nt][2], acc_dk[nt][3]));
      }
      sync_block();
      store_tile<BN, D, kThreads>(dk, p.dk_stride_l, stage, n0, Lk, tid);
      sync_block();
PF_UNROLL
      for (int nt = 0; nt < D / 8; ++nt) {
        st_shared_u32(stage + (warp * 16 + g) * kPitch + nt * 8 + 2 * t, T::pack(acc_dv[nt][0], acc_dv[nt][1]));
        st_shared_u32(stage + (warp * 16 + g + 8) * kPitch + nt * 8 + 2 * t, T::pack(acc_dv[nt][2], acc_dv[nt][3]));
      }
      sync_block();
      store_tile<BN, D, kThreads>(dv, p.dv_stride_l, stage, n0, Lk, tid);
    } else {
      const int64_t plane = static_cast<int64_t>(Lk) * D;
      float* pk = p.dkv_partial + ((static_cast<int64_t>(split) * 2 * p.batch + b) * p.heads_kv + hk) * plane;
      float* pv = p.dkv_partial + ((static_cast<int64_t>(split * 2 + 1) * p.batch + b) * p.heads_kv + hk) * plane;
PF_UNROLL
      for (int nt = 0; nt < D / 8; ++nt) {
        const int col = nt * 8 + 2 * t;
        if (key_a < Lk) {
          st_global(pk + static_cast<int64_t>(key_a) * D + col, acc_dk[nt][0]);
          st_global(pk + static_cast<int64_t>(key_a) * D + col + 1, acc_dk[nt][1]);
          st_global(pv + static_cast<int64_t>(key_a) * D + col, acc_dv[nt][0]);
          st_global(pv + static_cast<int64_t>(key_a) * D + col + 1, acc_dv[nt][1]);
        }
        if (key_b < Lk) {
          st_global(pk + static_cast<int64_t>(key_b) * D + col, acc_dk[nt][2]);
          st_global(pk + static_cast<int64_t>(key_b) * D + col + 1, acc_dk[nt][3]);
          st_global(pv + static_cast<int64_t>(key_b) * D + col, acc_dv[nt][2]);
          st_global(pv + static_cast<int64_t>(key_b) * D + col + 1, acc_dv[nt][3]);
        }
      }
    }
  }
};

template <class T, int D>
struct FlashBwdConfig;
template <class T>
struct FlashBwdConfig<T, 64> {
  using Kernel = FlashBwdKernel<T, 64, 64, 4>;
};
template <class T>
struct FlashBwdConfig<T, 128> {
  using Kernel = FlashBwdKernel<T, 128, 32, 4>;
};

PRISM_KERNEL_ABI_END
}  // namespace prism::kernels::attn
