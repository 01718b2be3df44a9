// Depthwise causal conv1d + SiLU of the Mamba2 mixer, forward and backward, with document resets.
//
// Layout: one thread per (channel, tile of time); a block is 128 consecutive channels of one
// tile, so with the mixer's channel-last activations (x is a transposed [B, L, C] view) every time
// step is one coalesced row read. Each thread keeps the K-1 previous inputs in registers and
// re-reads only K-1 halo inputs per tile. The same kernel with L == 1 and an initial state is the
// decode step (conv-state update): out = conv([state | x]), final_state = the last K-1 inputs.
//
// Numerics follow src/ops/causal_conv1d_ref.cpp: fp32 accumulation (taps in order, then bias),
// one rounding to x's dtype, SiLU of the rounded value in fp32, rounded again. Backward treats
// the roundings as identity (as autograd of the reference does) and recomputes the forward.
// Weight and bias gradients are per-tile partial sums (deterministic; the binding sums them).
//
// Document resets: tap j of token t reads position t-(K-1)+j and is dropped when that lies before
// the token's document start (> 0); the document of a position is tracked from cu_seqlens by a
// binary search at the tile start and a forward walk.
//
// Device code only (host launchers: causal_conv1d.cu), written against common/device_compat.cuh
// so that tests/ops/test_causal_conv1d_emu.cpp runs these exact bodies on a CPU.
#pragma once

#include "../common/kernel_abi.h"

#include <cmath>
#include <cstdint>

#include "../common/device_compat.cuh"
#include "../ssd/ssm_device.cuh"
#include "causal_conv1d_params.h"

namespace prism::kernels::causal_conv1d {
PRISM_KERNEL_ABI_BEGIN

using dev::from_f;
using dev::to_f;
using ssm::CausalConv1dBwdParams;
using ssm::CausalConv1dFwdParams;
using ssm::kConvBwdTile;
using ssm::kConvFwdTile;
using ssm::kConvThreads;

// silu and its derivative: the Mamba2 kernels' shared helpers (ssd/ssm_device.cuh).
using ssm::dsiluf_;
using ssm::siluf_;

/// Largest i in [0, n-2] with cu[i] <= t (the document of position t; skips empty documents).
__device__ __forceinline__ int find_doc(const int64_t* cu, int n, int64_t t) {
  int lo = 0, hi = n - 2;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (cu[mid] <= t) lo = mid; else hi = mid - 1;
  }
  return lo;
}

/// Document start of successive positions t (non-decreasing), without cu_seqlens: 0.
struct DocWalker {
  const int64_t* cu;
  int n, i;
  int64_t start, next;
  __device__ DocWalker(const int64_t* cu_, int n_, int64_t t) : cu(cu_), n(n_), i(0), start(0), next(INT64_MAX) {
    if (cu) {
      i = find_doc(cu, n, t);
      start = cu[i];
      next = i + 1 < n - 1 ? cu[i + 1] : INT64_MAX;
    }
  }
  __device__ __forceinline__ int64_t at(int64_t t) {
    while (t >= next) {
      ++i;
      start = cu[i];
      next = i + 1 < n - 1 ? cu[i + 1] : INT64_MAX;
    }
    return start;
  }
};

/// Raw input at position pos of channel c (pos < 0: the initial state or zero).
template <typename T>
__device__ __forceinline__ float raw_in(const T* xb, int64_t sl, const float* initc, int K, int64_t pos) {
  if (pos >= 0) return to_f(xb[pos * sl]);
  return initc ? initc[K - 1 + pos] : 0.f;
}

/// Grid (ceil(C / kConvThreads), ceil(L / kConvFwdTile), B), block kConvThreads.
template <typename T, int K>
__global__ void __launch_bounds__(kConvThreads) conv_fwd_kernel(CausalConv1dFwdParams p) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kConvThreads + threadIdx.x;
  const int64_t b = blockIdx.z;
  if (c >= p.C) return;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kConvFwdTile;
  const int64_t t1 = t0 + kConvFwdTile < p.L ? t0 + kConvFwdTile : p.L;
  const T* xb = static_cast<const T*>(p.x) + b * p.x_sb + c * p.x_sc;
  T* ob = static_cast<T*>(p.out) + b * p.o_sb + c * p.o_sc;
  const float* initc = p.init ? p.init + (b * p.C + c) * (K - 1) : nullptr;
  float w[K];
#pragma unroll
  for (int j = 0; j < K; ++j) w[j] = p.w[c * K + j];
  const float bias = p.bias ? p.bias[c] : 0.f;
  float win[K];  // win[j]: raw input at t-(K-1)+j; win[K-1] is the current token
#pragma unroll
  for (int j = 0; j < K - 1; ++j) win[j] = raw_in(xb, p.x_sl, initc, K, t0 - (K - 1) + j);
  DocWalker docs(p.cu_seqlens, p.num_cu, t0);
#pragma unroll 4
  for (int64_t t = t0; t < t1; ++t) {
    win[K - 1] = to_f(xb[t * p.x_sl]);
    const int64_t s0 = docs.at(t);
    float acc = 0.f;
#pragma unroll
    for (int j = 0; j < K; ++j) {
      const bool drop = s0 > 0 && t - (K - 1) + j < s0;
      acc = j == 0 ? (drop ? 0.f : w[0] * win[0]) : (drop ? acc : fmaf(w[j], win[j], acc));
    }
    acc += bias;
    float v = to_f(from_f<T>(acc));  // the conv's single rounding
    if (p.silu) v = siluf_(v);
    ob[t * p.o_sl] = from_f<T>(v);
#pragma unroll
    for (int j = 0; j < K - 1; ++j) win[j] = win[j + 1];
  }
  if (p.final_state && t1 == p.L) {
    // The last K-1 inputs; those before the last document's start (> 0) belong to another one.
    const int64_t s_last = p.L > 0 ? docs.at(p.L - 1) : 0;
    T* fs = static_cast<T*>(p.final_state) + (b * p.C + c) * (K - 1);
    for (int k = 0; k < K - 1; ++k) {
      const int64_t pos = p.L - (K - 1) + k;
      const float v = (s_last > 0 && pos < s_last) ? 0.f : raw_in(xb, p.x_sl, initc, K, pos);
      fs[k] = from_f<T>(v);
    }
  }
}

/// Grid (ceil(C / kConvThreads), conv_bwd_num_tiles(L), B), block kConvThreads.
template <typename T, int K>
__global__ void __launch_bounds__(kConvThreads) conv_bwd_kernel(CausalConv1dBwdParams q) {
  const CausalConv1dFwdParams& p = q.f;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kConvThreads + threadIdx.x;
  const int64_t b = blockIdx.z;
  if (c >= p.C) return;
  const int64_t tile = blockIdx.y, ntiles = gridDim.y;
  const int64_t t0 = tile * kConvBwdTile;
  const int64_t t1 = t0 + kConvBwdTile < p.L ? t0 + kConvBwdTile : p.L;
  const T* xb = static_cast<const T*>(p.x) + b * p.x_sb + c * p.x_sc;
  const T* gb = static_cast<const T*>(q.dout) + b * q.g_sb + c * q.g_sc;
  T* dxb = static_cast<T*>(q.dx) + b * q.dx_sb + c * q.dx_sc;
  const float* initc = p.init ? p.init + (b * p.C + c) * (K - 1) : nullptr;
  float w[K];
#pragma unroll
  for (int j = 0; j < K; ++j) w[j] = p.w[c * K + j];
  const float bias = p.bias ? p.bias[c] : 0.f;
  float win[K];
#pragma unroll
  for (int j = 0; j < K - 1; ++j) win[j] = raw_in(xb, p.x_sl, initc, K, t0 - (K - 1) + j);
  float gw[K];    // gw[j] = d pre-activation at output t-j (0 outside [t0, L))
  int64_t sw[K];  // sw[j] = document start of output t-j
#pragma unroll
  for (int j = 0; j < K; ++j) { gw[j] = 0.f; sw[j] = 0; }
  float dw[K];
#pragma unroll
  for (int j = 0; j < K; ++j) dw[j] = 0.f;
  float db = 0.f;
  DocWalker docs(p.cu_seqlens, p.num_cu, t0);
  const int64_t t_end = t1 + K - 1;  // outputs up to t1+K-2 feed the inputs of this tile
  for (int64_t t = t0; t < t_end; ++t) {
#pragma unroll
    for (int j = K - 1; j > 0; --j) { gw[j] = gw[j - 1]; sw[j] = sw[j - 1]; }
    if (t < p.L) {
      win[K - 1] = to_f(xb[t * p.x_sl]);
      const int64_t s0 = docs.at(t);
      float tap[K];
      float acc = 0.f;
#pragma unroll
      for (int j = 0; j < K; ++j) {
        const bool drop = s0 > 0 && t - (K - 1) + j < s0;
        tap[j] = drop ? 0.f : win[j];
        acc = j == 0 ? w[0] * tap[0] : fmaf(w[j], tap[j], acc);
      }
      acc += bias;
      const float g = to_f(gb[t * q.g_sl]);
      const float d = p.silu ? g * dsiluf_(to_f(from_f<T>(acc))) : g;
      gw[0] = d;
      sw[0] = s0;
      if (t < t1) {
        db += d;
#pragma unroll
        for (int j = 0; j < K; ++j) dw[j] = fmaf(d, tap[j], dw[j]);
      }
#pragma unroll
      for (int j = 0; j < K - 1; ++j) win[j] = win[j + 1];
    } else {
      gw[0] = 0.f;
      sw[0] = 0;
    }
    // Input position i = t-(K-1) is tap j of output t-j for j = 0..K-1: all known now.
    const int64_t i = t - (K - 1);
    if (i >= t0 && i < t1) {
      float s = 0.f;
#pragma unroll
      for (int j = 0; j < K; ++j) s = (sw[j] > 0 && i < sw[j]) ? s : fmaf(gw[j], w[j], s);
      dxb[i * q.dx_sl] = from_f<T>(s);
    } else if (i < 0 && t0 == 0 && q.dinit) {
      float s = 0.f;
#pragma unroll
      for (int j = 0; j < K; ++j) s = sw[j] > 0 ? s : fmaf(gw[j], w[j], s);
      q.dinit[(b * p.C + c) * (K - 1) + (K - 1 + i)] = s;
    }
  }
  const int64_t row = b * ntiles + tile;
#pragma unroll
  for (int j = 0; j < K; ++j) q.dw_partial[(row * p.C + c) * K + j] = dw[j];
  if (q.db_partial) q.db_partial[row * p.C + c] = db;
}

PRISM_KERNEL_ABI_END
}  // namespace prism::kernels::causal_conv1d
