// Chunked Mamba2 SSD scan, forward and backward: device code only (host launchers:
// ssd_scan_fwd.cu, ssd_scan_bwd.cu), written against common/device_compat.cuh so that
// tests/ops/test_ssd_emu.cpp runs these exact bodies on a CPU. docs/kernels/ssd.md has the math.
//
// Forward (the SSD algorithm of architectures.md §2.4; same math and operation order as
// src/ops/ssd_scan_ref.cpp), four launches like mamba_ssm's Triton path:
//   1. chunk_state   per (chunk, head): a = dt*A (−1e4 at document starts), the chunk-local
//                    inclusive cumsum cs in fp64, and the chunk state
//                    st[p, n] = Σ_s exp(cs[Q-1] − cs[s]) (x_s dt_s)[p] B_s[n].
//   2. chunk_cb      per (chunk, group, 64x64 lower tile): CB[t, s] = C_t · B_s, shared by the
//                    group's heads (H/G = 16 for Nemotron-H) instead of recomputed per head.
//   3. state_passing per (head, state element): Hin_0 = initial state,
//                    Hin_{c+1} = exp(cs_c[Q-1]) Hin_c + st_c, written over st_c; the last is the
//                    final state.
//   4. chunk_scan    per (64-row tile of a chunk, head):
//                    y[t] = Σ_{s<=t} CB[t,s] exp(cs[t]−cs[s]) x̃_s + exp(cs[t]) C_t · Hin + D x_t.
//
// Backward (after re-running launches 1-3 to rebuild cs, CB and Hin from the inputs), with
// E[t,s] = exp(cs[t] − cs[s]), dec_s = exp(cs[Q-1] − cs[s]), dy / dfinal the incoming gradients:
//   5. bwd_dstate      per (chunk, head): dHy_c[p, n] = Σ_t exp(cs[t]) dy_t[p] C_t[n].
//   6. bwd_state_pass  per (head): backwards over chunks, dH = dfinal;
//                      dst_c = dH (gradient of chunk state c), dS_c = exp(cs_c[Q-1]) Σ dH·Hin_c,
//                      dH = exp(cs_c[Q-1]) dH + dHy_c; d initial_state = dH at the end.
//   7. bwd_dcb         per (chunk, group, 64x64 lower tile), looping over the group's heads:
//                      dCB[t,s] = Σ_h E_h[t,s] dy_t,h · x̃_s,h, and per head the row / column
//                      sums of dseg[t,s] = CB[t,s] E[t,s] dy_t · x̃_s (s < t) for the dt/A path.
//   8. bwd_dx          per (64-row tile of s, head):
//                      dx̃_s = Σ_{t>=s} CB[t,s] E[t,s] dy_t + dec_s dst B_s,
//                      dx = dx̃ dt + D dy, ddt (direct) = dx̃ · x, partial dD = Σ dy · x.
//   9. bwd_dbc<C / B>  per (64-row tile, group), looping over the group's heads:
//                      dC_t = Σ_{s<=t} dCB[t,s] B_s + Σ_h exp(cs[t]) dy_t Hin,
//                      dB_s = Σ_{t>=s} dCB[t,s] C_t + Σ_h dec_s x̃_s dst,
//                      and per head dcs_off[t] = exp(cs[t]) C_t · (dy_t Hin),
//                      kst[s] = dec_s B_s · (x̃_s dst).
//  10. bwd_da          per (chunk, head): dcs[t] = rows − columns of dseg + dcs_off[t] − kst[t]
//                      (+ Σ kst + dS at t = Q-1), da_r = Σ_{t>=r} dcs[t] (fp64 suffix sums),
//                      ddt += da A and partial dA = Σ da dt, except at document starts (a is the
//                      constant −1e4 there: its gradient is dropped, as the reference's masked_fill
//                      drops it).
//  11. bwd_reduce      per head: dA and dD from the per-chunk partials in a fixed order.
// Determinism: no atomics anywhere; each output element and each partial is written by exactly
// one thread, and every cross-block sum is a fixed-order loop (steps 10 and 11).
//
// Why fp64 for cs: every decay is exp(cs[t] − cs[s]); in fp32 the difference of two prefix sums
// loses |cs| · 2^-24 (HF's exp(A_cumsum[-1] − A_cumsum) problem, fatal after a −1e4 reset); in
// fp64 the difference is exact to fp32 precision, at Q^2 fp64 subtractions per (chunk, head).
// The dt/A gradient sums (row / column sums of dseg, the suffix sums) are fp64 too: the row and
// column sums of the same fp32 dseg values cancel exactly there, leaving the "crossing pairs"
// Σ_{t>=r, s<r} dseg[t,s] that the reference's cumsum backward computes.
// Why fp32 SIMT and no tensor cores: the accuracy bar is "≤ 2x the error of the fp32 reference";
// tf32/bf16 MMA inputs would be ~10^3 times worse. Tiles: 256 threads as 16x16, each thread a
// (rows/16) x (cols/16) register tile over shared-memory operand tiles of 32 along the reduction.
#pragma once

#include "../common/kernel_abi.h"

#include <cmath>
#include <cstdint>

#include "../common/device_compat.cuh"
#include "ssd_params.h"

namespace prism::kernels::ssm::scan {
PRISM_KERNEL_ABI_BEGIN

constexpr int kThreads = 256;
constexpr int kMaxQ = 256;
constexpr int kTile = 64;  // rows (t) of a chunk_scan / chunk_cb tile
constexpr int kRed = 32;   // reduction tile
constexpr float kResetLogDecay = -1e4f;

/// Element i of a dtype-erased tensor as fp32.
__device__ __forceinline__ float ldf(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::kFloat16: return dev::to_f(static_cast<const dev::half*>(p)[i]);
    case DType::kBFloat16: return dev::to_f(static_cast<const dev::bf16*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

__device__ __forceinline__ int64_t ncQ(const SsdScanFwdParams& p) { return (p.L + p.Q - 1) / p.Q * p.Q; }

__device__ __forceinline__ float ld_x(const SsdScanFwdParams& p, int64_t b, int64_t pos, int64_t h, int64_t pp) {
  return ldf(p.x.ptr, p.x.dtype, b * p.x.s0 + pos * p.x.s1 + h * p.x.s2 + pp);
}
__device__ __forceinline__ float ld_dt(const SsdScanFwdParams& p, int64_t b, int64_t pos, int64_t h) {
  return ldf(p.dt.ptr, p.dt.dtype, b * p.dt.s0 + pos * p.dt.s1 + h * p.dt.s2);
}
__device__ __forceinline__ float ld_B(const SsdScanFwdParams& p, int64_t b, int64_t pos, int64_t g, int64_t n) {
  return ldf(p.Bm.ptr, p.Bm.dtype, b * p.Bm.s0 + pos * p.Bm.s1 + g * p.Bm.s2 + n);
}
__device__ __forceinline__ float ld_C(const SsdScanFwdParams& p, int64_t b, int64_t pos, int64_t g, int64_t n) {
  return ldf(p.Cm.ptr, p.Cm.dtype, b * p.Cm.s0 + pos * p.Cm.s1 + g * p.Cm.s2 + n);
}

/// Sum over the 16 lanes that share a 16-lane half-warp (tid % 16 varies): xor 8, 4, 2, 1.
__device__ __forceinline__ double half_warp_sum(double v) {
  for (int off = 8; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

/// Sum over the block (kThreads threads); every thread gets the result. `scratch` holds 33
/// doubles; safe to call repeatedly with the same scratch (two __syncthreads inside).
__device__ __forceinline__ double block_sum_d(double v, double* scratch) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    double s = lane < kThreads / 32 ? scratch[lane] : 0.0;
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) scratch[32] = s;
  }
  __syncthreads();
  return scratch[32];
}

// ------------------------------------------------------------------------------------ forward

template <int P, int N>
__global__ void __launch_bounds__(kThreads, 1) chunk_state_kernel(SsdScanFwdParams p) {
  __shared__ double cs_s[kMaxQ];
  __shared__ float dt_s[kMaxQ];
  __shared__ float dec_s[kMaxQ];
  __shared__ float Xs[kRed][P];
  __shared__ float Bs[kRed][N];
  const int64_t c = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t nc = gridDim.x, Q = p.Q, g = h / (p.H / p.G);
  const int64_t base = c * Q;
  const int tid = threadIdx.x;
  const float A = ldf(p.A.ptr, p.A.dtype, h * p.A.s0);
  for (int s = tid; s < Q; s += kThreads) {
    const int64_t pos = base + s;
    float dtv = 0.f, a = 0.f;
    if (pos < p.L) {
      dtv = ld_dt(p, b, pos, h);
      a = dtv * A;
      if (p.reset && p.reset[pos]) a = kResetLogDecay;
    }
    dt_s[s] = dtv;
    cs_s[s] = a;
  }
  __syncthreads();
  if (tid < 32) {  // inclusive scan in fp64: 32 lanes x Q/32 consecutive elements
    const int per = static_cast<int>(Q / 32);
    double run = 0.0;
    for (int k = 0; k < per; ++k) run += cs_s[tid * per + k];
    double incl = run;
    for (int off = 1; off < 32; off <<= 1) {
      const double v = __shfl_up_sync(0xffffffffu, incl, off);
      if (tid >= off) incl += v;
    }
    double pre = incl - run;  // exclusive prefix of this lane (exact: sums of the same terms)
    for (int k = 0; k < per; ++k) {
      pre += cs_s[tid * per + k];
      cs_s[tid * per + k] = pre;
    }
  }
  __syncthreads();
  const double total = cs_s[Q - 1];
  for (int s = tid; s < Q; s += kThreads) {
    p.cs[(b * p.H + h) * ncQ(p) + base + s] = cs_s[s];
    dec_s[s] = expf(static_cast<float>(total - cs_s[s]));
  }
  constexpr int TP = P / 16, TN = N / 16;
  const int tn = tid % 16, tp = tid / 16;
  float acc[TP][TN];
#pragma unroll
  for (int i = 0; i < TP; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;
  for (int64_t s0 = 0; s0 < Q && base + s0 < p.L; s0 += kRed) {
    __syncthreads();
    for (int e = tid; e < kRed * P; e += kThreads) {
      const int s = e / P, pp = e % P;
      const int64_t pos = base + s0 + s;
      float v = 0.f;
      if (pos < p.L) v = (ld_x(p, b, pos, h, pp) * dt_s[s0 + s]) * dec_s[s0 + s];
      Xs[s][pp] = v;
    }
    for (int e = tid; e < kRed * N; e += kThreads) {
      const int s = e / N, n = e % N;
      const int64_t pos = base + s0 + s;
      Bs[s][n] = pos < p.L ? ld_B(p, b, pos, g, n) : 0.f;
    }
    __syncthreads();
#pragma unroll 4
    for (int s = 0; s < kRed; ++s) {
      float xv[TP], bv[TN];
#pragma unroll
      for (int i = 0; i < TP; ++i) xv[i] = Xs[s][tp + 16 * i];
#pragma unroll
      for (int j = 0; j < TN; ++j) bv[j] = Bs[s][tn + 16 * j];
#pragma unroll
      for (int i = 0; i < TP; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(xv[i], bv[j], acc[i][j]);
    }
  }
  float* out = p.states + ((b * nc + c) * p.H + h) * P * N;
#pragma unroll
  for (int i = 0; i < TP; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) out[(tp + 16 * i) * N + tn + 16 * j] = acc[i][j];
}

template <int N>
__global__ void __launch_bounds__(kThreads, 1) chunk_cb_kernel(SsdScanFwdParams p) {
  __shared__ float Cs[kTile][kRed + 1];
  __shared__ float Bs[kTile][kRed + 1];
  const int64_t Q = p.Q, nT = Q / kTile;
  const int64_t c = blockIdx.x / (nT * nT), r = blockIdx.x % (nT * nT), ti = r / nT, si = r % nT;
  if (si > ti) return;  // above the diagonal: never read
  const int64_t g = blockIdx.y, b = blockIdx.z, nc = gridDim.x / (nT * nT);
  const int64_t t_base = c * Q + ti * kTile, s_base = c * Q + si * kTile;
  const int tid = threadIdx.x, ts = tid % 16, tt = tid / 16;
  float acc[4][4] = {};
  for (int n0 = 0; n0 < N; n0 += kRed) {
    __syncthreads();
    for (int e = tid; e < kTile * kRed; e += kThreads) {
      const int row = e / kRed, n = e % kRed;
      const int64_t pt = t_base + row, ps = s_base + row;
      Cs[row][n] = pt < p.L ? ld_C(p, b, pt, g, n0 + n) : 0.f;
      Bs[row][n] = ps < p.L ? ld_B(p, b, ps, g, n0 + n) : 0.f;
    }
    __syncthreads();
#pragma unroll 8
    for (int n = 0; n < kRed; ++n) {
      float cv[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) cv[i] = Cs[tt + 16 * i][n];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = Bs[ts + 16 * j][n];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(cv[i], bv[j], acc[i][j]);
    }
  }
  float* out = p.cb + ((b * nc + c) * p.G + g) * Q * Q;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) out[(ti * kTile + tt + 16 * i) * Q + si * kTile + ts + 16 * j] = acc[i][j];
}

template <int P, int N>
__global__ void __launch_bounds__(kThreads, 1) state_passing_kernel(SsdScanFwdParams p, int64_t nc) {
  constexpr int64_t PN = P * N;
  const int64_t e = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t h = blockIdx.y, b = blockIdx.z;
  if (e >= PN) return;
  float hs = p.initial_state ? p.initial_state[(b * p.H + h) * PN + e] : 0.f;
  const double* cs = p.cs + (b * p.H + h) * ncQ(p);
  for (int64_t c = 0; c < nc; ++c) {
    const int64_t idx = ((b * nc + c) * p.H + h) * PN + e;
    const float st = p.states[idx];
    p.states[idx] = hs;  // the state entering chunk c
    const float decay = expf(static_cast<float>(cs[c * p.Q + p.Q - 1]));
    hs = __fadd_rn(__fmul_rn(hs, decay), st);
  }
  p.final_state[(b * p.H + h) * PN + e] = hs;
}

template <int P, int N>
__global__ void __launch_bounds__(kThreads, 1) chunk_scan_kernel(SsdScanFwdParams p) {
  __shared__ double cs_s[kMaxQ];
  __shared__ float dt_s[kMaxQ];
  __shared__ float Cs[kTile][kRed + 1];  // also the M = CB * decay tile in the second phase
  __shared__ float Ks[kRed][P + 1];      // Hin^T tile, then the x̃ tile
  const int64_t Q = p.Q, nT = Q / kTile;
  const int64_t c = blockIdx.x / nT, ti = blockIdx.x % nT, h = blockIdx.y, b = blockIdx.z;
  const int64_t nc = gridDim.x / nT, g = h / (p.H / p.G);
  const int64_t t_base = ti * kTile;  // within the chunk
  const int64_t base = c * Q;
  if (base + t_base >= p.L) return;
  const int tid = threadIdx.x, tp = tid % 16, tt = tid / 16;
  const double* cs_g = p.cs + (b * p.H + h) * ncQ(p) + base;
  for (int s = tid; s < Q; s += kThreads) {
    cs_s[s] = cs_g[s];
    const int64_t pos = base + s;
    dt_s[s] = pos < p.L ? ld_dt(p, b, pos, h) : 0.f;
  }
  constexpr int TP = P / 16;
  float off[4][TP], dg[4][TP];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < TP; ++j) off[i][j] = dg[i][j] = 0.f;

  // Off-diagonal: C_t · Hin (Hin = p.states[b, c, h], [P, N]).
  const float* hin = p.states + ((b * nc + c) * p.H + h) * P * N;
  for (int n0 = 0; n0 < N; n0 += kRed) {
    __syncthreads();
    for (int e = tid; e < kTile * kRed; e += kThreads) {
      const int row = e / kRed, n = e % kRed;
      const int64_t pos = base + t_base + row;
      Cs[row][n] = pos < p.L ? ld_C(p, b, pos, g, n0 + n) : 0.f;
    }
    for (int e = tid; e < kRed * P; e += kThreads) {
      const int n = e % kRed, pp = e / kRed;
      Ks[n][pp] = hin[pp * N + n0 + n];
    }
    __syncthreads();
#pragma unroll 8
    for (int n = 0; n < kRed; ++n) {
      float cv[4], hv[TP];
#pragma unroll
      for (int i = 0; i < 4; ++i) cv[i] = Cs[tt + 16 * i][n];
#pragma unroll
      for (int j = 0; j < TP; ++j) hv[j] = Ks[n][tp + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < TP; ++j) off[i][j] = fmaf(cv[i], hv[j], off[i][j]);
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float e = expf(static_cast<float>(cs_s[t_base + tt + 16 * i]));
#pragma unroll
    for (int j = 0; j < TP; ++j) off[i][j] *= e;
  }

  // Diagonal block: Σ_{s<=t} CB[t,s] exp(cs[t]-cs[s]) x̃_s over the chunk's s < t_base + 64.
  const float* cb = p.cb + ((b * nc + c) * p.G + g) * Q * Q;
  for (int64_t s0 = 0; s0 < t_base + kTile && base + s0 < p.L; s0 += kRed) {
    __syncthreads();
    for (int e = tid; e < kTile * kRed; e += kThreads) {
      const int row = e / kRed, sc = e % kRed;
      const int64_t t = t_base + row, s = s0 + sc;
      float m = 0.f;
      if (s <= t && base + t < p.L) m = cb[t * Q + s] * expf(static_cast<float>(cs_s[t] - cs_s[s]));
      Cs[row][sc] = m;
    }
    for (int e = tid; e < kRed * P; e += kThreads) {
      const int s = e / P, pp = e % P;
      const int64_t pos = base + s0 + s;
      Ks[s][pp] = pos < p.L ? ld_x(p, b, pos, h, pp) * dt_s[s0 + s] : 0.f;
    }
    __syncthreads();
#pragma unroll 8
    for (int s = 0; s < kRed; ++s) {
      float mv[4], xv[TP];
#pragma unroll
      for (int i = 0; i < 4; ++i) mv[i] = Cs[tt + 16 * i][s];
#pragma unroll
      for (int j = 0; j < TP; ++j) xv[j] = Ks[s][tp + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < TP; ++j) dg[i][j] = fmaf(mv[i], xv[j], dg[i][j]);
    }
  }

  const float Dh = p.D.ptr ? ldf(p.D.ptr, p.D.dtype, h * p.D.s0) : 0.f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t pos = base + t_base + tt + 16 * i;
    if (pos >= p.L) continue;
#pragma unroll
    for (int j = 0; j < TP; ++j) {
      const int pp = tp + 16 * j;
      float v = dg[i][j] + off[i][j];
      if (p.D.ptr) v += Dh * ld_x(p, b, pos, h, pp);
      p.y[((b * p.L + pos) * p.H + h) * P + pp] = v;
    }
  }
}

// ----------------------------------------------------------------------------------- backward

/// 5. dHy_c[p, n] = Σ_t exp(cs[t]) dy_t[p] C_t[n] (the gradient reaching Hin_c through y).
template <int P, int N>
__global__ void __launch_bounds__(kThreads, 1) bwd_dstate_kernel(SsdScanBwdParams q) {
  const SsdScanFwdParams& p = q.f;
  __shared__ float w_s[kMaxQ];
  __shared__ float Ys[kRed][P];
  __shared__ float Cs[kRed][N];
  const int64_t c = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t nc = gridDim.x, Q = p.Q, g = h / (p.H / p.G);
  const int64_t base = c * Q;
  const int tid = threadIdx.x;
  const double* cs = p.cs + (b * p.H + h) * ncQ(p) + base;
  for (int s = tid; s < Q; s += kThreads) w_s[s] = expf(static_cast<float>(cs[s]));
  constexpr int TP = P / 16, TN = N / 16;
  const int tn = tid % 16, tp = tid / 16;
  float acc[TP][TN];
#pragma unroll
  for (int i = 0; i < TP; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;
  for (int64_t t0 = 0; t0 < Q && base + t0 < p.L; t0 += kRed) {
    __syncthreads();
    for (int e = tid; e < kRed * P; e += kThreads) {
      const int t = e / P, pp = e % P;
      const int64_t pos = base + t0 + t;
      Ys[t][pp] = pos < p.L ? q.dy[((b * p.L + pos) * p.H + h) * P + pp] * w_s[t0 + t] : 0.f;
    }
    for (int e = tid; e < kRed * N; e += kThreads) {
      const int t = e / N, n = e % N;
      const int64_t pos = base + t0 + t;
      Cs[t][n] = pos < p.L ? ld_C(p, b, pos, g, n) : 0.f;
    }
    __syncthreads();
#pragma unroll 4
    for (int t = 0; t < kRed; ++t) {
      float yv[TP], cv[TN];
#pragma unroll
      for (int i = 0; i < TP; ++i) yv[i] = Ys[t][tp + 16 * i];
#pragma unroll
      for (int j = 0; j < TN; ++j) cv[j] = Cs[t][tn + 16 * j];
#pragma unroll
      for (int i = 0; i < TP; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(yv[i], cv[j], acc[i][j]);
    }
  }
  float* out = q.dstates + ((b * nc + c) * p.H + h) * P * N;
#pragma unroll
  for (int i = 0; i < TP; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) out[(tp + 16 * i) * N + tn + 16 * j] = acc[i][j];
}

/// 6. Backward state passing, one block per (head, batch): dstates[c] becomes the gradient of
///    chunk state c, dS[c] the gradient of cs_c[Q-1] through the chunk decay.
template <int P, int N>
__global__ void __launch_bounds__(kThreads, 1) bwd_state_passing_kernel(SsdScanBwdParams q, int64_t nc) {
  const SsdScanFwdParams& p = q.f;
  __shared__ double red[33];
  constexpr int PN = P * N, kPer = PN / kThreads;
  static_assert(PN % kThreads == 0, "P * N must be a multiple of the block size");
  const int64_t h = blockIdx.x, b = blockIdx.y;
  const int tid = threadIdx.x;
  const double* cs = p.cs + (b * p.H + h) * ncQ(p);
  float dH[kPer];
#pragma unroll
  for (int k = 0; k < kPer; ++k)
    dH[k] = q.dfinal_state ? q.dfinal_state[(b * p.H + h) * PN + tid + k * kThreads] : 0.f;
  for (int64_t c = nc - 1; c >= 0; --c) {
    const int64_t idx = ((b * nc + c) * p.H + h) * PN + tid;
    const float decay = expf(static_cast<float>(cs[c * p.Q + p.Q - 1]));
    double part = 0.0;
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const float hin = p.states[idx + k * kThreads];
      const float dhy = q.dstates[idx + k * kThreads];
      part += static_cast<double>(dH[k]) * hin;
      q.dstates[idx + k * kThreads] = dH[k];
      dH[k] = __fadd_rn(__fmul_rn(dH[k], decay), dhy);
    }
    const double total = block_sum_d(part, red);
    if (tid == 0) q.dS[(b * p.H + h) * nc + c] = total * decay;
  }
  if (q.dinitial_state) {
#pragma unroll
    for (int k = 0; k < kPer; ++k) q.dinitial_state[(b * p.H + h) * PN + tid + k * kThreads] = dH[k];
  }
}

/// 7. dCB for a 64x64 lower tile of a chunk, summed over the group's heads, and per head the row /
///    column sums of dseg[t,s] = CB[t,s] E[t,s] dy_t · x̃_s over the tile (strictly below the diagonal).
template <int P>
__global__ void __launch_bounds__(kThreads, 1) bwd_dcb_kernel(SsdScanBwdParams q) {
  const SsdScanFwdParams& p = q.f;
  __shared__ float Ys[kTile][kRed + 1];  // dy rows t
  __shared__ float Xs[kTile][kRed + 1];  // x̃ rows s
  __shared__ double cst_s[kTile], css_s[kTile];
  __shared__ float dts_s[kTile];
  __shared__ double colp[16][kTile];
  const int64_t Q = p.Q, nT = Q / kTile;
  const int64_t c = blockIdx.x / (nT * nT), r = blockIdx.x % (nT * nT), ti = r / nT, si = r % nT;
  if (si > ti) return;  // above the diagonal: never read
  const int64_t g = blockIdx.y, b = blockIdx.z, nc = gridDim.x / (nT * nT), hpg = p.H / p.G;
  const int64_t base = c * Q, t_base = ti * kTile, s_base = si * kTile;
  const int tid = threadIdx.x, ts = tid % 16, tt = tid / 16;
  const float* cb = p.cb + ((b * nc + c) * p.G + g) * Q * Q;
  float cbv[4][4], dcb[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t t = t_base + tt + 16 * i, s = s_base + ts + 16 * j;
      cbv[i][j] = s < t ? cb[t * Q + s] : 0.f;
      dcb[i][j] = 0.f;
    }
  for (int64_t h = g * hpg; h < (g + 1) * hpg; ++h) {
    __syncthreads();  // the previous head's readers of cst_s / css_s / dts_s / colp are done
    const double* cs = p.cs + (b * p.H + h) * ncQ(p) + base;
    for (int i = tid; i < kTile; i += kThreads) {
      cst_s[i] = cs[t_base + i];
      css_s[i] = cs[s_base + i];
      const int64_t pos = base + s_base + i;
      dts_s[i] = pos < p.L ? ld_dt(p, b, pos, h) : 0.f;
    }
    float acc[4][4] = {};
    for (int p0 = 0; p0 < P; p0 += kRed) {
      __syncthreads();
      for (int e = tid; e < kTile * kRed; e += kThreads) {
        const int row = e / kRed, k = e % kRed;
        const int64_t pt = base + t_base + row, ps = base + s_base + row;
        Ys[row][k] = pt < p.L ? q.dy[((b * p.L + pt) * p.H + h) * P + p0 + k] : 0.f;
        Xs[row][k] = ps < p.L ? ld_x(p, b, ps, h, p0 + k) * dts_s[row] : 0.f;
      }
      __syncthreads();
#pragma unroll 8
      for (int k = 0; k < kRed; ++k) {
        float yv[4], xv[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) yv[i] = Ys[tt + 16 * i][k];
#pragma unroll
        for (int j = 0; j < 4; ++j) xv[j] = Xs[ts + 16 * j][k];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(yv[i], xv[j], acc[i][j]);
      }
    }
    double rows[4] = {0.0, 0.0, 0.0, 0.0}, cols[4] = {0.0, 0.0, 0.0, 0.0};
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t t = t_base + tt + 16 * i, s = s_base + ts + 16 * j;
        float v = 0.f;
        if (s <= t && base + t < p.L)
          v = acc[i][j] * expf(static_cast<float>(cst_s[tt + 16 * i] - css_s[ts + 16 * j]));
        dcb[i][j] += v;
        const double m = static_cast<double>(cbv[i][j] * v);  // 0 on and above the diagonal
        rows[i] += m;
        cols[j] += m;
      }
    const int64_t part_base = (((b * p.H + h) * nc + c) * nT) * Q;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const double rs = half_warp_sum(rows[i]);  // over the tile's 64 columns
      if (ts == 0) q.rowpart[part_base + si * Q + t_base + tt + 16 * i] = rs;
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) colp[tt][ts + 16 * j] = cols[j];
    __syncthreads();
    if (tid < kTile) {
      double cs_sum = 0.0;
      for (int k = 0; k < 16; ++k) cs_sum += colp[k][tid];
      q.colpart[part_base + ti * Q + s_base + tid] = cs_sum;
    }
  }
  float* out = q.dcb + ((b * nc + c) * p.G + g) * Q * Q;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) out[(t_base + tt + 16 * i) * Q + s_base + ts + 16 * j] = dcb[i][j];
}

/// 8. dx, the direct part of ddt and partial dD for a 64-row tile of positions s, one head.
template <int P, int N>
__global__ void __launch_bounds__(kThreads, 1) bwd_dx_kernel(SsdScanBwdParams q) {
  const SsdScanFwdParams& p = q.f;
  __shared__ double cs_s[kMaxQ];
  __shared__ float dt_s[kMaxQ];
  __shared__ float Ms[kTile][kRed + 1];  // B_s tile, then the CB * E tile (rows s, columns t)
  __shared__ float Ks[kRed][P + 1];      // dst^T tile, then the dy tile
  __shared__ double red[33];
  const int64_t Q = p.Q, nT = Q / kTile;
  const int64_t c = blockIdx.x / nT, si = blockIdx.x % nT, h = blockIdx.y, b = blockIdx.z;
  const int64_t nc = gridDim.x / nT, g = h / (p.H / p.G);
  const int64_t s_base = si * kTile, base = c * Q;
  if (base + s_base >= p.L) return;
  const int tid = threadIdx.x, tp = tid % 16, tt = tid / 16;
  const double* cs_g = p.cs + (b * p.H + h) * ncQ(p) + base;
  for (int s = tid; s < Q; s += kThreads) {
    cs_s[s] = cs_g[s];
    const int64_t pos = base + s;
    dt_s[s] = pos < p.L ? ld_dt(p, b, pos, h) : 0.f;
  }
  constexpr int TP = P / 16;
  float off[4][TP], dg[4][TP];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < TP; ++j) off[i][j] = dg[i][j] = 0.f;

  // State term: Σ_n B_s[n] dst[p, n].
  const float* dst = q.dstates + ((b * nc + c) * p.H + h) * P * N;
  for (int n0 = 0; n0 < N; n0 += kRed) {
    __syncthreads();
    for (int e = tid; e < kTile * kRed; e += kThreads) {
      const int row = e / kRed, n = e % kRed;
      const int64_t pos = base + s_base + row;
      Ms[row][n] = pos < p.L ? ld_B(p, b, pos, g, n0 + n) : 0.f;
    }
    for (int e = tid; e < kRed * P; e += kThreads) {
      const int n = e % kRed, pp = e / kRed;
      Ks[n][pp] = dst[pp * N + n0 + n];
    }
    __syncthreads();
#pragma unroll 8
    for (int n = 0; n < kRed; ++n) {
      float bv[4], dv[TP];
#pragma unroll
      for (int i = 0; i < 4; ++i) bv[i] = Ms[tt + 16 * i][n];
#pragma unroll
      for (int j = 0; j < TP; ++j) dv[j] = Ks[n][tp + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < TP; ++j) off[i][j] = fmaf(bv[i], dv[j], off[i][j]);
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float e = expf(static_cast<float>(cs_s[Q - 1] - cs_s[s_base + tt + 16 * i]));
#pragma unroll
    for (int j = 0; j < TP; ++j) off[i][j] *= e;
  }

  // Diagonal blocks: Σ_{t>=s} CB[t,s] exp(cs[t]-cs[s]) dy_t over the chunk's t >= s_base.
  const float* cb = p.cb + ((b * nc + c) * p.G + g) * Q * Q;
  for (int64_t t0 = s_base; t0 < Q && base + t0 < p.L; t0 += kRed) {
    __syncthreads();
    for (int e = tid; e < kTile * kRed; e += kThreads) {
      const int row = e / kRed, tc = e % kRed;
      const int64_t s = s_base + row, t = t0 + tc;
      float m = 0.f;
      if (t >= s && base + t < p.L) m = cb[t * Q + s] * expf(static_cast<float>(cs_s[t] - cs_s[s]));
      Ms[row][tc] = m;
    }
    for (int e = tid; e < kRed * P; e += kThreads) {
      const int t = e / P, pp = e % P;
      const int64_t pos = base + t0 + t;
      Ks[t][pp] = pos < p.L ? q.dy[((b * p.L + pos) * p.H + h) * P + pp] : 0.f;
    }
    __syncthreads();
#pragma unroll 8
    for (int t = 0; t < kRed; ++t) {
      float mv[4], yv[TP];
#pragma unroll
      for (int i = 0; i < 4; ++i) mv[i] = Ms[tt + 16 * i][t];
#pragma unroll
      for (int j = 0; j < TP; ++j) yv[j] = Ks[t][tp + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < TP; ++j) dg[i][j] = fmaf(mv[i], yv[j], dg[i][j]);
    }
  }

  const bool has_d = p.D.ptr != nullptr;
  const float Dh = has_d ? ldf(p.D.ptr, p.D.dtype, h * p.D.s0) : 0.f;
  double dD = 0.0;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t s = s_base + tt + 16 * i, pos = base + s;
    const bool valid = pos < p.L;
    double ddt = 0.0;
#pragma unroll
    for (int j = 0; j < TP; ++j) {
      const int pp = tp + 16 * j;
      const float dxt = dg[i][j] + off[i][j];  // dL/dx̃
      const float xv = valid ? ld_x(p, b, pos, h, pp) : 0.f;
      const float dyv = valid ? q.dy[((b * p.L + pos) * p.H + h) * P + pp] : 0.f;
      ddt += static_cast<double>(dxt) * xv;
      dD += static_cast<double>(dyv) * xv;
      if (valid) {
        float v = dxt * dt_s[s];
        if (has_d) v += Dh * dyv;
        q.dx[((b * p.L + pos) * p.H + h) * P + pp] = v;
      }
    }
    ddt = half_warp_sum(ddt);  // over the head's P columns
    if (tp == 0 && valid) q.ddt[(b * p.L + pos) * p.H + h] = static_cast<float>(ddt);
  }
  dD = block_sum_d(dD, red);
  if (tid == 0) q.dD_part[(b * p.H + h) * nc * nT + c * nT + si] = dD;
}

/// 9. dC (kIsC) or dB for a 64-row tile of a chunk and one group, looping over the group's heads;
///    per head the scalar dcs_off[t] (kIsC) or kst[s] for the dt/A path.
template <int P, int N, bool kIsC>
__global__ void __launch_bounds__(kThreads, 1) bwd_dbc_kernel(SsdScanBwdParams q) {
  const SsdScanFwdParams& p = q.f;
  __shared__ float As[kTile][kRed + 1];  // dCB tile (rows r, reduction over the chunk), then dy / x̃
  __shared__ float Bs[kRed][N];          // B_s / C_t rows, then Hin / dst rows
  __shared__ float dt_s[kTile];
  const int64_t Q = p.Q, nT = Q / kTile;
  const int64_t c = blockIdx.x / nT, ri = blockIdx.x % nT, g = blockIdx.y, b = blockIdx.z;
  const int64_t nc = gridDim.x / nT, hpg = p.H / p.G;
  const int64_t r_base = ri * kTile, base = c * Q;
  if (base + r_base >= p.L) return;
  const int tid = threadIdx.x, tn = tid % 16, tt = tid / 16;
  constexpr int TN = N / 16;
  float out[4][TN];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) out[i][j] = 0.f;

  // Group term: kIsC: Σ_{s<=t} dCB[t,s] B_s;  else: Σ_{t>=s} dCB[t,s] C_t.
  const float* dcb = q.dcb + ((b * nc + c) * p.G + g) * Q * Q;
  const int64_t k_lo = kIsC ? 0 : r_base, k_hi = kIsC ? r_base + kTile : Q;
  for (int64_t k0 = k_lo; k0 < k_hi && base + k0 < p.L; k0 += kRed) {
    __syncthreads();
    for (int e = tid; e < kTile * kRed; e += kThreads) {
      const int row = e / kRed, k = e % kRed;
      const int64_t r = r_base + row, o = k0 + k;  // o: the other position (s for dC, t for dB)
      float v = 0.f;
      if (kIsC ? o <= r : o >= r) v = kIsC ? dcb[r * Q + o] : dcb[o * Q + r];
      As[row][k] = v;
    }
    for (int e = tid; e < kRed * N; e += kThreads) {
      const int k = e / N, n = e % N;
      const int64_t pos = base + k0 + k;
      Bs[k][n] = pos < p.L ? (kIsC ? ld_B(p, b, pos, g, n) : ld_C(p, b, pos, g, n)) : 0.f;
    }
    __syncthreads();
#pragma unroll 4
    for (int k = 0; k < kRed; ++k) {
      float av[4], bv[TN];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = As[tt + 16 * i][k];
#pragma unroll
      for (int j = 0; j < TN; ++j) bv[j] = Bs[k][tn + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) out[i][j] = fmaf(av[i], bv[j], out[i][j]);
    }
  }

  // Head terms: kIsC: exp(cs[t]) dy_t Hin;  else: exp(cs[Q-1]-cs[s]) x̃_s dst.
  for (int64_t h = g * hpg; h < (g + 1) * hpg; ++h) {
    const double* cs = p.cs + (b * p.H + h) * ncQ(p) + base;
    const float* S = (kIsC ? p.states : q.dstates) + ((b * nc + c) * p.H + h) * P * N;
    float acc[4][TN];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;
    __syncthreads();  // dt_s of the previous head is no longer read
    if (!kIsC) {
      for (int i = tid; i < kTile; i += kThreads) {
        const int64_t pos = base + r_base + i;
        dt_s[i] = pos < p.L ? ld_dt(p, b, pos, h) : 0.f;
      }
    }
    for (int p0 = 0; p0 < P; p0 += kRed) {
      __syncthreads();
      for (int e = tid; e < kTile * kRed; e += kThreads) {
        const int row = e / kRed, k = e % kRed;
        const int64_t pos = base + r_base + row;
        float v = 0.f;
        if (pos < p.L) v = kIsC ? q.dy[((b * p.L + pos) * p.H + h) * P + p0 + k] : ld_x(p, b, pos, h, p0 + k) * dt_s[row];
        As[row][k] = v;
      }
      for (int e = tid; e < kRed * N; e += kThreads) {
        const int k = e / N, n = e % N;
        Bs[k][n] = S[(p0 + k) * N + n];
      }
      __syncthreads();
#pragma unroll 4
      for (int k = 0; k < kRed; ++k) {
        float av[4], bv[TN];
#pragma unroll
        for (int i = 0; i < 4; ++i) av[i] = As[tt + 16 * i][k];
#pragma unroll
        for (int j = 0; j < TN; ++j) bv[j] = Bs[k][tn + 16 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
      }
    }
    double* scal = (kIsC ? q.dcs_off : q.kst) + (b * p.H + h) * ncQ(p) + base;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t r = r_base + tt + 16 * i, pos = base + r;
      const float w = expf(static_cast<float>(kIsC ? cs[r] : cs[Q - 1] - cs[r]));
      double sc = 0.0;
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        const int n = tn + 16 * j;
        const float v = w * acc[i][j];
        out[i][j] += v;
        const float own = pos < p.L ? (kIsC ? ld_C(p, b, pos, g, n) : ld_B(p, b, pos, g, n)) : 0.f;
        sc += static_cast<double>(own) * v;
      }
      sc = half_warp_sum(sc);  // over N
      if (tn == 0) scal[r] = sc;
    }
  }
  float* dout = kIsC ? q.dC : q.dB;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t pos = base + r_base + tt + 16 * i;
    if (pos >= p.L) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) dout[((b * p.L + pos) * p.G + g) * N + tn + 16 * j] = out[i][j];
  }
}

/// 10. dL/da per position from the dcs pieces (fp64 suffix sums), then ddt += da A and the
///     per-chunk partial dA. One block per (chunk, head, batch).
template <int P, int N>  // (like every kernel here: a template, so that two .cu files may include it)
__global__ void __launch_bounds__(kThreads, 1) bwd_da_kernel(SsdScanBwdParams q) {
  const SsdScanFwdParams& p = q.f;
  __shared__ double dcs[kMaxQ];
  __shared__ double red[33];
  const int64_t Q = p.Q, nT = Q / kTile;
  const int64_t c = blockIdx.x, h = blockIdx.y, b = blockIdx.z, nc = gridDim.x, base = c * Q;
  const int tid = threadIdx.x;
  const int64_t bh = b * p.H + h;
  const int64_t part_base = ((bh * nc + c) * nT) * Q;
  for (int64_t t = tid; t < Q; t += kThreads) {
    const int64_t ti = t / kTile;
    double v = 0.0;
    for (int64_t si = 0; si <= ti; ++si) v += q.rowpart[part_base + si * Q + t];  // dseg[t, s<t]
    for (int64_t tj = ti; tj < nT; ++tj) v -= q.colpart[part_base + tj * Q + t];  // dseg[t'>t, t]
    const bool valid = base + t < p.L;
    v += valid ? q.dcs_off[bh * ncQ(p) + base + t] - q.kst[bh * ncQ(p) + base + t] : 0.0;
    dcs[t] = v;
  }
  __syncthreads();
  if (tid == 0) {
    double ksum = 0.0;
    for (int64_t s = 0; s < Q && base + s < p.L; ++s) ksum += q.kst[bh * ncQ(p) + base + s];
    dcs[Q - 1] += ksum + q.dS[bh * nc + c];
    double run = 0.0;
    for (int64_t r = Q - 1; r >= 0; --r) {
      run += dcs[r];
      dcs[r] = run;
    }
  }
  __syncthreads();
  const float A = ldf(p.A.ptr, p.A.dtype, h * p.A.s0);
  double dA = 0.0;
  for (int64_t r = tid; r < Q; r += kThreads) {
    const int64_t pos = base + r;
    if (pos >= p.L || (p.reset && p.reset[pos])) continue;  // a = −1e4 there: no dt/A gradient
    const float dtv = ld_dt(p, b, pos, h);
    float* ddt = q.ddt + (b * p.L + pos) * p.H + h;
    *ddt = static_cast<float>(static_cast<double>(*ddt) + dcs[r] * A);
    dA += dcs[r] * dtv;
  }
  dA = block_sum_d(dA, red);
  if (tid == 0) q.dA_part[bh * nc + c] = dA;
}

/// 11. dA[h] and dD[h]: fixed-order sums of the per-chunk / per-tile partials.
template <int P, int N>
__global__ void __launch_bounds__(kThreads, 1) bwd_reduce_kernel(SsdScanBwdParams q) {
  const SsdScanFwdParams& p = q.f;
  const int64_t h = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (h >= p.H) return;
  const int64_t nc = (p.L + p.Q - 1) / p.Q, nT = p.Q / kTile;
  double dA = 0.0, dD = 0.0;
  for (int64_t b = 0; b < p.B; ++b) {
    for (int64_t c = 0; c < nc; ++c) dA += q.dA_part[(b * p.H + h) * nc + c];
    for (int64_t k = 0; k < nc * nT && k * kTile < p.L; ++k) dD += q.dD_part[(b * p.H + h) * nc * nT + k];
  }
  q.dA[h] = static_cast<float>(dA);
  if (q.dD) q.dD[h] = static_cast<float>(dD);
}

PRISM_KERNEL_ABI_END
}  // namespace prism::kernels::ssm::scan

namespace prism::kernels::ssm::scan {
PRISM_KERNEL_ABI_BEGIN

// ------------------------------------------------------------------------- launch sequences

struct Grid {
  unsigned x = 1, y = 1, z = 1;
};

/// The forward launches in order. `launch(grid, kernel, args...)` runs kernel<<<grid, kThreads>>>
/// on the caller's stream (ssd_scan_fwd.cu) or through the block emulator (test_ssd_emu.cpp), so
/// both run the same sequence.
template <int P, int N, typename Launch>
void forward_launches(const SsdScanFwdParams& p, Launch&& launch) {
  const int64_t nc = (p.L + p.Q - 1) / p.Q, nT = p.Q / kTile;
  const auto B = static_cast<unsigned>(p.B), H = static_cast<unsigned>(p.H), G = static_cast<unsigned>(p.G);
  launch(Grid{static_cast<unsigned>(nc), H, B}, chunk_state_kernel<P, N>, p);
  launch(Grid{static_cast<unsigned>(nc * nT * nT), G, B}, chunk_cb_kernel<N>, p);
  launch(Grid{static_cast<unsigned>((P * N + kThreads - 1) / kThreads), H, B}, state_passing_kernel<P, N>, p, nc);
}

template <int P, int N, typename Launch>
void forward_output_launch(const SsdScanFwdParams& p, Launch&& launch) {
  const int64_t nc = (p.L + p.Q - 1) / p.Q, nT = p.Q / kTile;
  launch(Grid{static_cast<unsigned>(nc * nT), static_cast<unsigned>(p.H), static_cast<unsigned>(p.B)},
         chunk_scan_kernel<P, N>, p);
}

/// The backward launches in order: launches 1-3 of the forward rebuild cs, CB and Hin, then 5-11.
template <int P, int N, typename Launch>
void backward_launches(const SsdScanBwdParams& q, Launch&& launch) {
  const SsdScanFwdParams& p = q.f;
  forward_launches<P, N>(p, launch);
  const int64_t nc = (p.L + p.Q - 1) / p.Q, nT = p.Q / kTile;
  const auto B = static_cast<unsigned>(p.B), H = static_cast<unsigned>(p.H), G = static_cast<unsigned>(p.G);
  launch(Grid{static_cast<unsigned>(nc), H, B}, bwd_dstate_kernel<P, N>, q);
  launch(Grid{H, B, 1}, bwd_state_passing_kernel<P, N>, q, nc);
  launch(Grid{static_cast<unsigned>(nc * nT * nT), G, B}, bwd_dcb_kernel<P>, q);
  launch(Grid{static_cast<unsigned>(nc * nT), H, B}, bwd_dx_kernel<P, N>, q);
  launch(Grid{static_cast<unsigned>(nc * nT), G, B}, bwd_dbc_kernel<P, N, true>, q);
  launch(Grid{static_cast<unsigned>(nc * nT), G, B}, bwd_dbc_kernel<P, N, false>, q);
  launch(Grid{static_cast<unsigned>(nc), H, B}, bwd_da_kernel<P, N>, q);
  launch(Grid{static_cast<unsigned>((p.H + kThreads - 1) / kThreads), 1, 1}, bwd_reduce_kernel<P, N>, q);
}

PRISM_KERNEL_ABI_END
}  // namespace prism::kernels::ssm::scan
