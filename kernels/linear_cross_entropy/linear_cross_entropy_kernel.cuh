// Cross-entropy of one token chunk of linear_cross_entropy, fused into one pass over the chunk's
// logits (src/ops/linear_cross_entropy.cpp computes them with cuBLAS and feeds the gradient this
// kernel leaves in their place straight into the two gradient GEMMs).
//
// One block per row. Read 1: an online max / sum-of-exp in fp32 (each thread keeps (m, s) and
// rescales s when its max grows; threads are merged with the same rule), plus the label's logit;
// lse = m + log(s). Read 2 + write (write_grad): the gradient of loss + z_loss, in place
//   d/dx_j = grad_scale * logit_scale * (p_j * (1 + 2 w lse) - [j == label]),  p_j = exp(z_j - lse),
// z_j = x_j * logit_scale: the scaling of Granite (logits / logits_scaling) happens here in fp32,
// not as a rounded bf16 division. Ignored rows get loss = lse = 0 and a zero gradient row.
//
// Memory traffic per element: 2 bytes read (stats) + 2 read + 2 written (gradient) in bf16; a
// 128K-vocab row (256 KB) does not stay in L1, so read 2 comes mostly from L2/HBM.
//
// Device code only (host launcher: linear_cross_entropy.cu), written against
// common/device_compat.cuh so that tests/ops/test_linear_cross_entropy_emu.cpp runs these exact
// bodies on a CPU.
#pragma once

#include "../common/kernel_abi.h"

#include <cmath>
#include <cstdint>

#include "../common/block_reduce.cuh"
#include "../common/device_compat.cuh"

namespace prism::kernels::lce {
PRISM_KERNEL_ABI_BEGIN

using dev::from_f;
using dev::to_f;


constexpr int kMaxThreads = 512;

using dev::Vec;
using dev::vec_width;

// Running (max, sum of exp(z - max)) of a set of values.
struct MaxSum {
  float m;
  float s;
};

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return {m, a.s + b.s};  // both empty (0), unless a NaN was seen
  // expf(-inf) = 0 covers an empty side; a NaN anywhere propagates through s.
  return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

// Block-wide merge; every thread gets the result. `sm`/`ss` hold 32 floats each.
__device__ __forceinline__ MaxSum block_merge(MaxSum v, float* sm, float* ss) {
  for (int off = 16; off > 0; off >>= 1) {
    MaxSum o{__shfl_xor_sync(0xffffffffu, v.m, off), __shfl_xor_sync(0xffffffffu, v.s, off)};
    v = merge(v, o);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sm[warp] = v.m;
    ss[warp] = v.s;
  }
  __syncthreads();
  const int num_warps = (blockDim.x + 31) >> 5;
  MaxSum r{-INFINITY, 0.f};
  for (int k = 0; k < num_warps; ++k) r = merge(r, MaxSum{sm[k], ss[k]});  // same order in every thread
  return r;
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kMaxThreads)
    linear_ce_chunk_kernel(T* __restrict__ logits, const int64_t* __restrict__ labels, float* __restrict__ loss,
                           float* __restrict__ lse_out, int64_t vocab, int64_t ignore_index, float scale,
                           float z_weight, float grad_scale, bool write_grad) {
  using V = Vec<T, VEC>;
  __shared__ float sm[32], ss[32];
  __shared__ float label_logit;
  const int64_t row = blockIdx.x;
  const int64_t nvec = vocab / VEC;
  V* xr = reinterpret_cast<V*>(logits + row * vocab);
  const int64_t y = labels[row];
  const bool keep = y != ignore_index && y >= 0 && y < vocab;  // uniform over the block
  if (!keep) {
    if (threadIdx.x == 0) {
      loss[row] = 0.f;
      lse_out[row] = 0.f;
    }
    if (write_grad) {
      V zero;
#pragma unroll
      for (int e = 0; e < VEC; ++e) zero.v[e] = from_f<T>(0.f);
      for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) xr[i] = zero;
    }
    return;
  }
  if (threadIdx.x == 0) label_logit = to_f(logits[row * vocab + y]) * scale;  // read before anyone writes

  MaxSum acc{-INFINITY, 0.f};
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
    if (mv > acc.m) {
      acc.s *= expf(acc.m - mv);  // expf(-inf) = 0 on the first vector
      acc.m = mv;
    }
    if (acc.m != -INFINITY) {
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc.s += expf(z[e] - acc.m);
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc.s += z[e] != z[e] ? z[e] : 0.f;  // keep NaN visible
    }
  }
  const MaxSum tot = block_merge(acc, sm, ss);  // contains a barrier: label_logit is visible after it
  const float lse = tot.m + logf(tot.s);
  if (threadIdx.x == 0) {
    loss[row] = lse - label_logit;
    lse_out[row] = lse;
  }
  if (!write_grad) return;
  const float coef = grad_scale * scale * (1.f + 2.f * z_weight * lse);
  const float hot = grad_scale * scale;
#pragma unroll 4
  for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
    const V a = xr[i];
    V g;
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      float d = coef * expf(to_f(a.v[e]) * scale - lse);
      if (i * VEC + e == y) d -= hot;
      g.v[e] = from_f<T>(d);
    }
    xr[i] = g;
  }
}

inline int threads_for(int64_t vocab) {
  // About 16 elements per thread and read, at most kMaxThreads.
  int64_t t = (vocab / 16 + 31) / 32 * 32;
  if (t < 32) t = 32;
  if (t > kMaxThreads) t = kMaxThreads;
  return static_cast<int>(t);
}

PRISM_KERNEL_ABI_END
}  // namespace prism::kernels::lce
