// Chunked Mamba2 SSD scan, forward (the SSD algorithm of architectures.md §2.4; same math and
// operation order as src/ops/ssd_scan_ref.cpp), in four launches like mamba_ssm's Triton path:
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
// Why fp64 for cs: every decay is exp(cs[t] − cs[s]); in fp32 the difference of two prefix sums
// loses |cs| · 2^-24 (HF's exp(A_cumsum[-1] − A_cumsum) problem, fatal after a −1e4 reset); in
// fp64 the difference is exact to fp32 precision, at Q^2 fp64 subtractions per (chunk, head).
// Why fp32 SIMT and no tensor cores: the accuracy bar is "≤ 2x the error of the fp32 reference";
// tf32/bf16 MMA inputs would be ~10^3 times worse. Tiles: 256 threads as 16x16, each thread a
// (rows/16) x (cols/16) register tile over shared-memory operand tiles of 32 along the reduction.
#include <cuda_runtime.h>

#include "ssd/ssd_params.h"
#include "ssd/ssm_device.cuh"

namespace prism::kernels::ssm {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxQ = 256;
constexpr int kTile = 64;  // rows (t) of a chunk_scan / chunk_cb tile
constexpr int kRed = 32;   // reduction tile
constexpr float kResetLogDecay = -1e4f;

__device__ __forceinline__ int64_t ncQ(const SsdScanFwdParams& p) { return (p.L + p.Q - 1) / p.Q * p.Q; }

template <int P, int N>
__global__ void __launch_bounds__(kThreads) chunk_state_kernel(SsdScanFwdParams p) {
  __shared__ double cs_s[kMaxQ];
  __shared__ float dt_s[kMaxQ];
  __shared__ float dec_s[kMaxQ];
  __shared__ float Xs[kRed][P];
  __shared__ float Bs[kRed][N];
  const int64_t c = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t nc = gridDim.x, Q = p.Q, g = h / (p.H / p.G);
  const int64_t base = c * Q;
  const int tid = threadIdx.x;
  const float A = ld(p.A.ptr, p.A.dtype, h * p.A.s0);
  for (int s = tid; s < Q; s += kThreads) {
    const int64_t pos = base + s;
    float dtv = 0.f, a = 0.f;
    if (pos < p.L) {
      dtv = ld(p.dt.ptr, p.dt.dtype, b * p.dt.s0 + pos * p.dt.s1 + h * p.dt.s2);
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
      if (pos < p.L) v = (ld(p.x.ptr, p.x.dtype, b * p.x.s0 + pos * p.x.s1 + h * p.x.s2 + pp) * dt_s[s0 + s]) * dec_s[s0 + s];
      Xs[s][pp] = v;
    }
    for (int e = tid; e < kRed * N; e += kThreads) {
      const int s = e / N, n = e % N;
      const int64_t pos = base + s0 + s;
      Bs[s][n] = pos < p.L ? ld(p.Bm.ptr, p.Bm.dtype, b * p.Bm.s0 + pos * p.Bm.s1 + g * p.Bm.s2 + n) : 0.f;
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
__global__ void __launch_bounds__(kThreads) chunk_cb_kernel(SsdScanFwdParams p) {
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
      Cs[row][n] = pt < p.L ? ld(p.Cm.ptr, p.Cm.dtype, b * p.Cm.s0 + pt * p.Cm.s1 + g * p.Cm.s2 + n0 + n) : 0.f;
      Bs[row][n] = ps < p.L ? ld(p.Bm.ptr, p.Bm.dtype, b * p.Bm.s0 + ps * p.Bm.s1 + g * p.Bm.s2 + n0 + n) : 0.f;
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

__global__ void __launch_bounds__(kThreads) state_passing_kernel(SsdScanFwdParams p, int64_t nc) {
  const int64_t PN = p.P * p.N;
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
__global__ void __launch_bounds__(kThreads) chunk_scan_kernel(SsdScanFwdParams p) {
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
    dt_s[s] = pos < p.L ? ld(p.dt.ptr, p.dt.dtype, b * p.dt.s0 + pos * p.dt.s1 + h * p.dt.s2) : 0.f;
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
      Cs[row][n] = pos < p.L ? ld(p.Cm.ptr, p.Cm.dtype, b * p.Cm.s0 + pos * p.Cm.s1 + g * p.Cm.s2 + n0 + n) : 0.f;
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
      Ks[s][pp] = pos < p.L ? ld(p.x.ptr, p.x.dtype, b * p.x.s0 + pos * p.x.s1 + h * p.x.s2 + pp) * dt_s[s0 + s] : 0.f;
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

  const float Dh = p.D.ptr ? ld(p.D.ptr, p.D.dtype, h * p.D.s0) : 0.f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t pos = base + t_base + tt + 16 * i;
    if (pos >= p.L) continue;
#pragma unroll
    for (int j = 0; j < TP; ++j) {
      const int pp = tp + 16 * j;
      float v = dg[i][j] + off[i][j];
      if (p.D.ptr) v += Dh * ld(p.x.ptr, p.x.dtype, b * p.x.s0 + pos * p.x.s1 + h * p.x.s2 + pp);
      p.y[((b * p.L + pos) * p.H + h) * P + pp] = v;
    }
  }
}

template <int P, int N>
int launch_all(const SsdScanFwdParams& p, cudaStream_t s) {
  const int64_t nc = (p.L + p.Q - 1) / p.Q, nT = p.Q / kTile;
  const auto B = static_cast<unsigned>(p.B), H = static_cast<unsigned>(p.H), G = static_cast<unsigned>(p.G);
  chunk_state_kernel<P, N><<<dim3(static_cast<unsigned>(nc), H, B), kThreads, 0, s>>>(p);
  chunk_cb_kernel<N><<<dim3(static_cast<unsigned>(nc * nT * nT), G, B), kThreads, 0, s>>>(p);
  state_passing_kernel<<<dim3(static_cast<unsigned>((P * N + kThreads - 1) / kThreads), H, B), kThreads, 0, s>>>(p,
                                                                                                                nc);
  chunk_scan_kernel<P, N><<<dim3(static_cast<unsigned>(nc * nT), H, B), kThreads, 0, s>>>(p);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

bool ssd_scan_supported(int64_t P, int64_t N, int64_t Q) {
  return P == 64 && (N == 64 || N == 128) && Q % kTile == 0 && Q >= kTile && Q <= kMaxQ;
}

int ssd_scan_fwd(const SsdScanFwdParams& p, void* stream) {
  if (p.L == 0 || p.B == 0 || p.H == 0) return 0;
  if (!ssd_scan_supported(p.P, p.N, p.Q) || p.G <= 0 || p.H % p.G != 0 || p.B > 65535 || p.H > 65535)
    return static_cast<int>(cudaErrorInvalidValue);
  auto s = static_cast<cudaStream_t>(stream);
  if (p.N == 64) return launch_all<64, 64>(p, s);
  return launch_all<64, 128>(p, s);
}

}  // namespace prism::kernels::ssm
