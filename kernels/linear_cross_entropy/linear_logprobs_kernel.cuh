// Per-row log-prob and entropy of one token chunk of linear_logprobs, and their backward, each one
// pass over the chunk's logits (src/ops/linear_logprobs.cpp computes the logits with cuBLAS, in
// forward and again in backward, and feeds what the backward kernel leaves in their place into the
// two gradient GEMMs). Sibling of linear_cross_entropy_kernel.cuh (same block shape and vector
// access); cross-entropy has its gradient fixed at forward time, these take any per-row upstream
// gradient in backward.
//
// z = x * logit_scale, with logit_scale = 1 / (logits_scaling * temperature) applied in fp32.
//
// Forward, one block per row, one read: an online (m, s, t) per thread with m the running max,
// s = sum_j e^(z_j - m), t = sum_j e^(z_j - m) (z_j - m), merged over threads by re-basing on the
// larger max; then lse = m + log s, logprob = z[label] - lse and the entropy
//   H = -sum_j p_j log p_j = log s - t / s.
// Written relative to the max, H never subtracts two numbers of the size of the logits (lse -
// sum p z would lose |z| * 2^-24 to cancellation).
//
// Backward, one block per row, one read + one write, no reduction (lse and H come from forward):
//   d/dx_j = logit_scale * (g_lp [j == label] - p_j (g_lp + g_H (log p_j + H))),
// from d logprob / dz_j = [j == label] - p_j and dH / dz_j = -p_j (log p_j + H).
//
// Ignored rows (ignore_index, or a label outside [0, V)): zero statistics, zero gradient row.
//
// Device code only (host launcher: linear_logprobs.cu), written against common/device_compat.cuh
// so that tests/ops/test_linear_logprobs_emu.cpp runs these exact bodies on a CPU.
#pragma once

#include "../common/kernel_abi.h"

#include <cmath>
#include <cstdint>

#include "../common/block_reduce.cuh"
#include "../common/device_compat.cuh"
#include "linear_cross_entropy_kernel.cuh"

namespace prism::kernels::llp {
PRISM_KERNEL_ABI_BEGIN

using dev::from_f;
using dev::to_f;
using dev::Vec;
using dev::vec_width;
using lce::kMaxThreads;
using lce::threads_for;

// Running statistics of a set of values z relative to their max m: s = sum e^(z - m),
// t = sum e^(z - m) (z - m). Empty: {-inf, 0, 0}.
struct Stats {
  float m;
  float s;
  float t;
};

// `a` expressed relative to a max m >= a.m: each z - a.m becomes (z - a.m) + (a.m - m).
__device__ __forceinline__ Stats rebase(Stats a, float m) {
  if (a.m == -INFINITY) return {m, a.s, a.t};  // empty (s = t = 0) unless it saw a NaN, which s keeps
  const float d = a.m - m;
  const float e = expf(d);
  return {m, a.s * e, e * (a.t + d * a.s)};
}

__device__ __forceinline__ Stats merge(Stats a, Stats b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return {m, a.s + b.s, a.t + b.t};
  const Stats ra = rebase(a, m), rb = rebase(b, m);
  return {m, ra.s + rb.s, ra.t + rb.t};
}

// One value z into running statistics whose max is already >= z (and finite).
__device__ __forceinline__ void add(Stats& acc, float z) {
  const float d = z - acc.m;
  const float e = expf(d);
  acc.s += e;
  acc.t += e == 0.f ? 0.f : e * d;  // z = -inf: contributes nothing (0 * -inf would be NaN)
}

// Block-wide merge; every thread gets the result. sm / ss / st hold 32 floats each.
__device__ __forceinline__ Stats block_merge(Stats v, float* sm, float* ss, float* st) {
  for (int off = 16; off > 0; off >>= 1) {
    const Stats o{__shfl_xor_sync(0xffffffffu, v.m, off), __shfl_xor_sync(0xffffffffu, v.s, off),
                  __shfl_xor_sync(0xffffffffu, v.t, off)};
    v = merge(v, o);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sm[warp] = v.m;
    ss[warp] = v.s;
    st[warp] = v.t;
  }
  __syncthreads();
  const int num_warps = (blockDim.x + 31) >> 5;
  Stats r{-INFINITY, 0.f, 0.f};
  for (int k = 0; k < num_warps; ++k) r = merge(r, Stats{sm[k], ss[k], st[k]});  // same order in every thread
  return r;
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kMaxThreads)
    linear_logprobs_fwd_kernel(const T* __restrict__ logits, const int64_t* __restrict__ labels,
                               float* __restrict__ logprob, float* __restrict__ entropy, float* __restrict__ lse_out,
                               int64_t vocab, int64_t ignore_index, float scale) {
  using V = Vec<T, VEC>;
  __shared__ float sm[32], ss[32], st[32];
  __shared__ float label_logit;
  const int64_t row = blockIdx.x;
  const int64_t nvec = vocab / VEC;
  const V* xr = reinterpret_cast<const V*>(logits + row * vocab);
  const int64_t y = labels[row];
  const bool keep = y != ignore_index && y >= 0 && y < vocab;  // uniform over the block
  if (!keep) {
    if (threadIdx.x == 0) {
      logprob[row] = 0.f;
      entropy[row] = 0.f;
      lse_out[row] = 0.f;
    }
    return;
  }
  if (threadIdx.x == 0) label_logit = to_f(logits[row * vocab + y]) * scale;

  Stats acc{-INFINITY, 0.f, 0.f};
#pragma unroll 4
  for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
    const V a = xr[i];
    float z[VEC];
    float mv = -INFINITY;
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      z[e] = to_f(a.v[e]) * scale;
      mv = fmaxf(mv, z[e]);
    }
    if (mv > acc.m) acc = rebase(acc, mv);
    if (acc.m != -INFINITY) {
#pragma unroll
      for (int e = 0; e < VEC; ++e) add(acc, z[e]);
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc.s += z[e] != z[e] ? z[e] : 0.f;  // keep NaN visible
    }
  }
  const Stats tot = block_merge(acc, sm, ss, st);  // contains a barrier: label_logit is visible after it
  if (threadIdx.x == 0) {
    const float log_s = logf(tot.s);
    const float lse = tot.m + log_s;
    logprob[row] = label_logit - lse;
    entropy[row] = log_s - tot.t / tot.s;
    lse_out[row] = lse;
  }
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kMaxThreads)
    linear_logprobs_bwd_kernel(T* __restrict__ logits, const int64_t* __restrict__ labels,
                               const float* __restrict__ lse, const float* __restrict__ entropy,
                               const float* __restrict__ grad_logprob, const float* __restrict__ grad_entropy,
                               int64_t vocab, int64_t ignore_index, float scale) {
  using V = Vec<T, VEC>;
  const int64_t row = blockIdx.x;
  const int64_t nvec = vocab / VEC;
  V* xr = reinterpret_cast<V*>(logits + row * vocab);
  const int64_t y = labels[row];
  const bool keep = y != ignore_index && y >= 0 && y < vocab;
  if (!keep) {
    V zero;
#pragma unroll
    for (int e = 0; e < VEC; ++e) zero.v[e] = from_f<T>(0.f);
    for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) xr[i] = zero;
    return;
  }
  const float gl = grad_logprob != nullptr ? grad_logprob[row] : 0.f;
  const float gh = grad_entropy != nullptr ? grad_entropy[row] : 0.f;
  const float l = lse[row], h = entropy[row];
#pragma unroll 4
  for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
    const V a = xr[i];
    V g;
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const float logp = to_f(a.v[e]) * scale - l;
      float d = -expf(logp) * (gl + gh * (logp + h));
      if (i * VEC + e == y) d += gl;
      g.v[e] = from_f<T>(d * scale);
    }
    xr[i] = g;
  }
}

PRISM_KERNEL_ABI_END
}  // namespace prism::kernels::llp
