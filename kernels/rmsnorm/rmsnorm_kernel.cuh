// Fused RMSNorm forward and backward, fp32 statistics, transformers' cast order
// (architectures.md §1.1): n = x * rsqrt(mean(x^2) + eps) is rounded to the input dtype first,
// then multiplied by the weight in that dtype (computed in fp32 and rounded once, as PyTorch's
// bf16/fp16 elementwise ops do). Held to src/ops/rmsnorm_ref.cpp (and float64) by
// tests/ops/test_rmsnorm_cuda.cpp (GPU only).
//
// Backward of out = w * cast(n32), n32 = x32 * r, r = (mean(x32^2) + eps)^-1/2, with the cast's
// gradient taken as the identity (what autograd does for .to(dtype)):
//   g      = dy * w                                   (fp32, per element)
//   dx     = r * (g - n32 * mean(g * n32))            (fp32, rounded once to the dtype)
//   dw[c]  = sum over rows of dy * cast(n32)          (the value the forward multiplied)
// r comes from the forward (`rstd`, 4 bytes per row) instead of being recomputed.
//
// Weight gradient without atomics: the backward grid is a fixed number of blocks G (a function of
// the shape and the device only), each block walks rows b, b+G, ... and keeps a private fp32
// column accumulator in shared memory; the G partial rows are then summed in a fixed order by a
// second small kernel. Same inputs, same device => same bits.
//
// Layout: rows are read as 16-byte vectors when the row length and the pointers allow it (VEC
// elements per load), otherwise element by element (VEC = 1). Each block reads its row twice
// (statistics, then output); the second read hits L1/L2.
//
// Device code only (host launchers: rmsnorm.cu), written against common/device_compat.cuh so that
// tests/ops/test_rmsnorm_emu.cpp runs these exact bodies on a CPU.
#pragma once

#include "../common/kernel_abi.h"

#include <cmath>
#include <cstdint>

#include "../common/block_reduce.cuh"
#include "../common/device_compat.cuh"

namespace prism::kernels::rmsnorm {
PRISM_KERNEL_ABI_BEGIN

using dev::from_f;
using dev::to_f;

constexpr int kMaxThreads = 512;

using dev::block_sum;
using dev::Vec;
using dev::vec_width;

// One block per row.
template <typename T, int VEC>
__global__ void __launch_bounds__(kMaxThreads)
    rms_norm_fwd_kernel(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ out,
                        float* __restrict__ rstd, int64_t cols, float eps) {
  using V = Vec<T, VEC>;
  __shared__ float scratch[33];
  const int64_t row = blockIdx.x;
  const int64_t nvec = cols / VEC;
  const V* xr = reinterpret_cast<const V*>(x + row * cols);
  const V* wv = reinterpret_cast<const V*>(w);
  V* orow = reinterpret_cast<V*>(out + row * cols);
  float acc = 0.f;
  for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
    const V a = xr[i];
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const float f = to_f(a.v[e]);
      acc += f * f;
    }
  }
  // 1/sqrt rather than rsqrtf: both roundings are correct, rsqrtf's approximation is not.
  const float r = 1.f / sqrtf(block_sum(acc, scratch) / static_cast<float>(cols) + eps);
  if (rstd != nullptr && threadIdx.x == 0) rstd[row] = r;
  for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
    const V a = xr[i];
    const V b = wv[i];
    V o;
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const T n = from_f<T>(to_f(a.v[e]) * r);  // round to the input dtype first (HF order)
      o.v[e] = from_f<T>(to_f(b.v[e]) * to_f(n));
    }
    orow[i] = o;
  }
}

// Grid-stride over rows; dw accumulator [VEC][nvec] in dynamic shared memory (conflict-free:
// consecutive threads touch consecutive floats), written to dw_partial[blockIdx.x] at the end.
template <typename T, int VEC, bool kDw>
__global__ void __launch_bounds__(kMaxThreads)
    rms_norm_bwd_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ dy,
                        const float* __restrict__ rstd, T* __restrict__ dx, float* __restrict__ dw_partial,
                        int64_t rows, int64_t cols) {
  using V = Vec<T, VEC>;
  PRISM_DYNAMIC_SMEM(float, dw_acc);
  __shared__ float scratch[33];
  const int64_t nvec = cols / VEC;
  const float inv_cols = 1.f / static_cast<float>(cols);
  const V* wv = reinterpret_cast<const V*>(w);
  if constexpr (kDw) {
    for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x)
#pragma unroll
      for (int e = 0; e < VEC; ++e) dw_acc[e * nvec + i] = 0.f;
  }
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const V* xr = reinterpret_cast<const V*>(x + row * cols);
    const V* gr = reinterpret_cast<const V*>(dy + row * cols);
    V* dxr = reinterpret_cast<V*>(dx + row * cols);
    const float r = rstd[row];
    float dot = 0.f;
    for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
      const V a = xr[i];
      const V g = gr[i];
      const V b = wv[i];
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const float n32 = to_f(a.v[e]) * r;
        const float gy = to_f(g.v[e]);
        dot += gy * to_f(b.v[e]) * n32;
        if constexpr (kDw) dw_acc[e * nvec + i] += gy * to_f(from_f<T>(n32));
      }
    }
    const float mean = block_sum(dot, scratch) * inv_cols;
    for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
      const V a = xr[i];
      const V g = gr[i];
      const V b = wv[i];
      V o;
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const float n32 = to_f(a.v[e]) * r;
        const float gn = to_f(g.v[e]) * to_f(b.v[e]);
        o.v[e] = from_f<T>(r * (gn - n32 * mean));
      }
      dxr[i] = o;
    }
  }
  if constexpr (kDw) {
    float* part = dw_partial + static_cast<int64_t>(blockIdx.x) * cols;
    for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x)
#pragma unroll
      for (int e = 0; e < VEC; ++e) part[i * VEC + e] = dw_acc[e * nvec + i];
  }
}

// dw[c] = sum_p partial[p, c] in a fixed order: 8 strided part groups per column, then the 8
// group sums in order. Block (32, 8), one block per 32 columns.
template <typename T>
__global__ void rms_norm_dw_reduce_kernel(const float* __restrict__ partial, T* __restrict__ dw, int64_t parts,
                                          int64_t cols) {
  __shared__ float sums[8][33];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  float s = 0.f;
  if (c < cols)
    for (int64_t p = threadIdx.y; p < parts; p += 8) s += partial[p * cols + c];
  sums[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float t = 0.f;
#pragma unroll
    for (int k = 0; k < 8; ++k) t += sums[k][threadIdx.x];
    dw[c] = from_f<T>(t);
  }
}

// Threads per block from the row length only (about two 16-byte vectors per thread).
inline int threads_for(int64_t cols) {
  int64_t t = (cols / 8 + 31) / 32 * 32;
  if (t < 32) t = 32;
  if (t > kMaxThreads) t = kMaxThreads;
  return static_cast<int>(t);
}

PRISM_KERNEL_ABI_END
}  // namespace prism::kernels::rmsnorm
